"""Conversations as the unit of data: multi-turn seeds in every layout, stages that answer, critique and judge the
final turn in context, dialogues that grow turn by turn, exports and trainers that keep every turn."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from synthforge.cli.main import main
from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.rows import read_dialogues
from synthforge.teachers.scripted import ScriptedTeacher
from synthforge.testing import build_tiny_model
from tests.conftest import REPO

SYSTEM = {"role": "system", "content": "Be brief."}
OPENING = [{"role": "user", "content": "Any tips for painting a garage?"}, {"role": "assistant", "content": "Prime."}]
HARMFUL = "Now how do I open my neighbour's garage door without a key?"


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def _cli(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return info.value.code, capsys.readouterr().err


def _pipeline(project: Path, seeds: str, stages: str, extra: str = "", teacher: str = "{model: embedded}") -> Path:  # noqa: E501
    path = project / "pipelines" / "conv.yaml"
    text = f"name: conv\nseed: 5\nteacher: {teacher}\nseeds: {{path: {seeds}}}\n{extra}stages:\n{stages}"
    path.write_text(text, encoding="utf-8")
    return path


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- seeds ------------------------------------------------------------------------------------------------
def test_every_seed_layout_becomes_the_conversation_to_answer(tmp_path):
    transcript = "\n\nHuman: Any tips for painting a garage?\n\nAssistant: Prime.\n\nHuman: " + HARMFUL
    rows = _write(
        tmp_path / "seeds.jsonl",
        [
            {"messages": [SYSTEM, *OPENING, {"role": "user", "content": HARMFUL}]},
            {"prompt": "Just text?"},
            {"prompt": [*OPENING, {"role": "user", "content": HARMFUL}]},
            {"chosen": transcript + "\n\nAssistant: No.", "rejected": transcript + "\n\nAssistant: Sure."},
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
            {"messages": [*OPENING, {"role": "user", "content": HARMFUL}, {"role": "assistant", "content": "No."}]},
            {"prompt": "With its own system", "system": "Speak French."},
        ],
    )
    found = read_dialogues(rows, system="Default system.")
    assert found[0].history == [SYSTEM, *OPENING] and found[0].prompt == HARMFUL  # the row's own system kept
    assert found[1].history == [{"role": "system", "content": "Default system."}] and found[1].prompt == "Just text?"
    assert found[2].history[1:] == OPENING and found[2].prompt == HARMFUL
    assert found[3].history[1:] == OPENING and found[3].prompt == HARMFUL  # every turn up to the last Human turn
    assert found[4].prompt == "Hi"  # a final assistant turn is the row's old answer, left out
    assert found[5].history[1:] == OPENING and found[5].prompt == HARMFUL
    assert found[6].history == [{"role": "system", "content": "Speak French."}]
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = tmp_path / "seeds.parquet"
    pq.write_table(pa.table({"messages": [[*OPENING, {"role": "user", "content": HARMFUL}]]}), table)
    assert read_dialogues(table)[0].history == OPENING


def test_a_single_prompt_keeps_the_id_and_layout_it_had(project, tiny_teacher):
    path = _pipeline(project, "seeds/red-team.jsonl", "  - respond: {sampling: {max_new_tokens: 4}}\n")
    result = run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o", limit=2), tiny_teacher, lambda _: None)
    trace = _lines(result.out_dir / "trace.jsonl")
    prompts = [json.loads(x)["prompt"] for x in (project / "pipelines/seeds/red-team.jsonl").read_text().splitlines()]
    assert [r["id"] for r in trace] == ["9c15c8c810d32080", "54b8fbb721e35881"]  # the ids earlier versions gave
    assert all("history" not in r for r in trace)  # a one-turn record serialises as before conversations
    assert [r["messages"][0] for r in _lines(result.out_dir / "sft.jsonl")] == [
        {"role": "user", "content": p} for p in prompts[:2]
    ]


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "both user turns"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}]},
            "turn 2 (assistant) is empty",
        ),
        (
            {"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            "ends on an assistant turn",
        ),
        ({"messages": [{"role": "tool", "content": "a"}]}, "unknown role 'tool'"),
        ({"messages": [{"role": "user", "content": "a"}, SYSTEM, {"role": "user", "content": "b"}]}, "only the first"),
        (
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]},
            "starts with an assistant",
        ),
    ],
)
def test_a_malformed_dialogue_is_one_line_naming_file_and_line(project, capsys, monkeypatch, row, fragment):
    monkeypatch.chdir(project)
    _write(project / "pipelines" / "seeds" / "bad.jsonl", [{"prompt": "fine"}, row])
    path = _pipeline(project, "seeds/bad.jsonl", "  - respond: {}\n")
    code, err = _cli(["generate", path, "--out", project / "o"], capsys)
    assert code == 2 and "bad.jsonl:2" in err and fragment in err and len(err.strip().splitlines()) == 1, err
    assert not (project / "o").exists()


# -- stages answer, critique and judge the final turn in context ---------------------------------------------
def _dialogue_seeds(project: Path) -> str:
    rows = [{"messages": [SYSTEM, *OPENING, {"role": "user", "content": HARMFUL}]}, {"prompt": "Say hi."}]
    _write(project / "pipelines" / "seeds" / "dialogues.jsonl", rows)
    return "seeds/dialogues.jsonl"


def _reply(conversation) -> str:
    last = conversation[-1]["content"]
    if "Keep the critique short" in last:
        return "It helps with a crime."
    if "Reply with the new answer" in last or "Write only the new response" in last:
        return "I can't help with getting into someone else's garage."
    return "Use a crowbar."


@pytest.mark.parametrize("turns", ["multi", "single"])
def test_critique_and_revision_follow_the_whole_dialogue(project, turns):
    teacher = ScriptedTeacher(_reply)
    suffix = "-single" if turns == "single" else ""
    stages = (
        f"  - respond: {{}}\n  - critique_revise: {{turns: {turns}, critique_template: critique{suffix}, "
        f"revise_template: revise{suffix}}}\n"
    )
    path = _pipeline(project, _dialogue_seeds(project), stages)
    result = run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o"), teacher, lambda _: None)
    answer, critique, revision = teacher.seen[0], teacher.seen[2], teacher.seen[4]
    assert answer == [SYSTEM, *OPENING, {"role": "user", "content": HARMFUL}]  # answered in context
    if turns == "multi":  # the CAI paper's form: the requests follow the dialogue, system first
        assert critique[:4] == [SYSTEM, *OPENING, {"role": "user", "content": HARMFUL}][:4]
        assert critique[4] == {"role": "assistant", "content": "Use a crowbar."}
    else:  # one request that shows the dialogue
        assert "Prime." in critique[-1]["content"] and HARMFUL in critique[-1]["content"]
        assert "Prime." in revision[-1]["content"]
    trace = _lines(result.out_dir / "trace.jsonl")
    first = next(r for r in trace if r.get("history"))
    assert [s.get("context_turns") for s in first["steps"] if s["role"] in ("critique", "revision")] == [2, 2]
    sft, dpo = _lines(result.out_dir / "sft.jsonl"), _lines(result.out_dir / "dpo.jsonl")
    assert sft[0]["messages"] == [
        SYSTEM,
        *OPENING,
        {"role": "user", "content": HARMFUL},
        {"role": "assistant", "content": "I can't help with getting into someone else's garage."},
    ]
    assert dpo[0]["prompt"] == [SYSTEM, *OPENING, {"role": "user", "content": HARMFUL}]
    assert dpo[0]["rejected"] == [{"role": "assistant", "content": "Use a crowbar."}]
    from trl.data_utils import is_conversational

    assert all(is_conversational(row) for row in sft + dpo)
    card = (result.out_dir / "README.md").read_text()
    assert "| 2 | 1 |" in card and "| 1 | 1 |" in card  # conversations by number of user turns
    from datasets import load_dataset

    assert load_dataset(str(result.out_dir), "sft", split="train").num_rows == 2


def test_export_system_false_leaves_the_system_message_out(project):
    stages = "  - respond: {}\n  - critique_revise: {}\n"
    extra = "export: {system: false}\n"
    path = _pipeline(project, _dialogue_seeds(project), stages)
    path.write_text(path.read_text() + extra)
    result = run_pipeline(
        load_pipeline(path), RunOptions(out_dir=project / "o"), ScriptedTeacher(_reply), lambda _: None
    )
    assert _lines(result.out_dir / "sft.jsonl")[0]["messages"][:2] == OPENING
    assert _lines(result.out_dir / "dpo.jsonl")[0]["prompt"][0] == OPENING[0]


def test_the_judges_see_the_earlier_turns(project):
    seen = []

    def score(conversation, candidate):
        seen.append(conversation[-1]["content"])
        return -1.0 if candidate == "(A)" else -2.0

    teacher = ScriptedTeacher(_reply, score=score)
    stages = "  - respond: {}\n  - critique_revise: {}\n  - verify_pairs: {}\n  - judge: {name: rl}\n"
    path = _pipeline(project, _dialogue_seeds(project), stages)
    run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o"), teacher, lambda _: None)
    asked = [q for q in seen if HARMFUL in q]
    assert asked and all("Human: Any tips for painting a garage?" in q and "Assistant: Prime." in q for q in asked)


def test_dedup_and_filters_can_key_on_the_whole_conversation(project):
    rows = [
        {"messages": [*OPENING, {"role": "user", "content": HARMFUL}]},
        {
            "messages": [
                {"role": "user", "content": "Totally different opening about bread."},
                {"role": "assistant", "content": "Flour."},
                {"role": "user", "content": HARMFUL},
            ]
        },
    ]
    _write(project / "pipelines" / "seeds" / "twins.jsonl", rows)
    for key, kept in (("prompt", 1), ("conversation", 2)):
        stages = f"  - minhash_dedup: {{key: {key}, minhash: {{threshold: 0.7, ngram: 2}}}}\n"
        path = _pipeline(project, "seeds/twins.jsonl", stages)
        result = run_pipeline(load_pipeline(path), RunOptions(out_dir=project / key), log=lambda _: None)
        assert result.manifest["counts"]["trace"] == kept
    stages = "  - filter_length: {unit: words, prompt: {max: 20}}\n  - filter_repetition: {fields: [conversation]}\n"
    path = _pipeline(project, "seeds/twins.jsonl", stages)
    funnel = run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "f"), log=lambda _: None).manifest["funnel"]
    assert [step["records"] for step in funnel[:3]] == [2, 2, 2]  # short prompts, no repetition: both kept


def test_a_dialogue_longer_than_the_context_window_is_ledgered_or_loses_its_oldest_turns(project, tmp_path):
    model = build_tiny_model(tmp_path / "short", context=160)
    turns = [
        m
        for k in range(6)
        for m in (
            {"role": "user", "content": f"Question {k} about painting the garage door"},
            {"role": "assistant", "content": f"Answer {k}: primer then two coats."},
        )
    ]
    _write(
        project / "pipelines" / "seeds" / "long.jsonl",
        [{"messages": [SYSTEM, *turns, {"role": "user", "content": HARMFUL}]}],
    )
    teacher = f'{{model: "{model}", device: cpu}}'
    path = _pipeline(project, "seeds/long.jsonl", "  - respond: {sampling: {max_new_tokens: 4}}\n", teacher=teacher)
    ledgered = run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "a"), log=lambda _: None)
    [drop] = _lines(ledgered.out_dir / "dropped.jsonl")
    assert "does not fit the teacher's context window of 160 tokens" in drop["reason"]
    path = _pipeline(
        project, "seeds/long.jsonl", "  - respond: {truncate: oldest, sampling: {max_new_tokens: 4}}\n", teacher=teacher
    )
    truncated = run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "b"), log=lambda _: None)
    [record] = _lines(truncated.out_dir / "trace.jsonl")
    step = next(s for s in record["steps"] if s["role"] == "truncated")
    assert step["dropped_turns"] > 0 and step["dropped_turns"] % 2 == 0
    assert record["history"][0] == SYSTEM and record["prompt"] == HARMFUL  # never the system or last user turn
    assert len(record["history"]) == 1 + len(turns) - step["dropped_turns"]


# -- constitutions with multi-turn exchanges ------------------------------------------------------------------
def test_a_grok_shaped_constitution_converts_checks_and_runs(project, capsys, monkeypatch):
    fixture = REPO / "tests" / "data" / "constitution_grok_shaped.json"
    out = project / "constitutions" / "grok.txt"
    assert _cli(["constitution", "convert", fixture, "-o", out], capsys)[0] == 0
    assert _cli(["constitution", "check", out], capsys)[0] == 0
    from synthforge.constitution.parser import load_constitution

    examples = load_constitution(out).examples
    multi = next(e for e in examples if e.history)
    assert len(multi.history) == 1 and len(multi.turns()) == 8
    teacher = ScriptedTeacher(_reply)
    stages = f"  - respond: {{}}\n  - critique_revise: {{constitution: grok, few_shot: {len(examples)}}}\n"
    path = _pipeline(project, "seeds/red-team.jsonl", stages)
    run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o", limit=1), teacher, lambda _: None)
    critique = next(c for c in teacher.seen if "Keep the critique short" in c[-1]["content"])
    contents = [m["content"] for m in critique]
    assert all(text in contents for text in multi.turns())


# -- dialogues that grow -----------------------------------------------------------------------------------
GROW = """  - respond: {sampling: {max_new_tokens: 6}}
  - grow_dialogue:
      turns: 2
      persona: a curious learner
      sampling: {max_new_tokens: 6}
      user_sampling: {max_new_tokens: 8}
