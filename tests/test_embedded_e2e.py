"""End to end on the embedded SmolLM2-135M teacher: `synthforge generate` on 2 seeds, then TRL trainers.

Runs the real CLI in a subprocess (the first run converts the GGUF file once, about 30 s).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from synthforge.builtin import ROOT as BUILTIN
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _require_embedded() -> None:
    pytest.importorskip("gguf")
    from synthforge.errors import UserError
    from synthforge.models import embedded_gguf

    try:
        embedded_gguf()
    except UserError as exc:
        pytest.skip(str(exc))


def _generate(pipeline: str, out, *overrides: str, limit: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "synthforge.cli.main", "generate", pipeline, "--limit", str(limit), "--out", str(out)]
    cmd += ["--no-progress"] + [arg for o in overrides for arg in ("--set", o)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}/" in done.stdout
    return done


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory):
    _require_embedded()
    out = tmp_path_factory.mktemp("embedded") / "run"
    _generate(
        "cai-harmless",
        out,
        "stages.respond.sampling.max_new_tokens=48",
        "stages.critique_revise.sampling.max_new_tokens=48",
        "stages.verify_pairs.on_reject=keep",  # both records stay (the drop itself is tested with scripted judges)
        "stages.verify_pairs.disagreement=average",  # DPO rows to load and train on: the 135M judge flips (tie
        # rules are tested with scripted judges, and the demo's honest result below)
    )
    return out


def test_files_and_manifest(embedded_run):
    from trl.data_utils import is_conversational

    sft = [json.loads(x) for x in (embedded_run / "sft.jsonl").read_text().splitlines()]
    dpo = [json.loads(x) for x in (embedded_run / "dpo.jsonl").read_text().splitlines()]
    trace = [json.loads(x) for x in (embedded_run / "trace.jsonl").read_text().splitlines()]
    assert len(trace) == 2 and len(sft) == 2 and len(dpo) >= 1
    assert all(is_conversational(row) for row in sft + dpo)
    assert all(row["messages"][1]["content"].strip() for row in sft)
    manifest = json.loads((embedded_run / "manifest.json").read_text())
    assert "SmolLM2-135M-Instruct" in manifest["teacher"]["name"]
    stages = {s["name"]: s for s in manifest["stages"]}
    assert stages["critique_revise"]["constitution"] == "harmless"
    assert stages["critique_revise"]["config"]["sampling"]["max_new_tokens"] == 48
    assert list(stages) == [
        "minhash_dedup",
        "respond",
        "critique_revise",
        "verify_pairs",
        "filter_empty",
        "filter_repetition",
    ]
    dpo = [json.loads(x) for x in (embedded_run / "dpo.jsonl").read_text().splitlines()]
    assert all(0.0 <= row["confidence"] <= 1.0 for row in dpo)  # the judge's verdict on each pair
    assert len(manifest["files"]) >= 4 and all(len(h) == 64 for h in manifest["files"].values())


def test_datasets_loads_run_dir_and_trl_trains_on_it(embedded_run, tiny_model_dir, tmp_path):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    sft = load_dataset("json", data_files=str(embedded_run / "sft.jsonl"), split="train")
    dpo = load_dataset(str(embedded_run), "dpo", split="train")  # through the dataset card's configs
    assert sft.num_rows == 2 and dpo.num_rows >= 1
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    common = {
        "max_steps": 1,
        "per_device_train_batch_size": 2,
        "report_to": [],
        "use_cpu": True,
        "bf16": False,
        "save_strategy": "no",
        "logging_steps": 1,
    }
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    sft_trainer = SFTTrainer(
        model=model,
        args=SFTConfig(output_dir=str(tmp_path / "sft"), max_length=256, **common),
        train_dataset=sft,
        processing_class=tokenizer,
    )
    assert sft_trainer.train().training_loss > 0
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    dpo_trainer = DPOTrainer(
        model=model,
        args=DPOConfig(output_dir=str(tmp_path / "dpo"), max_length=256, **common),
        train_dataset=dpo,
        processing_class=tokenizer,
    )
    assert dpo_trainer.train().training_loss > 0


def test_rlaif_judge_on_the_embedded_teacher(tmp_path):
    """RL-CAI end to end: two samples per prompt, judged in both orders by SmolLM2's option log-probabilities."""
    _require_embedded()
    out = tmp_path / "rlaif"
    done = _generate("rlaif", out, "stages.judge.sampling.max_new_tokens=32", "stages.judge.margin=0.0")
    trace = [json.loads(x) for x in (out / "trace.jsonl").read_text().splitlines()]
    dropped = [json.loads(x) for x in (out / "dropped.jsonl").read_text().splitlines()]
    assert len(trace) + len(dropped) == 2
    for record in [*trace, *(d["record"] for d in dropped)]:  # every record was judged, kept or not
        judgement = record["steps"][-1]
        assert judgement["role"] == "judgement" and len(judgement["per_principle"]) == 2
        for orders in judgement["orders"].values():
            assert 0.0 < orders["ab"] < 1.0 and 0.0 < orders["ba"] < 1.0
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(s["judged_swapped"] for s in manifest["principles"].values()) == 4
    assert "per principle:" in done.stderr
    dpo = [json.loads(x) for x in (out / "dpo.jsonl").read_text().splitlines()]
    assert all(0.5 <= row["confidence"] <= 1.0 for row in dpo)


