"""`synthforge eval compare` and `verify_pairs`: scripted judges with known preferences give exact counts."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from synthforge.builtin import ROOT as BUILTIN
from synthforge.cli.main import main
from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.eval.compare import (
    DEFAULT_PIPELINE,
    CompareOptions,
    bootstrap_interval,
    compare_overrides,
    labels_for,
    summarize,
)
from synthforge.records import Record
from synthforge.rows import read_dialogues
from synthforge.teachers.scripted import ScriptedTeacher
from synthforge.testing import build_tiny_model

OPTION = re.compile(r"\(A\) (.*)\n\n\(B\) (.*)\n\nAnswer with", re.DOTALL)


def judge_of(prefer) -> object:
    """A judge whose P(A) for the answers shown as (A) and (B) is ``prefer(first, second)``."""

    def score(conversation, candidate: str) -> float:
        first, second = OPTION.search(conversation[-1]["content"]).groups()
        p = prefer(first, second)
        return math.log(p if candidate == "(A)" else 1 - p)

    def only_scores(conversation):
        raise AssertionError("the judge only scores")

    return score, only_scores


def LengthJudge(stop_after: int | None = None) -> ScriptedTeacher:  # noqa: N802
    """Prefers the longer of the two answers (0.9 vs 0.1), calls it a tie when they are equally long; with
    ``stop_after``, its next call is interrupted (stands in for kill -9 in the middle of the comparison)."""
    score, reply = judge_of(lambda a, b: 0.5 if len(a) == len(b) else (0.9 if len(a) > len(b) else 0.1))
    judge = ScriptedTeacher(
        reply,
        score=score,
        identity={"backend": "scripted", "name": "length-judge"},
        capabilities=frozenset({"generate", "score", "choice"}),
    )
    if stop_after is not None:
        judge.fail = lambda conversations: KeyboardInterrupt() if judge.score_calls > stop_after else None
    return judge


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("models")
    return [str(build_tiny_model(root / "base", seed=1)), str(build_tiny_model(root / "student", seed=2))]


def _compare(project: Path, models: list[str], judge, out: str, limit: int = 6, **extra):
    options = CompareOptions(
        models=models, pipeline=project / DEFAULT_PIPELINE, principles=2, max_new_tokens=12, temperature=1.0, **extra
    )
    spec = load_pipeline(options.pipeline, compare_overrides(options))
    result = run_pipeline(spec, RunOptions(out_dir=project / out, limit=limit), teacher=judge, log=lambda _: None)
    records = [Record.from_dict(json.loads(x)) for x in (result.out_dir / "trace.jsonl").read_text().splitlines()]
    return records, summarize(records, labels_for(models), 0.05, 200, spec.seed)


def test_win_tie_loss_are_exact_and_swapping_models_mirrors_them(project, two_models):
    records, report = _compare(project, two_models, LengthJudge(), "cmp")
    pair = report["pairs"][0]
    a, b = labels_for(two_models)
    expected = {"win": 0, "tie": 0, "loss": 0}
    for record in records:
        ans = record.meta["answers"]
        key = "tie" if len(ans[a]) == len(ans[b]) else ("win" if len(ans[a]) > len(ans[b]) else "loss")
        expected[key] += 2  # two principles per prompt
    assert (pair["wins"], pair["ties"], pair["losses"]) == (expected["win"], expected["tie"], expected["loss"])
    assert pair["win_rate"] == pytest.approx((expected["win"] + 0.5 * expected["tie"]) / 12, abs=1e-4)
    low, high = pair["interval_95"]
    assert low <= pair["win_rate"] <= high and pair["swap_agreement"] == pytest.approx(
        1.0 - expected["tie"] / 12, abs=1e-4
    )
    _, mirrored = _compare(project, list(reversed(two_models)), LengthJudge(), "cmp-reversed")
    other = mirrored["pairs"][0]
    assert (other["wins"], other["ties"], other["losses"]) == (pair["losses"], pair["ties"], pair["wins"])
    assert set(report["safety"]) == {a, b} and report["safety"][a]["harmful_prompts"] == 6


def test_a_killed_comparison_resumes_without_repeating_judge_calls(project, two_models):
    """A real SIGKILL (a subprocess: no cleanup runs) while the judge is asked its second batch; the judge of the
    rerun counts what it is asked: only the batches the killed run had not finished."""
    import os
    import subprocess
    import sys

    script = f"""
