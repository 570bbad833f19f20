"""Write a :class:`Constitution` in the text format, so that parsing the output gives it back."""

from __future__ import annotations

import textwrap

from synthforge.constitution.model import Constitution, FewShotExample, Principle
from synthforge.constitution.parser import EXAMPLE_KEYS, ROUND_KEYS

WIDTH = 100


def _value(key: str, value: str) -> list[str]:
    """``key: value`` lines: '|' blocks for multi-line text, folded continuation lines for long text."""
    if "\n" in value or value != value.strip() or value.startswith("|"):
        return [f"{key}: |"] + [f"  {line}" if line else "" for line in value.split("\n")]
    if "  " in value or len(key) + len(value) + 2 <= WIDTH:
        return [f"{key}: {value}"]
    wrapped = textwrap.wrap(value, WIDTH - 2, break_long_words=False, break_on_hyphens=False)
    return [f"{key}: {wrapped[0]}"] + [f"  {line}" for line in wrapped[1:]]


def _principle(p: Principle) -> list[str]:
    lines = [f"[{p.name}]"]
    if p.can_critique:
        lines += [*_value("critique", p.critique), *_value("revision", p.revision)]
    if p.compare:
        lines += _value("compare", p.compare)
    if p.rate:
        lines += _value("rate", p.rate)
    if p.weight != 1.0:
        lines.append(f"weight: {p.weight:g}")
    if p.tags:
        lines.append(f"tags: {', '.join(p.tags)}")
    return lines


def _example(e: FewShotExample) -> list[str]:
    lines = [f"[example: {e.name}]"]
    for number, (user, assistant) in enumerate(e.history, start=1):
        lines += [*_value(f"user_{number}", user), *_value(f"assistant_{number}", assistant)]
    for key in EXAMPLE_KEYS:
        lines += _value(key, getattr(e, key))
    for number, round_ in enumerate(e.more_rounds, start=2):
        for key, text in zip(ROUND_KEYS, round_, strict=True):
            lines += _value(f"{key}_{number}", text)
    return lines


def format_constitution(constitution: Constitution, header: str = "") -> str:
    """The constitution as text; ``header`` lines become comments at the top."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for block in [*map(_principle, constitution.principles), *map(_example, constitution.examples)]:
        if lines:
            lines.append("")
        lines += block
    return "\n".join(lines) + "\n"
