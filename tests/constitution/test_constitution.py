"""Constitution format: the shipped file parses; every malformed input names file and line."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from synthforge.builtin import ROOT as BUILTIN
from synthforge.constitution import load_constitution, parse_constitution
from synthforge.constitution.parser import ConstitutionError
from tests.conftest import SHARED

GOOD = """# comment
[first]
critique: Is it harmful?
  Say how.
revision: Make it harmless.
compare: Which is less harmful?
weight: 2
tags: harm, safety

[second]
critique: Is it rude?

  Second paragraph.
revision: Make it polite.
"""


def test_shipped_harmless_constitution_has_sixteen_principles():
    constitution = load_constitution(BUILTIN / "constitutions" / "harmless.txt")
    assert len(constitution.principles) == 16
    assert all(p.critique and p.revision and p.compare for p in constitution.principles)
    assert len({p.name for p in constitution.principles}) == 16


def test_shipped_helpful_honest_constitution_parses():
    constitution = load_constitution("helpful-honest", BUILTIN / "constitutions")
    assert len(constitution.principles) == 10
    assert all(p.compare for p in constitution.principles)


def test_parse_values_continuations_weights_and_tags():
    constitution = parse_constitution(GOOD, "good.txt")
    first, second = constitution.principles
    assert first.critique == "Is it harmful? Say how."
    assert first.weight == 2.0 and first.tags == ("harm", "safety") and first.line == 2
    assert first.compare == "Which is less harmful?"
    assert second.critique == "Is it rude?\n\nSecond paragraph."
    assert second.weight == 1.0 and second.compare is None


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("[a]\ncritique: x\n", 1, "has no revision request"),
        ("[a]\nrevision: x\n", 1, "has no critique request"),
        ("[a]\ncritique: x\nrevision: y\ncolour: red\n", 4, "unknown key 'colour'"),
        ("[a]\ncritique: x\nrevision: y\nweight: heavy\n", 4, "weight must be a number"),
        ("[a]\ncritique: x\nrevision: y\nweight: -1\n", 4, "weight must be positive"),
        ("[a]\ncritique: x\nrevision: y\n[a]\ncritique: x\nrevision: y\n", 4, "already defined at line 1"),
        ("  dangling\n", 1, "continues nothing"),
        ("critique: x\n", 1, "before the first [principle] header"),
        ("[a\n", 1, "must end with ']'"),
        ("[a]\njust words\n", 2, "expected 'key: value'"),
        ("# only a comment\n", 1, "no principles found"),
        ("[a]\ncritique: x\ncritique: y\nrevision: z\n", 3, "given twice"),
        ("[two words]\ncritique: x\nrevision: y\n", 1, "must not contain spaces"),
        ("[example: e]\nprompt: p\n[a]\ncritique: x\nrevision: y\n", 1, "is missing: response"),
    ],
)
def test_errors_name_file_and_line(text, line, fragment):
    with pytest.raises(ConstitutionError) as info:
        parse_constitution(text, "my.txt")
    problems = info.value.problems
    assert any(p.startswith(f"my.txt:{line}: ") and fragment in p for p in problems), problems
    assert str(info.value).startswith("my.txt:")


def test_sampling_is_weighted_seeded_and_without_replacement():
    constitution = load_constitution(BUILTIN / "constitutions" / "harmless.txt")
    draw = constitution.sample(random.Random(3), 16)
    assert len({p.name for p in draw}) == 16  # every principle once before any repeats
    assert [p.name for p in constitution.sample(random.Random(3), 5)] == [p.name for p in draw[:5]]
    assert len(constitution.sample(random.Random(1), 20)) == 20  # past 16 a new draw starts
    heavy = parse_constitution("[a]\ncritique: x\nrevision: y\nweight: 9\n[b]\ncritique: x\nrevision: y\n")
    firsts = Counter(heavy.sample(random.Random(i), 1)[0].name for i in range(2000))
    assert 0.85 < firsts["a"] / 2000 < 0.95  # P(a first) = 9 / 10


def test_every_problem_is_reported_in_line_order():
    text = "[a]\ncritique: x\n[b]\nrevision: y\ncolour: red\n[c]\ncritique: x\nrevision: y\nweight: 0\n"
    with pytest.raises(ConstitutionError) as info:
        parse_constitution(text, "many.txt")
    lines = [int(p.split(":")[1]) for p in info.value.problems]
    assert lines == [1, 3, 5, 9]
    assert "(+3 more" in str(info.value)


def test_literal_values_keep_line_breaks_and_round_trip():
    from synthforge.constitution.writer import format_constitution

    text = "[a]\ncritique: x\nrevision: |\n  1. one\n    indented\n\n  2. two\n"
    parsed = parse_constitution(text)
    assert parsed.principles[0].revision == "1. one\n  indented\n\n2. two"
    shipped = load_constitution(BUILTIN / "constitutions" / "harmless.txt")
    again = parse_constitution(format_constitution(shipped))
    assert again.principles == tuple(
        p.__class__(**{**_fields(p), "line": q.line}) for p, q in zip(shipped.principles, again.principles, strict=True)
    )


def _fields(principle):
    return {name: getattr(principle, name) for name in principle.__slots__}


def test_import_hf_recipe_constitution():
    from synthforge.constitution.importers import import_constitution
    from synthforge.constitution.writer import format_constitution

    path = SHARED / "constitution_anthropic.json"
    if not path.is_file():
        pytest.skip(f"shared test data missing: {path}")
    imported = import_constitution(path)
    assert len(imported.principles) == 16 and len(imported.examples) == 4
    assert imported.examples[0].prompt == "Give me some ideas to prank my boss?"
    assert "\n" in imported.examples[0].response
    text = format_constitution(imported)
    reparsed = parse_constitution(text, "converted.txt")
    assert [p.critique for p in reparsed.principles] == [p.critique for p in imported.principles]
    assert [p.revision for p in reparsed.principles] == [p.revision for p in imported.principles]
    assert [(e.response, e.revision) for e in reparsed.examples] == [
        (e.response, e.revision) for e in imported.examples
    ]


def test_import_anthropic_layout(tmp_path):
    import json

    from synthforge.constitution.importers import import_constitution

    data = {
        "harmful0": {"prompt": ["Identify harm."], "edit_request": "Remove harm."},
        "harmful1": {"prompt": ["Is it rude?"], "edit_request": "Be polite."},
    }
    path = tmp_path / "CritiqueRevisionInstructions.json"
    path.write_text(json.dumps(data))
    imported = import_constitution(path)
    assert [(p.name, p.critique, p.revision) for p in imported.principles] == [
        ("harmful0", "Identify harm.", "Remove harm."),
        ("harmful1", "Is it rude?", "Be polite."),
    ]
    path.write_text("5")
    with pytest.raises(ConstitutionError, match="unrecognised layout"):
        import_constitution(path)
    path.write_text("[1, 2]")  # a list is Anthropic's RLMadison layout: comparison questions
    with pytest.raises(ConstitutionError, match=r"\[0\]: expected a comparison question"):
        import_constitution(path)


def _grok_shaped() -> dict:
    """Hugging Face's recipe layout with exchanges of one and of two critique/revision rounds (as in
    llm-swarm's constituion_grok.json); the texts are ours."""
    one = ["Prompt?", "Answer.", "Critique it.", "It is rude.", "Revise it.", "Polite answer."]
    two = [*one, "Critique again.", "Still vague.", "Revise again.", "Polite, precise answer."]
    chat = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(two)]
    first = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(one)]
    return {"constitutions": [{"critic": "Is it rude?", "revision": "Make it polite."}], "system_chat": [first, chat]}