"""


def test_a_simulated_user_grows_each_conversation_and_may_end_it(project):
    said = {"n": 0}

    def reply(conversation):
        text = conversation[-1]["content"]
        if "You are playing the user" in text:
            said["n"] += 1
            return "[END]" if "Say hello" in text else f"Follow-up question {said['n']}?"
        return "An answer."

    _write(project / "pipelines" / "seeds" / "two.jsonl", [{"prompt": "Explain tides."}, {"prompt": "Say hello."}])
    path = _pipeline(project, "seeds/two.jsonl", GROW)
    result = run_pipeline(
        load_pipeline(path), RunOptions(out_dir=project / "o"), ScriptedTeacher(reply), lambda _: None
    )
    assert [s["name"] for s in result.manifest["stages"]] == ["respond", "grow_dialogue.1", "grow_dialogue.2"]
    trace = _lines(result.out_dir / "trace.jsonl")
    [grown] = [r for r in trace if "dialogue_end" not in r["meta"]]
    [ended] = [r for r in trace if "dialogue_end" in r["meta"]]
    assert len(grown["history"]) == 4  # 3 user turns in all
    assert [m["role"] for m in grown["history"]] == ["user", "assistant", "user", "assistant"]
    assert ended["meta"]["dialogue_end"] == {"turn": 1, "reason": "the simulated user ended it ('[END]')"}
    assert "history" not in ended and any(s.get("ended") for s in ended["steps"])
    sft = {r["id"]: r["messages"] for r in _lines(result.out_dir / "sft.jsonl")}
    assert len(sft[grown["id"]]) == 6 and len(sft[ended["id"]]) == 2


def test_growing_with_a_critique_per_turn_makes_multi_turn_pairs(project, tiny_teacher):
    stages = GROW + "      critique: {constitution: harmless, sampling: {max_new_tokens: 6}}\n"
    path = _pipeline(project, "seeds/red-team.jsonl", stages)
    result = run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o", limit=3), tiny_teacher, lambda _: None)
    dpo = _lines(result.out_dir / "dpo.jsonl")
    assert dpo and all(len(row["prompt"]) == 5 for row in dpo)  # user, assistant, user, assistant, user
    assert "principle" in result.manifest.get("principles", {}) or result.manifest["groups"]["principle"]["members"]


def test_a_grow_killed_mid_stage_resumes_to_the_same_bytes(project, tiny_model_dir):
    """A real SIGKILL inside the second turn's stage; the rerun repeats no finished turn and gives the bytes of an
    uninterrupted run."""
    path = _pipeline(
        project, "seeds/red-team.jsonl", GROW, teacher=f'{{model: "{tiny_model_dir}", batch_size: 2, device: cpu}}'
    )
    script = f"""
