"""A reasoning teacher's thinking, apart from its answer: split at think tags, and ended when it runs past a budget.

Models that think before answering write ``<think>…</think>`` (the tags are a teacher setting) and then the
answer; a chat template may open the thinking itself (the generation prompt ends with ``<think>``), so the
output holds only the closing tag — text before a closing tag with no opening one is thinking too, as
``transformers serve`` and vLLM's reasoning parsers read it. Every backend hands its completions' text through
:func:`split_reasoning`, so critique, judges, filters and dedup see the answer only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

THINK_TAGS = ("<think>", "</think>")


def split_reasoning(text: str, tags: Sequence[str] = THINK_TAGS, thinking: bool = False) -> tuple[str | None, str]:
    """(thinking, answer) of a completion's text; thinking is None when the text has none (or an empty block).
    ``thinking``: the prompt opened the thinking block, so the text starts inside it (an unclosed block is all
    thinking)."""
    reasoning, answer = _split(text, tags, thinking)
    return (reasoning or None), answer


def _split(text: str, tags: Sequence[str], thinking: bool) -> tuple[str | None, str]:
    if not tags:
        return None, text
    opening, closing = tags
    start = text.find(opening)
    first_close = text.find(closing)
    if start != -1 and (first_close == -1 or start < first_close):
        before, inner = text[:start], text[start + len(opening) :]
        end = _block_end(inner, opening, closing)
        if end == -1:  # thinking that never ended (cut by max_new_tokens): no answer yet
            return inner.strip(), before.strip()
        return inner[:end].strip(), (before + inner[end + len(closing) :]).strip()
    if first_close != -1:  # the chat template opened the block: everything before its closing tag is thinking
        end = _block_end(text, opening, closing)
        return text[:end].strip(), text[end + len(closing) :].strip()
    if thinking:
        return text.strip(), ""
    return None, text


def _block_end(inner: str, opening: str, closing: str) -> int:
    """Where the closing tag of a thinking block starts, ``inner`` being the text after its opening: the tag that
    balances any blocks opened inside it (a model that writes ``<think>`` while thinking closes it too, and its
    answer starts after the outer closing tag); past an unbalanced inner opening, the last closing tag; -1 when
    there is none."""
    depth, position, last = 1, 0, -1
    while (close := inner.find(closing, position)) != -1:
        nested = inner.count(opening, position, close)
        depth += nested - 1
        last = close
        if depth <= 0:
            return close
        position = close + len(closing)
    return last


def opens_thinking(prompt: str, tags: Sequence[str] = THINK_TAGS) -> bool:
    """Whether a rendered prompt leaves the model inside a thinking block (the template opened it)."""
    if not tags:
        return False
    opening, closing = tags
    tail = prompt.rstrip()
    return tail.endswith(opening) or (opening in tail and tail.rfind(opening) > tail.rfind(closing))


@dataclass(eq=False)
class ThinkingBudget:
    """Per generated row: counts the tokens it thinks and, past ``limit``, makes it close the block (the tokens
    of the closing tag are forced, then the model answers) — vLLM's ``thinking_token_budget``, token by token.

    Tags are matched as token-id sequences, as vLLM's reasoning config does (the tokenizer's spelling of each tag
    on its own); ``inside``: the prompt opened the block. ``force`` holds the tokens still to be emitted in place
    of samples."""

    opening: list[int]
    closing: list[int]
    limit: int
    inside: bool = False
    thought: int = 0
    finished: bool = False
    force: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.inside:
            self._enter()

    def _enter(self) -> None:
        """The row is thinking now; a budget of 0 closes the block at once."""
        self.inside = True
        if self.limit == 0:
            self.force = list(self.closing)

    def forced(self) -> int | None:
        """The token this row must emit next, if the budget is closing its thinking."""
        return self.force[0] if self.force else None

    def observe(self, tokens: list[int]) -> None:
        """Account for the row's newest token (``tokens`` so far, the newest last)."""
        if self.force:
            self.force.pop(0)
            if not self.force:
                self.finished = True
            return
        if self.finished:
            return
        if not self.inside:
            if _ends_with(tokens, self.opening):
                self._enter()
            return
        if _ends_with(tokens, self.closing):
            self.finished = True
            return
        self.thought += 1
        if self.thought >= self.limit:
            self.force = list(self.closing)


def _ends_with(tokens: list[int], tail: list[int]) -> bool:
    return bool(tail) and len(tokens) >= len(tail) and tokens[-len(tail) :] == tail