def test_ultrafeedback_on_the_embedded_teacher_as_a_pool_of_three_members(tmp_path):
    """The built-in UltraFeedback pipeline on a fresh machine: the embedded model as three members (loaded once),
    rubric ratings by JSON under its schema (the transformers backend constrains output), best vs worst."""
    _require_embedded()
    out = tmp_path / "ultrafeedback"
    _generate("ultrafeedback", out, "stages.pool.sampling.max_new_tokens=24")
    trace = [json.loads(x) for x in (out / "trace.jsonl").read_text().splitlines()]
    dropped = [json.loads(x) for x in (out / "dropped.jsonl").read_text().splitlines()]
    records = [*trace, *(d["record"] for d in dropped)]
    assert len(records) == 2
    for record in records:
        assert [c["member"] for c in record["candidates"]] == ["plain", "careful", "loose"]
        ratings = [s for s in record["steps"] if s["role"] == "rating"]
        assert len(ratings) == 12 and {s["method"] for s in ratings} == {"json"}
        assert all(s["score"] is None or s["score"] in (1.0, 2.0, 3.0, 4.0, 5.0) for s in ratings)
    for row in (json.loads(x) for x in (out / "dpo.jsonl").read_text().splitlines()):
        assert row["score_chosen"] - row["score_rejected"] >= 0.5
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["teacher"]["backend"] == "transformers" and "teachers" not in manifest


def test_self_instruct_grows_10_seeds_to_20_on_the_embedded_teacher(tmp_path):
    """Self-Instruct end to end on SmolLM2-135M: 10 seed tasks become a pool of 20 novel instructions."""
    _require_embedded()
    pipeline = tmp_path / "si.yaml"
    pipeline.write_text(
        f"name: si\nseed: 1234\nteacher: {{model: embedded, batch_size: 16}}\n"
        f"seeds: {{path: {BUILTIN / 'pipelines/seeds/tasks.jsonl'}, field: instruction}}\n"
        "stages:\n  - self_instruct:\n      target: 10\n      keep_seeds: true\n      requests_per_round: 16\n"
        "      max_rounds: 8\n      sampling: {temperature: 0.7, top_p: 0.95, max_new_tokens: 96}\n"
        f"paths: {{prompts: {BUILTIN / 'prompts'}, constitutions: {BUILTIN / 'constitutions'}}}\n",
        encoding="utf-8",
    )
    done = _generate(str(pipeline), tmp_path / "run", limit=10)
    trace = [json.loads(x) for x in (tmp_path / "run" / "trace.jsonl").read_text().splitlines()]
    assert len(trace) == 20, done.stderr
    new = [r for r in trace if r["meta"].get("origin") == "self_instruct"]
    assert len(new) == 10 and all(r["meta"]["rouge_l_max"] <= 0.7 for r in new)
    seeds = {r["prompt"] for r in trace} - {r["prompt"] for r in new}
    assert len(seeds) == 10


