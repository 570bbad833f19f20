"""Bundled trainers on a tiny random model: SFT and DPO from a run directory, LoRA, a tokenizer without a
chat template, answer-only loss, before/after evaluation, and bad inputs."""

from __future__ import annotations

import json

import pytest
import torch

from synthforge.cli.main import main
from synthforge.testing import build_tiny_model
from synthforge.train.config import DPOTrainingConfig, LoraSettings, SFTTrainingConfig
from synthforge.train.dpo import DPOTraining
from synthforge.train.evaluate import evaluate_preferences
from synthforge.train.sft import SFTTraining
from synthforge.train.student import END_OF_TURN, load_student

pytest.importorskip("peft")

GOOD = "I can help with that safely."
BAD = "quick brown fox jumps over"


def write_run(path, n: int = 24):
    """A run directory like `synthforge generate` writes: sft.jsonl and dpo.jsonl in TRL's formats."""
    path.mkdir(parents=True, exist_ok=True)
    sft, dpo = [], []
    for i in range(n):
        prompt = [{"role": "user", "content": f"Question {i}: how do I do thing {i % 5}?"}]
        sft.append({"id": str(i), "messages": [*prompt, {"role": "assistant", "content": GOOD}]})
        dpo.append(
            {
                "id": str(i),
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": GOOD}],
                "rejected": [{"role": "assistant", "content": BAD}],
                "confidence": 0.9,
            }
        )
    (path / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft), encoding="utf-8")
    (path / "dpo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dpo), encoding="utf-8")
    return path


def _common(model, data, out, **extra):
    return {
        "model": str(model),
        "data": str(data),
        "out": str(out),
        "max_steps": 6,
        "batch_size": 4,
        "learning_rate": 1e-3,
        **extra,
    }


def _generate(model_dir) -> str:
    student = load_student(str(model_dir), "cpu", for_training=False)
    prompt = student.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Question 1?"}], tokenize=False, add_generation_prompt=True
    )
    ids = student.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = student.model.generate(**ids, max_new_tokens=5, do_sample=False)
    return student.tokenizer.decode(out[0, ids["input_ids"].shape[1] :])