import os, signal
from pathlib import Path
from tests.eval.test_compare import LengthJudge, _compare
judge = LengthJudge()
judge.fail = lambda conversations: os.kill(os.getpid(), signal.SIGKILL) if judge.score_calls > 1 else None
_compare(Path({str(project)!r}), {two_models!r}, judge, "killed", limit=6, overrides=["teacher.batch_size=2"])
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2], env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    resumed = LengthJudge()
    _compare(project, two_models, resumed, "killed", limit=6, overrides=["teacher.batch_size=2"])
    assert resumed.scored == 4 * 2 * 2  # the 4 prompts after the first batch, 2 principles, both orders


def test_summary_counts_intervals_and_safety_from_records():
    def record(i, p_a, harmful, refusals):
        return Record(
            id=f"r{i}",
            prompt=f"p{i}",
            meta={
                "answers": {"base": "x", "student": "y"},
                "harmful": harmful,
                "refusals": refusals,
                "comparisons": [{"a": "base", "b": "student", "principle": "harm", "p_a": p_a}],
            },
        )

    records = [
        record(0, 0.9, True, {"base": False, "student": True}),
        record(1, 0.8, True, {"base": False, "student": False}),
        record(2, 0.5, False, {"base": True, "student": False}),
        record(3, 0.1, False, {"base": False, "student": False}),
    ]
    report = summarize(records, ["base", "student"], 0.05, 500, seed=1)
    pair = report["pairs"][0]
    assert (pair["wins"], pair["ties"], pair["losses"], pair["win_rate"]) == (2, 1, 1, 0.625)
    assert pair["largest_wins"][0]["id"] == "r0" and pair["largest_losses"][0]["id"] == "r3"
    assert report["safety"]["base"] == {
        "harmful_prompts": 2,
        "harmful_compliance": 1.0,
        "benign_prompts": 2,
        "benign_refusal": 0.5,
    }
    assert report["safety"]["student"]["harmful_compliance"] == 0.5
    assert bootstrap_interval([["win"]] * 5, 100, 3) == (1.0, 1.0)
    assert bootstrap_interval([["win"], ["loss"]] * 10, 400, 3) == bootstrap_interval([["win"], ["loss"]] * 10, 400, 3)


def read_prompt_rows(path):
    return [(row.prompt, row.harmful) for row in read_dialogues(path)]


def test_prompt_layouts_hh_rlhf_messages_text_and_parquet(tmp_path):
    rows = tmp_path / "dialogues.jsonl"
    transcript = "\n\nHuman: How do I bake bread?\n\nAssistant: Knead it.\n\nHuman: More?"
    system = [{"role": "system", "content": "s"}, {"role": "user", "content": "Hi there"}]
    rows.write_text(json.dumps({"prompt": transcript}) + "\n" + json.dumps({"prompt": system}) + "\n")
    multi, with_system = read_dialogues(rows)
    assert multi.prompt == "More?"  # every turn up to the last Human turn: the earlier ones are its history
    assert multi.history == [
        {"role": "user", "content": "How do I bake bread?"},
        {"role": "assistant", "content": "Knead it."},
    ]
    assert with_system.prompt == "Hi there" and with_system.history == [{"role": "system", "content": "s"}]
    hh = tmp_path / "hh.jsonl"
    hh.write_text(json.dumps({"chosen": "\n\nHuman: What is rain?\n\nAssistant: Water.", "rejected": "x"}) + "\n")
    assert read_prompt_rows(hh) == [("What is rain?", None)]
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["One?", "Two?"], "harmful": [True, False]}), table)
    assert read_prompt_rows(table) == [("One?", True), ("Two?", False)]
    text = tmp_path / "p.txt"
    text.write_text("First?\n\nSecond?\n")
    assert read_prompt_rows(text) == [("First?", None), ("Second?", None)]


def test_shipped_heldout_prompts_are_balanced_and_share_no_13_gram_with_any_seed_file():
    from synthforge.dedup.contamination import NgramIndex

    rows = read_prompt_rows(BUILTIN / "pipelines" / "eval" / "heldout.jsonl")
    assert sum(h for _, h in rows) == 40 and sum(not h for _, h in rows) == 40
    index = NgramIndex(13, 8)
    for seeds in (BUILTIN / "pipelines" / "seeds").glob("*.jsonl"):
        texts = [json.loads(line) for line in seeds.read_text().splitlines() if line.strip()]
        index.add(seeds.name, [t.get("prompt") or t.get("instruction") or "" for t in texts])
    assert [hit for hit in index.query([p for p, _ in rows]) if hit is not None] == []


