"""Self-Instruct's heuristic filters for generated instructions, and list parsing of teacher output."""

from __future__ import annotations

import re

# Self-Instruct's list: a text-only model can't act on these.
BANNED_KEYWORDS = (
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
    "video",
    "audio",
    "music",
    "flowchart",
    "diagram",
)
# Assistant chatter that small teachers emit between tasks ("Sure, here are the tasks:").
_CHATTER = re.compile(
    r"^(?:sure|certainly|of course|okay|ok|absolutely|here (?:is|are)|i can|i will|i'll|i'd be happy|"
    r"as an ai|the answer (?:to|is))\b",
    re.IGNORECASE,
)
_ITEM_PREFIX = re.compile(r"^\s*(?:task\s*\d+\s*[:.)-]|\d+\s*[.):-]|[-*•]|instruction\s*\d*\s*:)\s*", re.IGNORECASE)


def split_instructions(text: str) -> list[str]:
    """Instructions in a teacher's continuation: one per line, "Task N:", numbers and bullets removed."""
    found = []
    for line in text.split("\n"):
        cleaned = " ".join(_ITEM_PREFIX.sub("", line).split())
        if cleaned:
            found.append(cleaned)
    return found


def rejection_reason(instruction: str, min_words: int, max_words: int, banned: tuple[str, ...]) -> str | None:
    """Why Self-Instruct would discard ``instruction`` (length, banned keyword, punctuation or non-ASCII
    start; and ours: assistant chatter such as "Sure, here are the tasks:"), or None."""
    words = instruction.split()
    if len(words) < min_words:
        return f"too short ({len(words)} < {min_words} words)"
    if len(words) > max_words:
        return f"too long ({len(words)} > {max_words} words)"
    lowered = instruction.lower()
    for keyword in banned:
        if re.search(rf"\b{re.escape(keyword.lower())}\b", lowered):
            return f"banned keyword ({keyword!r})"
    if _CHATTER.match(instruction):
        return "assistant chatter, not a task"
    first = instruction[0]
    if not first.isalnum():
        return "starts with punctuation"
    if not first.isascii():
        return "starts with a non-ASCII character"
    return None