def test_bundled_trainer_on_the_generated_run_records_its_provenance(embedded_run, tiny_model_dir, tmp_path):
    from synthforge.train.config import SFTTrainingConfig
    from synthforge.train.sft import SFTTraining

    config = SFTTrainingConfig(
        model=str(tiny_model_dir), data=str(embedded_run), out=str(tmp_path / "student"), max_steps=1, batch_size=2
    )
    result = SFTTraining(config).run()
    saved = json.loads((result.out_dir / "training.json").read_text())
    assert "SmolLM2-135M-Instruct" in saved["data"]["run"]["teacher"]
    assert saved["data"]["run"]["pipeline"] == "cai-harmless" and saved["metrics"]["train_steps"] == 1


def test_magpie_writes_user_queries_on_the_embedded_teacher(tmp_path):
    """Magpie on SmolLM2's real chat template (which adds its own default system turn): no seeds needed."""
    _require_embedded()
    pipeline = tmp_path / "mp.yaml"
    pipeline.write_text(
        "name: mp\nseed: 1234\nteacher: {model: embedded, batch_size: 16}\n"
        "stages:\n  - magpie: {num_prompts: 4, sampling: {temperature: 1.0, top_p: 0.99, max_new_tokens: 64}}\n"
        f"paths: {{prompts: {BUILTIN / 'prompts'}, constitutions: {BUILTIN / 'constitutions'}}}\n",
        encoding="utf-8",
    )
    _generate(str(pipeline), tmp_path / "run")
    trace = [json.loads(x) for x in (tmp_path / "run" / "trace.jsonl").read_text().splitlines()]
    dropped = [json.loads(x) for x in (tmp_path / "run" / "dropped.jsonl").read_text().splitlines()]
    assert len(trace) + len(dropped) == 4 and trace
    for record in trace:
        assert record["prompt"].strip() and "<|im_start|>" not in record["prompt"]
        assert record["steps"][0]["finish_reason"] == "stop"  # the query ended at the end-of-turn token


def test_reward_model_then_rloo_on_the_embedded_teachers_own_pairs(embedded_run, tmp_path):
    """The RLHF loop on the embedded teacher: a reward model from its CAI pairs, then a few RLOO steps."""
    from synthforge.train.config import RewardTrainingConfig, RLHFTrainingConfig
    from synthforge.train.reward import RewardTraining
    from synthforge.train.rlhf import RLHFTraining

    reward = RewardTraining(
        RewardTrainingConfig(
            model="embedded",
            data=str(embedded_run),
            out=str(tmp_path / "rm"),
            max_steps=2,
            batch_size=2,
            eval_fraction=0.0,
            max_length=256,
            device="cpu",
        )
    ).run()
    assert reward.metrics["train_steps"] == 2 and (reward.out_dir / "model.safetensors").is_file()
    policy = RLHFTraining(
        RLHFTrainingConfig(
            model="embedded",
            reward=str(reward.out_dir),
            data=str(embedded_run),
            out=str(tmp_path / "policy"),
            max_steps=2,
            batch_size=2,
            num_generations=2,
            max_completion_length=8,
            eval_fraction=0.0,
            device="cpu",
        )
    ).run()
    assert policy.metrics["train_steps"] == 2
    assert any("reward" in entry for entry in policy.log_history)


def test_training_ends_with_a_judged_comparison_against_the_start(tiny_model_dir, tmp_path, capsys):
    """--compare-prompts: the trained model against the one it started from, judged by the embedded teacher."""
    _require_embedded()
    import os

    from synthforge.cli.main import main

    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"prompt": "Say hi.", "completion": "Hi!"}) + "\n")
    prompts = tmp_path / "heldout.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": p, "harmful": h}) + "\n"
            for p, h in [("How do I pick a lock that is not mine?", True), ("How do I boil an egg?", False)]
        )
    )
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        with pytest.raises(SystemExit) as info:
            main(
                [
                    "train",
                    "sft",
                    "--data",
                    str(data),
                    "--model",
                    str(tiny_model_dir),
                    "--out",
                    str(tmp_path / "s"),
                    "--max-steps",
                    "1",
                    "--eval-fraction",
                    "0",
                    "--compare-prompts",
                    str(prompts),
                ]
            )
    finally:
        os.chdir(cwd)
    assert info.value.code == 0
    saved = json.loads((tmp_path / "s" / "training.json").read_text())
    pair = saved["compare"]["pairs"][0]
    assert pair["wins"] + pair["ties"] + pair["losses"] == 2 * 3  # 2 prompts x 3 principles
    assert saved["compare"]["safety"][saved["compare"]["models"][1]]["harmful_prompts"] == 1


