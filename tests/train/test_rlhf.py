"""The RLHF half on tiny models built from configs: reward model (hard and soft labels), RLOO, reward ranking."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from synthforge.cli.main import main
from synthforge.train.config import RewardTrainingConfig, RLHFTrainingConfig
from synthforge.train.reward_model import calibration_error, soft_label_loss

GOOD = ["The quick brown fox jumps over the lazy dog.", "How can I help you today? I can explain ideas."]
BAD = ["0123456789 !?.,:;", "<>-_/\\|@#$%^&*+=~`"]


def write_pairs(path: Path, n: int = 40, confidence: bool = False) -> Path:
    """A separable preference set: chosen answers are prose, rejected ones are symbols."""
    rows = []
    for i in range(n):
        row = {
            "prompt": [{"role": "user", "content": f"Question number {i}?"}],
            "chosen": [{"role": "assistant", "content": GOOD[i % 2]}],
            "rejected": [{"role": "assistant", "content": BAD[i % 2]}],
        }
        if confidence:
            row["confidence"] = 0.6 + 0.3 * (i % 2)
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_soft_label_loss_equals_a_hand_computed_value():
    chosen, rejected = torch.tensor([1.0, 0.0, -0.5]), torch.tensor([0.0, 0.0, 0.5])
    target = torch.tensor([0.8, 0.5, 0.3])
    expected = 0.0
    for c, r, p in zip(chosen.tolist(), rejected.tolist(), target.tolist(), strict=True):
        sigma = 1 / (1 + math.exp(-(c - r)))
        expected += -(p * math.log(sigma) + (1 - p) * math.log(1 - sigma))
    assert soft_label_loss(chosen, rejected, target).item() == pytest.approx(expected / 3, rel=1e-6)
    hard = soft_label_loss(chosen, rejected, torch.ones(3))
    assert hard.item() == pytest.approx(-torch.nn.functional.logsigmoid(chosen - rejected).mean().item(), rel=1e-6)


def test_calibration_error():
    assert calibration_error([0.75, 0.75], [0.75, 0.75]) == 0.0
    assert calibration_error([0.95, 0.15], [0.55, 0.55]) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)


@pytest.fixture(scope="module")
def reward_dir(tiny_model_dir, tmp_path_factory) -> Path:
    from synthforge.train.reward import RewardTraining

    work = tmp_path_factory.mktemp("reward")
    config = RewardTrainingConfig(
        model=str(tiny_model_dir),
        data=str(write_pairs(work / "pairs.jsonl")),
        out=str(work / "rm"),
        epochs=4,
        learning_rate=3e-3,
        batch_size=8,
        eval_fraction=0.2,
        device="cpu",
        max_length=64,
    )
    result = RewardTraining(config).run()
    return result.out_dir


def test_reward_model_learns_a_separable_preference(reward_dir):
    saved = json.loads((reward_dir / "training.json").read_text())
    metrics = saved["metrics"]
    assert saved["kind"] == "reward" and metrics["labels"] == "hard"
    losses = [e["loss"] for e in saved["log_history"] if "loss" in e]
    assert losses[-1] < losses[0]
    assert metrics["eval_after"]["accuracy"] > 0.5 and metrics["eval_after"]["pairs"] == 8
    assert metrics["eval_after"]["mean_gap"] > metrics["eval_before"]["mean_gap"]
    assert (reward_dir / "loss.png").is_file()
    config = json.loads((reward_dir / "config.json").read_text())
    assert config["architectures"][0].endswith("ForSequenceClassification")


def test_soft_labels_are_the_default_for_judge_labelled_rows(tiny_model_dir, tmp_path):
    from synthforge.train.reward import RewardTraining

    config = RewardTrainingConfig(
        model=str(tiny_model_dir),
        data=str(write_pairs(tmp_path / "judged.jsonl", 16, confidence=True)),
        out=str(tmp_path / "rm"),
        max_steps=2,
        batch_size=4,
        eval_fraction=0.25,
        device="cpu",
        max_length=64,
    )
    metrics = RewardTraining(config).run().metrics
    assert metrics["labels"] == "soft"
    assert metrics["eval_after"]["ece_vs_judge"] is not None and metrics["train_steps"] == 2


def test_rloo_changes_the_policy_and_reports_reward_and_kl(tiny_model_dir, reward_dir, tmp_path):
    from safetensors.torch import load_file

    from synthforge.train.rlhf import RLHFTraining

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"Tell me about item {i}." for i in range(10)) + "\n")
    config = RLHFTrainingConfig(
        model=str(tiny_model_dir),
        reward=str(reward_dir),
        data=str(prompts),
        out=str(tmp_path / "policy"),
        max_steps=2,
        batch_size=4,
        num_generations=2,
        max_completion_length=6,
        learning_rate=1e-3,
        eval_fraction=0.2,
        device="cpu",
    )
    result = RLHFTraining(config).run()
    before, after = result.metrics["eval_before"], result.metrics["eval_after"]
    assert before["prompts"] == after["prompts"] == 2 and abs(before["mean_kl"]) < 1e-3
    logged = {key for entry in result.log_history for key in entry}
    assert {"reward", "kl"} <= logged
    old = load_file(tiny_model_dir / "model.safetensors")
    new = load_file(result.out_dir / "model.safetensors")
    assert any(not torch.equal(old[k], new[k]) for k in old if k in new)
    assert (result.out_dir / "training.json").is_file() and (result.out_dir / "loss.png").is_file()


def _cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("no pairs", "DPO data needs columns prompt, chosen, rejected"),
        ("not a reward model", "is not a sequence classifier with one output"),
        ("negative beta", "beta (the KL coefficient) must be >= 0"),
        ("soft without confidence", "--labels soft needs a 'confidence' column"),
    ],
)
def test_bad_input_is_one_line(tiny_model_dir, tmp_path, capsys, case, fragment):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 4)
    if case == "no pairs":
        sft = tmp_path / "sft.jsonl"
        sft.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n')
        args = ["train", "reward", "--data", sft, "--model", tiny_model_dir]
    elif case == "soft without confidence":
        args = ["train", "reward", "--data", pairs, "--model", tiny_model_dir, "--labels", "soft"]
    else:
        beta = ["--beta", "-1"] if case == "negative beta" else []
        args = ["train", "rlhf", "--prompts", pairs, "--model", tiny_model_dir, "--reward", tiny_model_dir, *beta]
    code, err = _cli(args, capsys)
    assert code == 2 and fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


class TestTrainingThatWouldDoNothing:
    def test_rlhf_on_fewer_prompts_than_a_step_takes_shrinks_its_batch_and_says_so(
        self, tiny_model_dir, reward_dir, tmp_path, capsys
    ):
        prompts = tmp_path / "prompts.txt"
        prompts.write_text("Tell me a story.\n")
        args = ["train", "rlhf", "--prompts", prompts, "--model", tiny_model_dir, "--reward", reward_dir]
        args += ["--out", tmp_path / "policy", "--batch-size", "8", "--num-generations", "4", "--device", "cpu"]
        args += ["--eval-fraction", "0", "--max-completion-length", "4", "--max-steps", "1"]
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        saved = json.loads((tmp_path / "policy" / "training.json").read_text())
        assert info.value.code == 0 and "after 1 steps" in out and "batch shrunk to 4 completions" in err
        assert saved["metrics"]["train_steps"] == 1 and "batch shrunk" in saved["metrics"]["warnings"][0]
        assert "no held-out evaluation: eval_fraction is 0" in err

    def test_rlhf_whose_batch_cant_hold_whole_prompt_groups_is_one_line(
        self, tiny_model_dir, reward_dir, tmp_path, capsys
    ):
        prompts = tmp_path / "prompts.txt"
        prompts.write_text("a\nb\nc\n")
        args = ["train", "rlhf", "--prompts", prompts, "--model", tiny_model_dir, "--reward", reward_dir]
        code, err = _cli([*args, "--out", tmp_path / "p", "--batch-size", "6", "--num-generations", "4"], capsys)
        assert code == 2 and "must be a multiple of --num-generations" in err and len(err.strip().splitlines()) == 1

    def test_a_reward_model_on_one_pair_says_it_evaluated_nothing(self, tiny_model_dir, tmp_path, capsys):
        pairs = write_pairs(tmp_path / "one.jsonl", 1)
        args = ["train", "reward", "--data", pairs, "--model", tiny_model_dir, "--out", tmp_path / "rm"]
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in [*args, "--max-steps", "1", "--device", "cpu"]])
        err = capsys.readouterr().err
        saved = json.loads((tmp_path / "rm" / "training.json").read_text())
        reason = "no held-out evaluation: only 1 row(s), too few to hold any out"
        assert info.value.code == 0 and reason in err and saved["metrics"]["no_evaluation"] == reason


def test_reward_rank_picks_best_and_worst_and_ledgers_small_gaps(project, reward_dir, tiny_model_dir):
    from synthforge.engine.runner import RunOptions, run_pipeline
    from synthforge.engine.spec import load_pipeline
    from synthforge.train.reward_model import load_reward_model, reward_scores

    seeds = project / "pipelines" / "seeds" / "pairs.jsonl"
    write_pairs(seeds, 6)
    rows = [json.loads(line) for line in seeds.read_text().splitlines()]
    seeds.write_text("".join(json.dumps({"prompt": r["prompt"][0]["content"]}) + "\n" for r in rows))
    path = project / "pipelines" / "rank.yaml"
    path.write_text(
        f"name: rank\nseed: 3\nteacher: {{model: {json.dumps(str(tiny_model_dir))}, batch_size: 4}}\n"
        "seeds: {path: seeds/pairs.jsonl}\nstages:\n"
        f"  - reward_rank: {{reward_model: {json.dumps(str(reward_dir))}, n: 3, min_gap: 0.0,"
        " sampling: {temperature: 1.0, max_new_tokens: 8}}\n",
        encoding="utf-8",
    )
    from synthforge.teachers.backends.transformers import load_teacher

    teacher = load_teacher(str(tiny_model_dir), batch_size=4, device="cpu")
    result = run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o"), teacher=teacher, log=lambda _: None)
    trace = [json.loads(x) for x in (result.out_dir / "trace.jsonl").read_text().splitlines()]
    dropped = [json.loads(x)["record"] for x in (result.out_dir / "dropped.jsonl").read_text().splitlines()]
    model, tokenizer, _, _ = load_reward_model(str(reward_dir))
    assert trace + dropped
    for record in trace + dropped:
        step = next(s for s in record["steps"] if s["role"] == "reward")
        samples = [s["text"] for s in record["steps"] if s["role"] == "sample"]
        rescored = reward_scores(
            model,
            tokenizer,
            [[{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": t}] for t in samples],
        )
        assert step["scores"] == pytest.approx(rescored, abs=1e-4)
        assert record["response"] == samples[max(range(3), key=lambda k: rescored[k])]
        assert record["rejected"] == samples[min(range(3), key=lambda k: rescored[k])]
    dpo = [json.loads(x) for x in (result.out_dir / "dpo.jsonl").read_text().splitlines()]
    assert dpo and all(row["margin"] >= 0 for row in dpo)
    gaps = sorted(r["meta"]["reward"]["margin"] for r in trace)
    assert len(gaps) >= 2 and gaps[0] < gaps[-1]
    # a min_gap between two observed gaps ledgers the smaller ones
    middle = (gaps[0] + gaps[-1]) / 2
    text = path.read_text().replace("min_gap: 0.0", f"min_gap: {middle}")
    path.write_text(text)
    again = run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o2"), teacher=teacher, log=lambda _: None)
    reasons = [json.loads(x)["reason"] for x in (again.out_dir / "dropped.jsonl").read_text().splitlines()]
    assert any(r.startswith(f"reward gap below min_gap {middle:g}") for r in reasons)
