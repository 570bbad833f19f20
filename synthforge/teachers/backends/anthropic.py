"""Teacher over Anthropic's Messages API (``POST {base_url}/v1/messages``), plain JSON over HTTP with the SDK's
retry rules (:mod:`synthforge.teachers.http`), an adaptive window and rate limits (:mod:`synthforge.teachers.remote`).

What the API has and hasn't, and how it maps onto the teacher protocol:

- a system prompt is the request's ``system``; the other turns are ``messages``;
- ``temperature`` is sent; ``top_p`` only with ``teacher.anthropic.send_top_p`` (recent Claude models refuse both
  together); ``max_tokens`` and ``stop_sequences`` as they are;
- a thinking budget (``sampling.max_reasoning_tokens``) is extended thinking: ``thinking: {type: enabled,
  budget_tokens}`` with temperature 1 and ``max_tokens`` raised by the budget (the API's rules: a budget of at
  least 1,024 tokens, below ``max_tokens``); thinking blocks become the completion's reasoning;
- a schema answer is asked with ``output_config.format`` (structured outputs);
- there is no ``n`` (one request per sample), no seed (the identity says ``seeded: false``: a run isn't
  reproducible from its seed) and no log-probabilities (stages that need them are refused at validation);
- every ``stop_reason`` is mapped: ``end_turn``/``stop_sequence`` end normally, ``max_tokens`` and
  ``model_context_window_exceeded`` are a length stop, ``refusal`` ends normally and is kept in the completion's
  ``extra``; ``pause_turn`` and ``tool_use`` (we send no tools) are teacher errors that a retry can't help.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from synthforge import __version__
from synthforge.errors import TeacherError, UserError
from synthforge.hashing import stable_hash
from synthforge.teachers.anthropic_batches import AnthropicBatches
from synthforge.teachers.base import (
    BATCH,
    CHOICE,
    GENERATE,
    SCORE,
    STRUCTURED,
    THINKING_BUDGET,
    Completion,
    Conversation,
    SamplingParams,
    per_conversation,
)
from synthforge.teachers.batch_api import BatchClient, limits_of
from synthforge.teachers.batch_mode import BatchMode
from synthforge.teachers.config import Backend, TeacherSpec
from synthforge.teachers.http import StatusError, error_detail, url_problem
from synthforge.teachers.reasoning import THINK_TAGS, split_reasoning
from synthforge.teachers.remote import RemoteTeacher

MIN_THINKING = 1024  # the API's least thinking budget
STOP = {"end_turn": "stop", "stop_sequence": "stop", "refusal": "stop"}
LENGTH = {"max_tokens", "model_context_window_exceeded"}
_URL = re.compile(r"^(?P<model>.+?)@(?P<url>https?://\S+)$")


@dataclass
class AnthropicSettings:
    """Anthropic's Messages API, or a server that speaks it."""

    base_url: str = "https://api.anthropic.com"  # the host without /v1, as in Anthropic's SDK
    api_key_env: str = "ANTHROPIC_API_KEY"  # name of the environment variable holding the key; never the key itself
    version: str = "2023-06-01"  # the anthropic-version header
    max_concurrency: int = 16  # upper bound of requests in flight; the adaptive window stays below it
    timeout: float = 600.0  # seconds per request
    retries: int = 3  # as the SDK retries (429 with retry-after, 529 overloaded, 5xx, timeouts, dropped connections)
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    send_top_p: bool = False  # send top_p beside temperature (recent Claude models refuse both together)
    structured: bool = True  # ask schema answers with output_config.format (false: validate the text only)
    batch: bool = False  # send requests through Message Batches (/v1/messages/batches): same answers, not the cache key
    batch_max_requests: int = 100_000  # requests in one batch at most (Anthropic's limit)
    batch_max_mb: float = 256.0  # size of one batch's requests at most (Anthropic's limit)
    batch_max_tokens: int | None = None  # estimated prompt tokens in one batch at most (null: no such limit)
    batch_bytes_per_token: float = 4.0  # the stated estimate: message bytes per token (no tokenizer for Claude here)
    batch_poll_s: float = 5.0  # first wait between polls of a batch; it grows to at most a minute

    def __post_init__(self) -> None:
        problem = url_problem(self.base_url)
        if problem:
            raise ValueError(f"base_url {self.base_url!r}: {problem}")
        if self.base_url.rstrip("/").endswith("/v1"):
            raise ValueError(f"base_url {self.base_url!r}: give the host without /v1 (as Anthropic's SDK takes it)")
        if self.max_concurrency < 1 or self.retries < 0:
            raise ValueError("max_concurrency must be >= 1 and retries >= 0")
        for name in ("timeout", "requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        limits_of(self)  # the batch_* settings checked


def messages_request(
    model: str, conversation: Conversation, params: SamplingParams, settings: AnthropicSettings
) -> dict[str, Any]:
    """The JSON body of one Messages request."""
    system = [m["content"] for m in conversation if m["role"] == "system"]
    request: dict[str, Any] = {
        "model": model,
        "max_tokens": params.max_new_tokens,
        "messages": [{"role": m["role"], "content": m["content"]} for m in conversation if m["role"] != "system"],
    }
    if system:
        request["system"] = "\n\n".join(system)
    if params.max_reasoning_tokens is not None:
        if params.max_reasoning_tokens < MIN_THINKING:
            raise UserError(
                f"teacher anthropic: extended thinking needs a budget of at least {MIN_THINKING} tokens "
                f"(sampling.max_reasoning_tokens is {params.max_reasoning_tokens})"
            )
        request["thinking"] = {"type": "enabled", "budget_tokens": params.max_reasoning_tokens}
        request["max_tokens"] = params.max_new_tokens + params.max_reasoning_tokens  # the budget is below it
        request["temperature"] = 1.0  # the only temperature extended thinking takes
    else:
        request["temperature"] = params.temperature
        if settings.send_top_p and params.top_p < 1.0:
            request["top_p"] = params.top_p
    if params.stop:
        request["stop_sequences"] = list(params.stop)
    if params.json_schema is not None and settings.structured:
        request["output_config"] = {"format": {"type": "json_schema", "schema": params.json_schema}}
    return request


def parse_message(response: Any, tags: Sequence[str] = THINK_TAGS) -> Completion:
    """A completion from one Messages response; a response of another shape is a teacher error, never a crash."""
    if not isinstance(response, dict) or not isinstance(response.get("content"), list):
        raise TeacherError(f"malformed answer from the server: no content blocks ({str(response)[:80]})")
    texts, thoughts = [], []
    for block in response["content"]:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thoughts.append(block["thinking"])
        elif kind == "redacted_thinking":
            thoughts.append("[redacted thinking]")
    reason = response.get("stop_reason")
    if reason in ("pause_turn", "tool_use"):
        raise TeacherError(f"the server ended the turn with stop_reason {reason!r} (no tools are sent)", False)
    if reason not in STOP and reason not in LENGTH:
        raise TeacherError(f"malformed answer from the server: stop_reason {reason!r}", retryable=False)
    usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
    prompt = sum(
        _count(usage.get(k)) for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    )
    text = "".join(texts)
    reasoning = "\n\n".join(thoughts) or None
    if reasoning is None:
        reasoning, text = split_reasoning(text, tags)
    return Completion(
        text=text.strip(),
        finish_reason="length" if reason in LENGTH else "stop",
        prompt_tokens=prompt,
        completion_tokens=_count(usage.get("output_tokens")),
        extra={"stop_reason": reason},
        reasoning=reasoning.strip() if reasoning else None,
    )


def _count(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TeacherError(f"malformed answer from the server: token count {value!r}")
    return value


_TOO_LONG = re.compile(r"prompt is too long: (?P<has>\d+) tokens > (?P<limit>\d+) maximum")


class AnthropicTeacher(BatchMode, RemoteTeacher):
    """A :class:`~synthforge.teachers.base.Teacher` speaking Anthropic's Messages API to ``settings.base_url``."""

    def __init__(self, model: str, settings: AnthropicSettings, identity: dict[str, Any], tags=THINK_TAGS):
        self.model = model
        self.tags = tuple(tags)
        self._identity = identity
        self.capabilities = anthropic_capabilities(settings)
        key = os.environ.get(settings.api_key_env)
        if not key:
            raise UserError(f"teacher.anthropic.api_key_env: environment variable {settings.api_key_env} is not set")
        headers = {"x-api-key": key, "anthropic-version": settings.version, "user-agent": f"synthforge/{__version__}"}
        super().__init__(settings, headers, "synthforge-anthropic")
        self.batch_setting = "teacher.anthropic.batch"
        self.batches = BatchClient(AnthropicBatches(self.client), limits_of(settings)) if settings.batch else None

    def close(self) -> None:
        """Stop following batches (they go on on the server), then close the client."""
        self.close_batches()
        super().close()

    @property
    def identity(self) -> dict[str, Any]:
        return self._identity

    def ready(self) -> bool:
        """Whether ``GET /v1/models`` lists this model (one try; an alias that isn't listed says no, and the engine
        then sends each stage's first batch alone)."""
        import asyncio

        listed = asyncio.run_coroutine_threadsafe(self.client.get("/v1/models"), self._loop).result()
        models = listed.get("data") if isinstance(listed, dict) else None
        return isinstance(models, list) and any(isinstance(m, dict) and m.get("id") == self.model for m in models)

    def _classify_status(self, exc: StatusError) -> Exception:
        status, detail = exc.status_code, error_detail(exc)
        if status in (401, 403):
            return UserError(
                f"teacher server {self.settings.base_url} refused the request ({status}): {detail} "
                "(check teacher.anthropic.api_key_env)"
            )
        if status == 404:
            return UserError(
                f"teacher server {self.settings.base_url}: {detail} (HTTP 404; is model {self.model!r} right?)"
            )
        too_long = _TOO_LONG.search(detail) if status == 400 else None
        if too_long is not None:
            return TeacherError(
                f"prompt of {too_long['has']} tokens does not fit the teacher's context window of "
                f"{too_long['limit']} tokens",
                retryable=False,
            )
        return TeacherError(f"HTTP {status}: {detail}", retryable=status in (408, 409, 429) or status >= 500)

    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[list[Completion]]:
        """Each conversation's ``n`` samples, one request each (the API has no ``n``)."""
        all_params = per_conversation(params, len(conversations))
        plan = [
            (index, sample, messages_request(self.model, list(conversation), p, self.settings))
            for index, (conversation, p) in enumerate(zip(conversations, all_params, strict=True))
            for sample in range(p.n)
        ]
        if self.batches is not None:  # the sample's number tells equal bodies apart (the API has no seed)
            bodies = [body for _, _, body in plan]
            found = self._batch_answers("/v1/messages", bodies, [["message", s, b] for _, s, b in plan])
            return _grouped(len(conversations), [index for index, _, _ in plan], found, self.tags)
        keys = [stable_hash(["message", sample, body]) for _, sample, body in plan]
        coroutines = [
            self._call(key, lambda b=body: self.client.post("/v1/messages", b), _cost(body))
            for key, (_, _, body) in zip(keys, plan, strict=True)
        ]
        return _grouped(len(conversations), [index for index, _, _ in plan], self._run(coroutines, keys), self.tags)


def _grouped(count: int, owners: list[int], responses: list[Any], tags: Sequence[str]) -> list[list[Completion]]:
    """Each conversation's completions, from responses in plan order (``owners``: the conversation of each)."""
    out: list[list[Completion]] = [[] for _ in range(count)]
    for index, response in zip(owners, responses, strict=True):
        out[index].append(parse_message(response, tags))
    return out


def _cost(body: dict[str, Any]) -> float:
    """Tokens a request may use, estimated before sending (4 characters a token), for tokens_per_minute."""
    text = str(body.get("system", "")) + "".join(str(m.get("content", "")) for m in body["messages"])
    return len(text) / 4 + body["max_tokens"]


def anthropic_capabilities(settings: AnthropicSettings) -> frozenset[str]:
    """No log-probabilities, no raw text; structured outputs when asked for, and extended thinking."""
    found = {GENERATE, THINKING_BUDGET} | ({STRUCTURED} if settings.structured else set())
    return frozenset(found | ({BATCH} if settings.batch else set()))


def ref_overrides(rest: str) -> list[str]:
    """``--set`` assignments for ``--teacher anthropic:MODEL`` or ``anthropic:MODEL@URL`` (a host without /v1)."""
    import json

    match = _URL.match(rest)
    if match is None:
        return [f"teacher.model={json.dumps(rest)}"]
    return [f"teacher.anthropic.base_url={json.dumps(match['url'])}", f"teacher.model={json.dumps(match['model'])}"]


def _identity(spec: TeacherSpec, settings: AnthropicSettings) -> dict[str, Any]:
    return {"backend": "anthropic", "model": spec.model, "seeded": False}  # no seeds: not reproducible from one


BACKEND = Backend(
    name="anthropic",
    settings=AnthropicSettings,
    identity=_identity,
    capabilities=lambda spec, settings: anthropic_capabilities(settings),
    build=lambda spec, settings, identity: AnthropicTeacher(spec.model, settings, identity, spec.tags),
    batch_size=256,
    # in batch mode the engine may queue a whole batch's requests: they go out together
    in_flight=lambda spec, settings: settings.batch_max_requests if settings.batch else settings.max_concurrency,
    remote=True,
    hints={
        CHOICE: "the Messages API returns no log-probabilities: rate answers instead (stage rate, scoring: json)",
        SCORE: "the Messages API returns no log-probabilities",
    },
    ref_overrides=ref_overrides,
)