def _cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["one model", "no prompts", "no compare questions", "unknown pipeline"])
def test_bad_input_is_one_line(project, capsys, monkeypatch, case):
    from synthforge.models import resolve_model

    resolve_model("embedded")  # converted once per machine beforehand: its progress is not this command's output
    capsys.readouterr()
    monkeypatch.chdir(project)
    args = ["eval", "compare", "--models", "embedded,embedded", "--out", project / "o"]
    if case == "one model":
        args[3], fragment = "embedded", "at least two models"
    elif case == "no prompts":
        (project / "empty.jsonl").write_text("\n")
        args += ["--prompts", project / "empty.jsonl"]
        fragment = "no prompts"
    elif case == "unknown pipeline":
        args += ["--pipeline", "no-such-pipeline"]  # a name, as generate takes one
        fragment = "no built-in pipeline called 'no-such-pipeline'"
    else:
        (project / "constitutions" / "plain.txt").write_text("[a]\ncritique: c\nrevision: r\n")
        args += ["--constitution", "plain", "--pipeline", "eval-compare"]  # by name: the project's own copy wins
        fragment = "has no 'compare:' questions"
    code, err = _cli(args, capsys)
    assert code == 2 and fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def RevisionJudge() -> ScriptedTeacher:  # noqa: N802
    """Prefers whichever option starts with 'Better' (the revisions of records it should keep)."""
    score, reply = judge_of(lambda a, b: 0.9 if a.startswith("Better") else (0.1 if b.startswith("Better") else 0.5))
    return ScriptedTeacher(reply, score=score, capabilities=frozenset({"generate", "score", "choice"}))


def test_verify_pairs_keeps_what_the_judge_prefers_with_its_confidence(project):
    from synthforge.stages.base import StageResources
    from synthforge.stages.verify_pairs import VerifyPairs

    stage = VerifyPairs(
        "verify_pairs", {"margin": 0.1}, StageResources(BUILTIN / "prompts", BUILTIN / "constitutions", 0)
    )
    records = [
        Record(
            id="keep",
            prompt="q1",
            response="Better answer.",
            rejected="First answer.",
            steps=[{"stage": "critique_revise", "role": "revision", "principle": "illegal-activity"}],
        ),
        Record(id="drop", prompt="q2", response="Worse answer.", rejected="Better first answer."),
        Record(id="unchanged", prompt="q3", response="Same.", rejected="Same."),
    ]
    kept, dropped, unchanged = stage.process(records, RevisionJudge())
    assert kept.meta["preference"]["confidence"] == pytest.approx(0.9)
    assert kept.steps[-1]["principle"] == "illegal-activity"
    assert dropped.reason.startswith("judge does not prefer the revision (P = 0.100")
    assert unchanged is records[2]  # no pair to verify: passed through


def PositionJudge() -> ScriptedTeacher:  # noqa: N802
    """Always prefers whichever answer is shown first: its two orders never agree."""
    score, reply = judge_of(lambda a, b: 0.9)
    return ScriptedTeacher(reply, score=score, capabilities=frozenset({"generate", "score", "choice"}))


class TestVerdictsThatMeanNothing:
    def test_a_position_biased_judge_is_called_position_noise_everywhere(self, project, two_models, monkeypatch):
        from synthforge.eval.compare import format_report, run_compare
        from synthforge.train.report import record_comparison

        monkeypatch.chdir(project.parent)  # the default pipeline is found from any working directory
        model = project / "model"
        model.mkdir()
        (model / "training.json").write_text(json.dumps({"kind": "sft", "synthforge_version": "0"}))
        options = CompareOptions(models=two_models, principles=1, max_new_tokens=6, out=model / "compare", limit=3)
        report = run_compare(options, log=lambda _: None, judge=PositionJudge())
        pair = report["pairs"][0]
        assert pair["swap_agreement"] == 0 and pair["reliable"] is False and "position noise" in pair["note"]
        assert report["notes"] and "position noise" in "\n".join(format_report(report))
        assert "position noise" in (model / "compare" / "compare.md").read_text()
        card = (model / "compare" / "README.md").read_text()
        assert "## Notes" in card and "agree on 0% of 3 judgements" in card
        record_comparison(model, {k: v for k, v in report.items() if k != "out_dir"})
        assert "position noise" in json.loads((model / "training.json").read_text())["compare"]["notes"][0]

    def test_a_consistent_judge_gets_no_such_note(self, project, two_models):
        _, report = _compare(project, two_models, LengthJudge(), "consistent")
        assert report["pairs"][0]["reliable"] is True and report["notes"] == []
