"""Drop repetitive text, with the thresholds of the Gopher paper (Rae et al. 2021, Table A1).

Duplicate lines and paragraphs (by count and by characters), the share of characters in the most
frequent word 2/3/4-gram, and the share of characters in duplicated word 5- to 10-grams.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from synthforge.records import Record
from synthforge.stages.filters.base import FilterStage, check_fields, field_text

_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile(r"\n+")


@dataclass
class RepetitionFilterConfig:
    """Gopher Table A1 defaults; ``min_words``: shorter texts skip the n-gram checks (too few to judge)."""

    fields: tuple[str, ...] = ("response",)
    dup_line_frac: float = 0.30
    dup_para_frac: float = 0.30
    dup_line_char_frac: float = 0.20
    dup_para_char_frac: float = 0.20
    top_ngram_char_frac: dict[int, float] = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    dup_ngram_char_frac: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )
    min_words: int = 10

    def __post_init__(self) -> None:
        check_fields(self.fields)
        for name in ("top_ngram_char_frac", "dup_ngram_char_frac"):
            table = getattr(self, name)
            if not all(isinstance(n, int) and n > 0 and 0 < float(v) <= 1 for n, v in table.items()):
                raise ValueError(f"{name} maps n-gram sizes (positive ints) to fractions in (0, 1]")


def duplicates(parts: list[str]) -> tuple[int, int]:
    """(number of elements seen before, their total characters)."""
    seen: set[str] = set()
    count = chars = 0
    for part in parts:
        if part in seen:
            count, chars = count + 1, chars + len(part)
        else:
            seen.add(part)
    return count, chars


def top_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by the most frequent word n-gram (its length times its count)."""
    grams = Counter(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0
    gram, count = grams.most_common(1)[0]
    return len(gram) * count if count > 1 else 0


def duplicated_ngram_chars(words: list[str], n: int) -> int:
    """Characters of words inside any repeated n-gram (each word counted once)."""
    first: dict[tuple[str, ...], int] = {}
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        if gram in first:
            for j in (*range(first[gram], first[gram] + n), *range(i, i + n)):
                covered[j] = True
        else:
            first[gram] = i
    return sum(len(w) for w, c in zip(words, covered, strict=True) if c)


def repetition_reason(text: str, config: RepetitionFilterConfig) -> str | None:
    """Why ``text`` is too repetitive, or None."""
    total = max(len(text), 1)
    paragraphs = [p for p in _PARAGRAPHS.split(text.strip()) if p.strip()]
    lines = [line for line in _LINES.split(text.strip()) if line.strip()]
    for name, parts, frac, char_frac in (
        ("paragraph", paragraphs, config.dup_para_frac, config.dup_para_char_frac),
        ("line", lines, config.dup_line_frac, config.dup_line_char_frac),
    ):
        count, chars = duplicates(parts)
        if parts and count / len(parts) > frac:
            return f"duplicate {name}s {count}/{len(parts)} > {frac}"
        if chars / total > char_frac:
            return f"duplicate {name} characters {chars / total:.2f} > {char_frac}"
    words = text.split()
    if len(words) < config.min_words:
        return None
    for n, limit in sorted(config.top_ngram_char_frac.items()):
        share = top_ngram_chars(words, n) / total
        if share > limit:
            return f"top {n}-gram covers {share:.2f} of characters > {limit}"
    for n, limit in sorted(config.dup_ngram_char_frac.items()):
        share = duplicated_ngram_chars(words, n) / total
        if share > limit:
            return f"duplicated {n}-grams cover {share:.2f} of characters > {limit}"
    return None


class RepetitionFilter(FilterStage):
    kind = "filter_repetition"
    Config = RepetitionFilterConfig

    def filter(self, record: Record) -> bool | tuple[bool, str]:
        for name in self.config.fields:
            text = field_text(record, name)
            reason = repetition_reason(text, self.config) if text else None
            if reason:
                return False, f"repetitive {name}: {reason}"
        return True