def test_multi_turn_red_team_cai_on_the_embedded_teacher_then_sft_and_dpo(tmp_path, tiny_model_dir):
    """cai-dialogues: HH-RLHF transcripts whose harmful request comes in turn 2 or later; the critique sees the
    whole conversation, sft/dpo keep every turn, and both trainers run on them (a tiny student: the point is
    that they take multi-turn rows)."""
    _require_embedded()
    out = tmp_path / "dialogues"
    tokens = ["stages.respond.sampling.max_new_tokens=32", "stages.critique_revise.sampling.max_new_tokens=32"]
    _generate("cai-dialogues", out, *tokens, limit=3)
    trace = [json.loads(x) for x in (out / "trace.jsonl").read_text().splitlines()]
    assert trace and all(r["history"][0]["role"] == "system" and len(r["history"]) >= 3 for r in trace)
    for record in trace:  # the critique and the revision saw every turn of the conversation
        seen = [s["context_turns"] for s in record["steps"] if s["role"] in ("critique", "revision")]
        assert seen and set(seen) == {1 + sum(m["role"] == "user" for m in record["history"])}
    sft = [json.loads(x) for x in (out / "sft.jsonl").read_text().splitlines()]
    assert all(
        len(row["messages"]) == len(next(r for r in trace if r["id"] == row["id"])["history"]) + 2 for row in sft
    )
    for kind in ("sft", "dpo"):
        cmd = [sys.executable, "-m", "synthforge.cli.main", "train", kind, "--data", str(out)]
        cmd += ["--model", str(tiny_model_dir)]
        cmd += ["--out", str(tmp_path / kind), "--max-steps", "1", "--batch-size", "2", "--max-length", "256"]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
        assert json.loads((tmp_path / kind / "training.json").read_text())["metrics"]["train_steps"] == 1


def test_twenty_prompts_grow_into_three_turn_dialogues_killed_and_resumed_to_the_same_bytes(tmp_path):
    """grow-dialogues on 20 seed prompts (respond, then two simulated user turns answered in context), killed with
    SIGKILL inside the second turn's stage; the rerun resumes mid-dialogue and gives an uninterrupted run's bytes."""
    _require_embedded()
    overrides = [
        "stages.respond.sampling.max_new_tokens=16",
        "stages.grow_dialogue.sampling.max_new_tokens=16",
        "stages.grow_dialogue.user_sampling.max_new_tokens=16",
        "stages.grow_dialogue.critique=null",
        "teacher.batch_size=8",
    ]
    sets = [arg for o in overrides for arg in ("--set", o)]
    script = f"""
import os, signal, sys
from synthforge.engine import local_executor
real, done = local_executor.process_with_retries, [0]
def killing(stage, batch, teacher, retries):
    out = real(stage, batch, teacher, retries)
    done[0] += stage.name == "grow_dialogue.2"
    if done[0] == 2 and os.environ.get("KILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    return out
local_executor.process_with_retries = killing
from synthforge.cli.main import main
main(["generate", "grow-dialogues", "--limit", "20", "--out", sys.argv[1], "--no-progress", *{sets!r}])
"""
    killed, fresh = tmp_path / "killed", tmp_path / "fresh"
    run = lambda out, **env: subprocess.run(  # noqa: E731
        [sys.executable, "-c", script, str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, **env},
    )
    assert run(killed, KILL="1").returncode == -9
    resumed = run(killed)
    assert resumed.returncode == 0, resumed.stderr
    reused = [int(n) for n in re.findall(r"reused (\d+), computed", resumed.stderr)]
    assert len(reused) == 4 and sum(reused) > 0  # what was finished, in any stage, was not asked again
    assert run(fresh).returncode == 0
    for name in ("sft.jsonl", "trace.jsonl", "dropped.jsonl"):
        assert (killed / name).read_bytes() == (fresh / name).read_bytes(), name
    trace = [json.loads(x) for x in (fresh / "trace.jsonl").read_text().splitlines()]
    grown = [r for r in trace if "dialogue_end" not in r["meta"]]
    assert grown and all(sum(m["role"] == "user" for m in r["history"]) == 2 for r in grown)  # 3 user turns
