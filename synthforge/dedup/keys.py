"""What near-duplicate detection compares: one definition for the ``minhash_dedup`` stage and ``synthforge dedup``.

- ``prompt``: the last user turn (what is answered);
- ``response``: the final answer;
- ``both``: the two, a line apart;
- ``conversation``: every turn, system message included, and the final answer, as ``Role: text`` paragraphs.
"""

from __future__ import annotations

from collections.abc import Sequence

from synthforge.records import Message, render_dialogue

KEYS = ("prompt", "response", "both", "conversation")


def last_user_turn(turns: Sequence[Message]) -> str | None:
    """The text of the last user turn, or None when there is none."""
    return next((m["content"] for m in reversed(turns) if m.get("role") == "user"), None)


def missing_part(key: str, turns: Sequence[Message], answer: str | None) -> str | None:
    """The part ``key`` compares that a conversation lacks ("prompt" or "response"), or None."""
    if key != "response" and last_user_turn(turns) is None:
        return "prompt"
    if key in ("response", "both") and not answer:
        return "response"
    return None


def compared_text(key: str, turns: Sequence[Message], answer: str | None) -> str:
    """The text compared for a conversation (``turns`` up to the last user turn, then ``answer``)."""
    if key == "response":
        return answer or ""
    if key == "conversation":
        final = [{"role": "assistant", "content": answer}] if answer else []
        return render_dialogue([*turns, *final])
    prompt = last_user_turn(turns) or ""
    return prompt if key == "prompt" else f"{prompt}\n{answer or ''}"