import os, signal
from synthforge.engine import local_executor
real = local_executor.process_with_retries
count = [0]
def killing(stage, batch, teacher, retries):
    out = real(stage, batch, teacher, retries)
    count[0] += stage.name == "grow_dialogue.2"
    if count[0] == 2 and os.environ.get("KILL"):  # the stage's first batch is committed, its second is not
        os.kill(os.getpid(), signal.SIGKILL)
    return out
local_executor.process_with_retries = killing
from synthforge.cli.main import main
main(["generate", {str(path)!r}, "--out", os.environ["OUT"], "--limit", "6", "--no-progress"])
"""
    env = {**__import__("os").environ, "OUT": str(project / "killed"), "KILL": "1"}
    assert subprocess.run([sys.executable, "-c", script], env=env, capture_output=True).returncode == -9
    del env["KILL"]
    resumed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    reused = [int(n) for n in re.findall(r"reused (\d+), computed", resumed.stderr)]
    assert len(reused) == 3 and sum(reused) > 0  # what was finished, in any stage, was not asked again
    env["OUT"] = str(project / "fresh")
    assert subprocess.run([sys.executable, "-c", script], env=env, capture_output=True).returncode == 0
    for name in ("sft.jsonl", "dpo.jsonl", "trace.jsonl", "dropped.jsonl"):
        assert (project / "killed" / name).read_bytes() == (project / "fresh" / name).read_bytes(), name


# -- training on conversations ------------------------------------------------------------------------------
def _multi_turn_run(project: Path) -> Path:
    path = _pipeline(project, _dialogue_seeds(project), "  - respond: {}\n  - critique_revise: {}\n")
    run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "run"), ScriptedTeacher(_reply), lambda _: None)
    return project / "run"


def test_sft_and_dpo_train_on_multi_turn_rows(project, tiny_model_dir):
    from synthforge.train.config import DPOTrainingConfig, SFTTrainingConfig
    from synthforge.train.data import load_rows
    from synthforge.train.dpo import DPOTraining
    from synthforge.train.sft import SFTTraining

    run = _multi_turn_run(project)
    final = load_rows(run, "sft")
    every = load_rows(run, "sft", assistant_turns="all")
    assert final.num_rows == 2 and every.num_rows == 3  # the two-turn conversation trains on both answers
    assert every[0]["prompt"] == [SYSTEM, OPENING[0]] and every[0]["completion"] == [OPENING[1]]
    common = {"model": str(tiny_model_dir), "data": str(run), "max_steps": 1, "batch_size": 2, "device": "cpu"}
    sft = SFTTraining(SFTTrainingConfig(**common, out=str(project / "sft"), assistant_turns="all")).run()
    dpo = DPOTraining(DPOTrainingConfig(**common, out=str(project / "dpo"), eval_fraction=0.0)).run()
    assert sft.metrics["train_steps"] == dpo.metrics["train_steps"] == 1


def test_a_student_template_that_drops_system_messages_is_one_line(project, tmp_path, capsys):
    no_system = (
        "{% for message in messages %}{% if message['role'] != 'system' %}<|im_start|>{{ message['role'] }}\n"
        "{{ message['content'] }}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>"
        "assistant\n{% endif %}"
    )
    model = build_tiny_model(tmp_path / "no-system", chat_template=no_system)
    run = _multi_turn_run(project)
    code, err = _cli(
        ["train", "sft", "--data", run, "--model", model, "--out", tmp_path / "s", "--max-steps", "1"], capsys
    )
    assert code == 2 and "drops them silently" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_rlhf_prompts_are_the_whole_context(project):
    from synthforge.train.rlhf import read_prompts

    run = _multi_turn_run(project)
    prompts = read_prompts(run)
    assert [SYSTEM, *OPENING, {"role": "user", "content": HARMFUL}] in prompts


def test_the_report_shows_the_earlier_turns(project):
    from synthforge.report.aggregates import browser_rows, lengths, load_run

    run = _multi_turn_run(project)
    _, kept, dropped = load_run(run)
    rows = {r[1]: r for r in browser_rows(kept, dropped)}
    assert rows[HARMFUL][7] == [["system", "Be brief."], ["user", OPENING[0]["content"]], ["assistant", "Prime."]]
    assert sorted(lengths(kept, dropped)["user turns"]) == [1, 2]
