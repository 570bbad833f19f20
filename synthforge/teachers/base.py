"""The teacher protocol: chat conversations and sampling settings in, completions out.

It mirrors vLLM's ``LLM.chat(messages, SamplingParams)`` and the OpenAI chat API closely enough
that both can implement it without callers changing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

from synthforge.settings import OMIT_IF_NONE

Message = dict[str, str]
Conversation = list[Message]
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Sampling settings of one request. ``temperature == 0`` means greedy decoding."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 256
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None  # None: none; k >= 0: each sampled token's log-probability and its top k
    # A JSON Schema the answer must follow (STRUCTURED teachers constrain decoding to it); not hashed (a dict)
    json_schema: dict[str, Any] | None = field(default=None, hash=False, metadata={OMIT_IF_NONE: True})
    # Tokens a reasoning teacher may think before its thinking block is closed for it (vLLM's thinking_token_budget)
    max_reasoning_tokens: int | None = field(default=None, metadata={OMIT_IF_NONE: True})

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.max_new_tokens < 1 or self.n < 1:
            raise ValueError("max_new_tokens and n must be >= 1")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise ValueError("logprobs must be in [0, 20]")
        if self.max_reasoning_tokens is not None and self.max_reasoning_tokens < 0:
            raise ValueError(f"max_reasoning_tokens must be >= 0, got {self.max_reasoning_tokens}")
        if self.json_schema is not None and not isinstance(self.json_schema, dict):
            raise ValueError("json_schema must be a mapping (a JSON Schema)")
        object.__setattr__(self, "stop", tuple(self.stop))

    def with_seed(self, seed: int) -> SamplingParams:
        return replace(self, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        # absent unless asked for: cache keys of earlier runs stay valid
        for optional in ("logprobs", "json_schema", "max_reasoning_tokens"):
            if data[optional] is None:
                del data[optional]
        return data


@dataclass(frozen=True, slots=True)
class Completion:
    """One sampled continuation with why it ended and what it cost; ``text`` is the answer, ``reasoning`` what a
    reasoning teacher thought before it (None when it didn't), split by every backend."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)
    # With SamplingParams.logprobs: one {"token", "logprob", "top": [[token, logprob], ...]} per sampled token.
    logprobs: list[dict[str, Any]] | None = None
    reasoning: str | None = None


# What a backend can do. Every backend generates; the others depend on the backend (and its settings).
GENERATE = "generate"
SCORE = "score"  # exact log-probabilities of given continuations
CHOICE = "choice"  # log-probabilities of short alternative answers ("(A)" vs "(B)"): from SCORE or top logprobs
RAW_TEXT = "raw_text"  # render the chat template and continue raw text (Magpie)
LOGPROBS = "logprobs"  # log-probabilities of sampled tokens
PROMPT_LOGPROBS = "prompt_logprobs"  # continuation_token_logprobs(conversation | None, text): what a server echoes
TOKENS = "tokens"  # count_tokens(conversation | text) and context_window: prompts checked before they are queued
CONTINUOUS = "continuous"  # start(prompts, params) -> a submission: rows join a running batch (continuous batching)
STRUCTURED = "structured"  # json_schema constrains the answer (a grammar, or the server's response_format)
THINKING_BUDGET = "thinking_budget"  # max_reasoning_tokens ends a reasoning teacher's thinking (or the server's)
BATCH = "batch"  # requests go through a batch API (see Batched): outstanding batches can be listed and cancelled


@runtime_checkable
class Teacher(Protocol):
    """What every backend implements."""

    @property
    def identity(self) -> dict[str, Any]:
        """Everything that identifies the model's outputs (name, weights hash, dtype); part of cache keys."""
        ...

    @property
    def capabilities(self) -> frozenset[str]:
        """What this backend can do beyond generating (``SCORE``, ``CHOICE``, ``RAW_TEXT``, ``LOGPROBS``)."""
        ...

    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[list[Completion]]:
        """Complete each conversation with ``params.n`` samples; ``params`` may be one per conversation."""
        ...

    def score(self, conversations: Sequence[Conversation], continuations: Sequence[Sequence[str]]) -> list[list[float]]:
        """Sum of log-probabilities of each candidate assistant continuation of each conversation."""
        ...


SAMPLES = "samples"  # a need, not a capability: some stage asks for n > 1 samples of one prompt


@runtime_checkable
class Probing(Protocol):
    """A teacher that can find out, with tiny requests, whether it can do what a pipeline needs (a remote server
    may not honour every parameter it accepts). Called once, before the first stage sends work."""

    def probe(self, needs: frozenset[str]) -> list[str]:
        """Check ``needs`` (capabilities, and ``SAMPLES``); raise a one-line user error for one with no fallback,
        and return a line for each fallback taken instead."""
        ...


class BatchJournal(Protocol):
    """A run's write-ahead record of one teacher's batch submissions, kept by the engine with the run's checkpoints:
    the backend reports each step (an intent before anything is sent, the upload, the create, the end, the
    release), and the engine records it durably before :meth:`record` returns."""

    def events(self) -> list[dict[str, Any]]:
        """The steps recorded so far (by earlier runs of this run folder too), oldest first."""
        ...

    def record(self, event: dict[str, Any]) -> None:
        """Record one step durably (fsynced) before returning."""
        ...

    def shown(self, state: Any) -> None:
        """A batch's state as the server reports it, each time it changes (a ``BatchState``: id, status, done,
        total, running): the run shows it (a progress bar per batch, or a log line)."""
        ...

    def say(self, line: str) -> None:
        """News of the batches for the run's log (sent, found again, gone, another client's)."""
        ...


@runtime_checkable
class Batched(Protocol):
    """A teacher sending its requests through a batch API (capability ``BATCH``): it keeps its submissions in the
    run's :class:`BatchJournal`, its running batches can be listed and cancelled, and a fresh run takes no earlier
    result."""

    def keep_log(self, journal: BatchJournal, live: frozenset[str]) -> int:
        """Keep submissions in ``journal`` from now on, after settling what it recorded: the batches of request
        scopes not in ``live`` (a stage whose template or settings changed) are cancelled and their uploads
        deleted. How many batches were cancelled."""
        ...

    def outstanding(self) -> list[dict[str, Any]]:
        """The batches of this run still running on the server (their objects)."""
        ...

    def cancel_outstanding(self) -> list[dict[str, Any]]:
        """Cancel them (they keep what they finished); the cancelled batches."""
        ...

    def forget_batches(self) -> int:
        """For a fresh run: cancel the running batches and reuse no earlier result; how many were cancelled."""
        ...

    def release_batches(self) -> int:
        """Once the run's results are saved: cancel batches nobody waits for and delete what the run uploaded or
        was sent (input and result files, ended batches); how many submissions were released."""
        ...


# The scope of the requests a thread sends (the stage sending them, with its settings' hash): part of each batch
# request's custom_id, and recorded with each batch, so a batch of a stage whose settings changed is cancelled.
_SCOPE: ContextVar[str] = ContextVar("synthforge_request_scope", default="")


@contextmanager
def request_scope(scope: str) -> Iterator[None]:
    """Requests sent by this thread inside the block belong to ``scope``."""
    token = _SCOPE.set(scope)
    try:
        yield
    finally:
        _SCOPE.reset(token)


def current_scope() -> str:
    """The scope of the requests this thread sends now ('' outside any)."""
    return _SCOPE.get()


@runtime_checkable
class Remote(Protocol):
    """A teacher behind a server: it serves ``max_in_flight`` requests at once and says whether it is up and
    serves its model (``ready``: one try)."""

    remote: bool
    max_in_flight: int

    def ready(self) -> bool: ...


@runtime_checkable
class ContextLimited(Protocol):
    """A teacher that knows its context window and counts a conversation's tokens (prompts checked before they
    are queued, conversations cut to fit)."""

    context_window: int | None

    def count_tokens(self, conversation: Conversation | str) -> int: ...


# What the engine and stages ask of any teacher, answered here (the one place that may look at a teacher's
# attributes): a teacher that doesn't declare an ability simply lacks it. A lazily built teacher declares
# ``remote`` and ``max_in_flight`` itself, so asking them builds nothing.
def is_remote(teacher: Any) -> bool:
    """Whether the teacher is behind a server (its requests wait on the network, not on local cores)."""
    return bool(getattr(teacher, "remote", False))


def requests_at_once(teacher: Any) -> int:
    """How many requests the teacher serves at once (1: one call at a time)."""
    return int(getattr(teacher, "max_in_flight", 1) or 1) if teacher is not None else 1


def says_ready(teacher: Any) -> bool:
    """Whether a remote teacher says its server is up and serves its model (one without ``ready()`` says no)."""
    ready = getattr(teacher, "ready", None)
    return bool(ready()) if callable(ready) else False


def window_of(teacher: Any) -> int | None:
    """The teacher's context window in tokens, when it knows it."""
    return getattr(teacher, "context_window", None)


def sends_batches(teacher: Any) -> bool:
    """Whether the teacher sends its requests through a batch API (:class:`Batched`; known without building a
    lazily built one)."""
    return BATCH in capabilities_of(teacher)


def backend_name(teacher: Any) -> str:
    """The backend a teacher reports in its identity (its class name for one that reports none)."""
    return (getattr(teacher, "identity", None) or {}).get("backend", type(teacher).__name__)


def per_conversation(params: SamplingParams | Sequence[SamplingParams], count: int) -> list[SamplingParams]:
    """Broadcast one ``SamplingParams`` to ``count`` conversations, or check a list's length."""
    if isinstance(params, SamplingParams):
        return [params] * count
    params = list(params)
    if len(params) != count:
        raise ValueError(f"got {len(params)} sampling params for {count} conversations")
    return params


def capabilities_of(teacher: Any) -> frozenset[str]:
    """A teacher's declared capabilities; an object that declares none is judged by the methods it has."""
    declared = getattr(teacher, "capabilities", None)
    if declared is not None:
        return frozenset(declared)
    found = {GENERATE}
    if callable(getattr(teacher, "score", None)):
        found |= {SCORE, CHOICE}
    if callable(getattr(teacher, "render_chat", None)) and callable(getattr(teacher, "complete", None)):
        found.add(RAW_TEXT)
    return frozenset(found)


def choice_logprobs(
    teacher: Any, conversations: Sequence[Conversation], options: Sequence[Sequence[str]]
) -> list[list[float]]:
    """Log-probabilities of each short alternative answer: exact scores where the backend has them, else
    the backend's own ``choose`` (e.g. read from the top log-probabilities of the answer's first tokens)."""
    if SCORE in capabilities_of(teacher):
        return teacher.score(conversations, options)
    return teacher.choose(conversations, options)
