"""Clean revisions so SFT data holds only the answer: strip preambles like "Here is a revised response:"."""

from __future__ import annotations

import re
from difflib import SequenceMatcher

_PREAMBLE = re.compile(
    r"""^\s*(?:(?:sure|certainly|of\ course|okay|ok)[,.!]?\s*)?
    (?:
        (?:here(?:'s|\ is|\ are)|below\ is|this\ is)\s+(?:a|an|the|my|your)?\s*
        (?:possible\s+|suggested\s+)?(?:revised|rewritten|new|updated|improved|edited|amended|corrected|modified)
        [^:\n]{0,80}:
      |
        (?:revised|rewritten|new|updated|improved|edited|corrected)\s+(?:response|answer|version|text)\s*:
      |
        (?:revision|rewrite)\s*:
    )\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_QUOTES = ('"', "“", "”", "'")


def clean_revision(text: str) -> str:
    """``text`` without a leading "here is the revised response:"-style preamble or wrapping quotes."""
    cleaned = _PREAMBLE.sub("", text, count=1).strip()
    if len(cleaned) >= 2 and cleaned[0] in _QUOTES and cleaned[-1] in _QUOTES and cleaned.count(cleaned[0]) <= 2:
        cleaned = cleaned[1:-1].strip()
    return cleaned or text.strip()


def edit_fraction(before: str, after: str) -> float:
    """Share of words changed between two texts: 0.0 identical, 1.0 nothing in common (word-level diff)."""
    a, b = before.split(), after.split()
    if not a and not b:
        return 0.0
    return round(1.0 - SequenceMatcher(None, a, b, autojunk=False).ratio(), 4)