def test_import_exchanges_with_several_rounds_round_trip(tmp_path):
    import json

    from synthforge.constitution.importers import import_constitution
    from synthforge.constitution.writer import format_constitution

    path = tmp_path / "constituion_grok.json"
    path.write_text(json.dumps(_grok_shaped()))
    imported = import_constitution(path)
    assert [len(e.turns()) for e in imported.examples] == [6, 10]
    assert imported.examples[1].more_rounds == (
        ("Critique again.", "Still vague.", "Revise again.", "Polite, precise answer."),
    )
    reparsed = parse_constitution(format_constitution(imported), "converted.txt")
    assert [e.turns() for e in reparsed.examples] == [e.turns() for e in imported.examples]


def test_import_comparison_questions_as_judge_only_principles(tmp_path, project):
    import json

    from synthforge.constitution.importers import import_constitution
    from synthforge.constitution.writer import format_constitution
    from synthforge.settings import SpecError
    from synthforge.stages.base import StageResources
    from synthforge.stages.critique_revise import CritiqueRevise
    from synthforge.stages.judge import Judge

    path = tmp_path / "RLMadisonInstructions.json"
    path.write_text(json.dumps(["Which response is less harmful?", "Which response is more honest?"]))
    imported = import_constitution(path)
    assert [(p.name, p.compare, p.can_critique) for p in imported.principles] == [
        ("compare-01", "Which response is less harmful?", False),
        ("compare-02", "Which response is more honest?", False),
    ]
    target = project / "constitutions" / "madison.txt"
    target.write_text(format_constitution(imported))
    assert [p.compare for p in load_constitution(target).principles] == [p.compare for p in imported.principles]
    resources = StageResources(project / "prompts", project / "constitutions", seed=0)
    Judge("judge", {"constitution": "madison"}, resources)  # the judge takes it
    with pytest.raises(SpecError, match="nothing to critique with"):
        CritiqueRevise("critique_revise", {"constitution": "madison"}, resources)
