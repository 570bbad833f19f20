"""Constitution format: the shipped file parses; every malformed input names file and line."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from synthforge.constitution import load_constitution, parse_constitution
from synthforge.constitution.parser import ConstitutionError
from tests.conftest import REPO

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
    constitution = load_constitution(REPO / "constitutions" / "harmless.txt")
    assert len(constitution.principles) == 16
    assert all(p.critique and p.revision and p.compare for p in constitution.principles)
    assert len({p.name for p in constitution.principles}) == 16


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
    message = str(info.value)
    assert message.startswith(f"my.txt:{line}: "), message
    assert fragment in message


def test_sampling_is_weighted_seeded_and_without_replacement():
    constitution = load_constitution(REPO / "constitutions" / "harmless.txt")
    draw = constitution.sample(random.Random(3), 16)
    assert len({p.name for p in draw}) == 16  # every principle once before any repeats
    assert [p.name for p in constitution.sample(random.Random(3), 5)] == [p.name for p in draw[:5]]
    assert len(constitution.sample(random.Random(1), 20)) == 20  # past 16 a new draw starts
    heavy = parse_constitution("[a]\ncritique: x\nrevision: y\nweight: 9\n[b]\ncritique: x\nrevision: y\n")
    firsts = Counter(heavy.sample(random.Random(i), 1)[0].name for i in range(2000))
    assert 0.85 < firsts["a"] / 2000 < 0.95  # P(a first) = 9 / 10
