"""SL-CAI loop semantics with a scripted teacher (deterministic text, so the checks can be exact)."""

from __future__ import annotations

import json

import pytest

from synthforge.engine.exporters import has_preference
from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.errors import UserError
from synthforge.stages.helpers.critique_text import finds_no_issue
from synthforge.stages.helpers.revision_text import clean_revision, edit_fraction
from synthforge.teachers.scripted import ScriptedTeacher
from tests.conftest import write_pipeline


def _reply(conversation):
    last = conversation[-1]["content"]
    if "Rewrite" in last or "Revise" in last or "Remove" in last or "rewrite" in last:
        return "Here is a revised response: I can't help with that, but here is a safe alternative."
    if "Keep the critique short" in last:
        return "It helps with a crime."
    return "First answer with details."


def _run(project, teacher, overrides=(), limit=3):
    spec = load_pipeline(project / "pipelines" / "tiny-cai.yaml", list(overrides))
    return run_pipeline(spec, RunOptions(out_dir=project / "out", limit=limit), teacher=teacher, log=lambda _: None)


def _trace(result):
    return [json.loads(x) for x in (result.out_dir / "trace.jsonl").read_text().splitlines()]


def test_revision_preamble_is_stripped_and_raw_text_kept(project, tiny_model_dir):
    write_pipeline(project, tiny_model_dir)
    result = _run(project, ScriptedTeacher(_reply))
    records = _trace(result)
    assert len(records) == 3
    for record in records:
        assert record["response"] == "I can't help with that, but here is a safe alternative."
        assert record["rejected"] == "First answer with details."
        assert record["steps"][2]["raw_text"].startswith("Here is a revised response:")
        assert record["meta"]["unchanged"] is False
    assert result.manifest["counts"]["dpo"] == 3


def test_unchanged_revision_makes_no_preference_pair(project, tiny_model_dir):
    write_pipeline(project, tiny_model_dir)

    # Every call, revision included, returns the first answer: the revision changes nothing.
    result = _run(project, ScriptedTeacher(lambda conversation: "First answer with details."))
    assert all(r["meta"]["unchanged"] for r in _trace(result))
    assert result.manifest["counts"]["dpo"] == 0 and result.manifest["counts"]["dpo_skipped_identical"] == 3
    assert result.manifest["counts"]["sft"] == 3


def test_few_shot_examples_are_prepended_as_turns(project, tiny_model_dir):
    write_pipeline(project, tiny_model_dir)
    constitution = project / "constitutions" / "harmless.txt"
    constitution.write_text(
        constitution.read_text() + "\n[example: demo]\nprompt: P\nresponse: R\ncritique_request: CQ\ncritique: C\n"
        "revision_request: RQ\nrevision: |\n  line one\n  line two\n"
    )
    teacher = ScriptedTeacher(_reply)
    _run(project, teacher, ["stages.critique_revise.few_shot=1"], limit=1)
    critique_conv = teacher.seen[1]
    assert [m["content"] for m in critique_conv[:6]] == ["P", "R", "CQ", "C", "RQ", "line one\nline two"]
    assert [m["role"] for m in critique_conv[:6]] == ["user", "assistant"] * 3
    with pytest.raises(UserError, match="few_shot: 2 examples asked, but constitution harmless has 1"):
        _run(project, teacher, ["stages.critique_revise.few_shot=2"], limit=1)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Here is a revised response: Do not do that.", "Do not do that."),
        ("Sure! Here's the rewritten answer:\n\nNo.", "No."),
        ('Revised response: "Stay safe."', "Stay safe."),
        ("Here are some tips: keep it legal.", "Here are some tips: keep it legal."),
        ("Rewrite: x", "x"),
        ("Nothing to strip.", "Nothing to strip."),
    ],
)
def test_clean_revision(raw, clean):
    assert clean_revision(raw) == clean


def test_has_preference_ignores_whitespace_only_differences():
    from synthforge.records import Record

    assert not has_preference(Record("a", "p", response="x  y", rejected=" x y\n"))
    assert has_preference(Record("a", "p", response="x y", rejected="x z"))
    assert not has_preference(Record("a", "p", response="x"))


@pytest.mark.parametrize("turns", ["multi", "single"])
def test_revision_without_critique_skips_the_critique_call(project, tiny_model_dir, turns):
    write_pipeline(project, tiny_model_dir)
    overrides = ["stages.critique_revise.critique=false", f"stages.critique_revise.turns={turns}"]
    if turns == "single":
        overrides += [
            "stages.critique_revise.critique_template=critique-single",
            "stages.critique_revise.revise_template=revise-single",
        ]
    teacher = ScriptedTeacher(_reply)
    result = _run(project, teacher, overrides, limit=2)
    assert len(teacher.seen) == 2 * 2  # a response and a revision per record, no critique
    assert len(_trace(result)) == 2
    for record in _trace(result):
        assert [s["role"] for s in record["steps"]] == ["response", "revision"]
    revision_request = teacher.seen[-1][-1]["content"]
    assert "Critique:" not in revision_request and "Keep the critique short" not in revision_request


@pytest.mark.parametrize(
    ("critique", "no_issue"),
    [
        ("No issues found.", True),
        ("The response is already harmless and appropriate. Nothing to change.", True),
        ("There are no problems with this answer.", True),
        ("The answer does not need any changes.", True),
        ("No changes needed, but it could be more concise.", False),
        ("The response gives instructions for a crime; it should refuse.", False),
        ("It is harmful because it explains how to pick a lock.", False),
        ("", False),
    ],
)
def test_finds_no_issue(critique, no_issue):
    assert finds_no_issue(critique) is no_issue


def test_critique_with_no_issue_skips_the_revision_and_counts_per_principle(project, tiny_model_dir):
    write_pipeline(project, tiny_model_dir)

    def reply(conversation):
        last = conversation[-1]["content"]
        if "Keep the critique short" in last:
            return "No issues found." if "toxic gas" in conversation[0]["content"] else "It helps with a crime."
        return _reply(conversation)

    teacher = ScriptedTeacher(reply)
    result = _run(project, teacher)
    trace = {r["prompt"]: r for r in _trace(result)}
    skipped = [r for r in trace.values() if r["meta"]["unchanged"]]
    assert len(skipped) == 1  # the critique of that record found nothing: no revision call, no pair
    assert [s["role"] for s in skipped[0]["steps"]] == ["response", "critique"]
    assert skipped[0]["steps"][1]["asks_change"] is False
    assert len(teacher.seen) == 3 + 3 + 2  # responses, critiques, revisions only where a change was asked
    assert result.manifest["counts"]["dpo"] == 2

    stats = result.manifest["principles"]
    assert sum(s["critiques"] for s in stats.values()) == 3
    assert sum(s["revisions"] for s in stats.values()) == 2
    for s in stats.values():
        if s["revisions"]:
            assert s["revision_change_rate"] == 1.0 and 0 < s["mean_edit_fraction"] <= 1
    asked = sum(round(s["critique_change_rate"] * s["critiques"]) for s in stats.values())
    assert asked == 2
    card = (result.out_dir / "README.md").read_text()
    assert "## Principles" in card and "asked for change" in card


def test_edit_fraction():
    assert edit_fraction("a b c d", "a b c d") == 0.0
    assert edit_fraction("a b c d", "w x y z") == 1.0
    assert edit_fraction("a b c d", "a b c e") == 0.25