def _generate_plain(model_dir) -> str:
    """The same greedy answer through plain transformers (what a user loading the saved directory gets)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Question 1?"}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :])


def test_sft_then_dpo_from_a_run_directory_save_reload_generate(tiny_model_dir, tmp_path):
    run = write_run(tmp_path / "run")
    sft = SFTTraining(SFTTrainingConfig(**_common(tiny_model_dir, run, run / "student-sft"))).run()
    saved = json.loads((sft.out_dir / "training.json").read_text())
    assert saved["kind"] == "sft" and saved["config"]["max_steps"] == 6 and saved["metrics"]["train_steps"] == 6
    assert saved["metrics"]["train_rows"] == 22 and saved["metrics"]["eval_rows"] == 2
    assert saved["data"]["path"].endswith("sft.jsonl") and len(saved["data"]["sha256"]) == 64
    assert (sft.out_dir / "loss.png").stat().st_size > 1000
    assert _generate(sft.out_dir) == _generate_plain(sft.out_dir) != ""  # saved whole: plain transformers agrees

    dpo = DPOTraining(DPOTrainingConfig(**_common(sft.out_dir, run, run / "student-dpo", eval_fraction=0.25))).run()
    metrics = json.loads((dpo.out_dir / "training.json").read_text())["metrics"]
    before, after = metrics["eval_before"], metrics["eval_after"]
    assert before["pairs"] == after["pairs"] == 6
    assert after["mean_margin"] > before["mean_margin"] and after["accuracy"] >= before["accuracy"]
    assert after["accuracy"] == 1.0
    assert metrics["eval_after_vs_reference"]["relative_to_reference"] is True
    assert _generate(dpo.out_dir) == _generate_plain(dpo.out_dir) != ""


def test_sft_loss_covers_only_the_answer(tiny_model_dir, tmp_path):
    run = write_run(tmp_path / "run", n=4)
    setup = SFTTraining(SFTTrainingConfig(**_common(tiny_model_dir, run, tmp_path / "o"))).setup()
    row = setup.trainer.train_dataset[0]
    tokenizer = setup.student.tokenizer
    trained = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
    text = tokenizer.decode(trained)
    assert text.startswith(GOOD) and END_OF_TURN in text  # the answer and its end-of-turn token (the EOS)
    assert "Question" not in text and "user" not in text


def test_lora_sft_and_dpo_save_merged_models(tiny_model_dir, tmp_path):
    run = write_run(tmp_path / "run")
    lora = LoraSettings(enabled=True, r=4, alpha=8, target_modules=("q_proj", "v_proj"))
    config = SFTTrainingConfig(**_common(tiny_model_dir, run, tmp_path / "sft"), lora=lora)
    sft = SFTTraining(config).run()
    assert not (sft.out_dir / "adapter_config.json").exists()  # merged into the weights
    base = load_student(str(tiny_model_dir), "cpu").model.state_dict()
    tuned = load_student(str(sft.out_dir), "cpu").model.state_dict()
    changed = [k for k in base if "q_proj" in k and not torch.equal(base[k], tuned[k])]
    assert changed and all(torch.equal(base[k], tuned[k]) for k in base if "mlp" in k)
    dpo = DPOTraining(DPOTrainingConfig(**_common(sft.out_dir, run, tmp_path / "dpo"), lora=lora)).run()
    assert dpo.metrics["eval_after"]["pairs"] == 2 and "eval_after_vs_reference" not in dpo.metrics


def test_tokenizer_without_chat_template_gets_chatml_with_end_of_turn_as_eos(tmp_path):
    bare = build_tiny_model(tmp_path / "bare", chat_template=False)
    run = write_run(tmp_path / "run", n=6)
    result = SFTTraining(SFTTrainingConfig(**_common(bare, run, tmp_path / "out", max_steps=2))).run()
    saved = json.loads((result.out_dir / "training.json").read_text())
    assert saved["added_chat_template"] is True
    student = load_student(str(result.out_dir), "cpu")
    assert student.tokenizer.chat_template and student.tokenizer.eos_token == END_OF_TURN
    assert student.model.config.eos_token_id == student.tokenizer.convert_tokens_to_ids(END_OF_TURN)


def test_evaluate_relative_to_itself_is_zero(tiny_model_dir, tmp_path):
    run = write_run(tmp_path / "run", n=3)
    rows = [json.loads(x) for x in (run / "dpo.jsonl").read_text().splitlines()]
    student = load_student(str(tiny_model_dir), "cpu", for_training=False)
    report = evaluate_preferences(student.model, student.tokenizer, rows, reference=student.model)
    assert report.pairs == 3 and report.mean_margin == pytest.approx(0.0, abs=1e-6) and report.accuracy == 0.0


def test_cli_train_and_eval(tiny_model_dir, tmp_path, capsys):
    run = write_run(tmp_path / "run", n=8)
    config = tmp_path / "dpo.yaml"
    config.write_text(f"model: {tiny_model_dir}\nmax_steps: 2\nbatch_size: 4\nbeta: 0.2\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "dpo", "--data", str(run), "--config", str(config), "--lr", "1e-3", "--loss-type", "ipo"])
    assert exit_info.value.code == 0
    saved = json.loads((run / "student-dpo" / "training.json").read_text())
    assert saved["config"]["beta"] == 0.2 and saved["config"]["loss_type"] == "ipo"
    assert saved["config"]["learning_rate"] == 1e-3
    assert "held-out preference accuracy" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--model", str(run / "student-dpo"), "--data", str(run), "--reference", str(tiny_model_dir)])
    assert exit_info.value.code == 0
    assert "over 8 pairs (relative to the reference)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("empty", ["train", "sft"], "no rows to train on"),
        ("columns", ["train", "dpo"], "DPO data needs columns prompt, chosen, rejected; missing chosen, rejected"),
        ("columns", ["train", "sft"], "SFT data needs 'messages' (chat)"),
        ("ok", ["train", "sft", "--model", "/nowhere/model"], "model '/nowhere/model' not found"),
        ("none", ["train", "sft"], "not found (give a run directory"),
        ("ok", ["train", "dpo", "--beta", "-1"], "beta must be > 0"),
    ],
)
def test_bad_inputs_are_one_line_exit_2(tiny_model_dir, tmp_path, capsys, setup, args, message):
    data = tmp_path / "data"
    data.mkdir()
    if setup == "empty":
        (data / "sft.jsonl").write_text("", encoding="utf-8")
    elif setup == "columns":
        (data / "sft.jsonl").write_text('{"prompt": "x", "answer": "y"}\n', encoding="utf-8")
        (data / "dpo.jsonl").write_text('{"prompt": "x", "answer": "y"}\n', encoding="utf-8")
    elif setup == "ok":
        write_run(data, n=2)
    command = [*args, "--data", str(data)]
    if "--model" not in command:
        command += ["--model", str(tiny_model_dir)]
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (data / "student-sft").exists() and not (data / "student-dpo").exists()


def test_sft_from_a_saved_datasets_directory(tiny_model_dir, tmp_path):
    import datasets

    run = write_run(tmp_path / "run", n=4)
    rows = [json.loads(x) for x in (run / "sft.jsonl").read_text().splitlines()]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "saved"))
    result = SFTTraining(
        SFTTrainingConfig(**_common(tiny_model_dir, tmp_path / "saved", tmp_path / "o", max_steps=1))
    ).run()
    saved = json.loads((result.out_dir / "training.json").read_text())
    assert saved["metrics"]["train_rows"] + saved["metrics"]["eval_rows"] == 4
    assert saved["data"]["path"].endswith("saved") and saved["data"]["sha256"] is None
