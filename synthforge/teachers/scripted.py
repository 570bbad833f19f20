"""A scripted teacher for tests and examples: answers and scores decided by functions, calls counted."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from synthforge.teachers.base import Completion, Conversation, per_conversation


class ScriptedTeacher:
    """The teacher tests use where a model's answers must be pinned down: ``reply(conversation)`` decides each
    answer (text, or a whole :class:`Completion` for its token counts); ``score(conversation, candidate)`` each
    log-probability (default 0). With ``inner``, whatever isn't scripted goes to that real teacher. ``fail``
    may return an exception to raise for a call (a flaky backend, a kill). It counts what it was asked: ``calls``
    (conversations answered), ``seen`` (them), ``score_calls`` and ``scored``."""

    def __init__(
        self,
        reply: Callable[[Conversation], str | Completion] | None = None,
        *,
        inner: Any = None,
        score: Callable[[Conversation, str], float] | None = None,
        fail: Callable[[list[Conversation]], BaseException | None] | None = None,
        identity: dict[str, Any] | None = None,
        capabilities: frozenset[str] | None = None,
    ):
        self.reply, self.inner, self._score, self.fail = reply, inner, score, fail
        self._identity = identity
        if capabilities is not None:
            self.capabilities = capabilities
        self.calls, self.seen, self.score_calls, self.scored = 0, [], 0, 0

    @property
    def identity(self) -> dict[str, Any]:
        if self._identity is not None:
            return self._identity
        return self.inner.identity if self.inner is not None else {"backend": "scripted"}

    def generate(self, conversations: Sequence[Conversation], params: Any) -> list[list[Completion]]:
        error = self.fail(list(conversations)) if self.fail else None
        if error is not None:
            raise error
        self.seen.extend(conversations)
        if self.reply is None:
            self.calls += len(conversations)
            return self.inner.generate(conversations, params)
        out = []
        for conversation, p in zip(conversations, per_conversation(params, len(conversations)), strict=True):
            answers = [self.reply(conversation) for _ in range(p.n)]
            out.append([a if isinstance(a, Completion) else Completion(a, "stop", 1, 1) for a in answers])
            self.calls += 1  # after the reply: a reply may read how many came before it
        return out

    def score(self, conversations: Sequence[Conversation], continuations: Sequence[Sequence[str]]) -> list[list[float]]:
        self.score_calls += 1
        error = self.fail(list(conversations)) if self.fail else None
        if error is not None:
            raise error
        if self._score is None and self.inner is not None:
            return self.inner.score(conversations, continuations)
        self.scored += len(conversations)
        scorer = self._score or (lambda conversation, candidate: 0.0)
        return [[scorer(c, k) for k in cands] for c, cands in zip(conversations, continuations, strict=True)]
