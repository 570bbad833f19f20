"""Teacher over any OpenAI-compatible server (vLLM, SGLang, TGI, Ollama, ``synthforge serve``) or a hosted API.

Requests are plain JSON over HTTP (:mod:`synthforge.teachers.http`: the OpenAI SDK's retries, honouring
``Retry-After``, without its per-request model objects); an adaptive
window bounds the requests in flight (see :mod:`synthforge.teachers.flow`). The client runs on its own
event-loop thread, so the synchronous teacher protocol can be called from anywhere.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import re
import sys
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from synthforge import __version__
from synthforge.errors import TeacherError, UserError
from synthforge.hashing import derive_seed, stable_hash
from synthforge.schemas import parse_json
from synthforge.teachers.base import (
    BATCH,
    CHOICE,
    GENERATE,
    LOGPROBS,
    RAW_TEXT,
    SAMPLES,
    SCORE,
    STRUCTURED,
    THINKING_BUDGET,
    Completion,
    Conversation,
    SamplingParams,
    per_conversation,
)
from synthforge.teachers.batch_api import BatchClient, limits_of, request_messages
from synthforge.teachers.batch_mode import BatchMode
from synthforge.teachers.config import Backend, TeacherSpec
from synthforge.teachers.http import error_detail, url_problem
from synthforge.teachers.openai_batches import OpenAIBatches
from synthforge.teachers.reasoning import THINK_TAGS, split_reasoning
from synthforge.teachers.remote import RemoteTeacher

CHOICE_TOKENS = 4  # tokens generated to find where alternative answers such as "(A)" and "(B)" part
_URL = re.compile(r"^(?P<model>.+?)@(?P<url>https?://\S+)$")


def _finite_positive(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass
class OpenAISettings:
    """An OpenAI-compatible HTTP server (vLLM, SGLang, TGI, Ollama, ``synthforge serve``) or a hosted API."""

    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str | None = None  # name of the environment variable holding the key; never the key itself
    max_concurrency: int = 32  # upper bound of requests in flight; the adaptive window stays below it
    timeout: float = 600.0  # seconds per request
    retries: int = 3  # retries as the OpenAI SDK makes them (429 with Retry-After, 5xx, timeouts, dropped connections)
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    native_n: bool = True  # send n in one request; false: fan out n requests with distinct seeds
    score: str = "top_logprobs"  # prompt_logprobs (exact: vLLM, synthforge serve) | top_logprobs | none
    top_logprobs: int = 20
    tokenizer: str | None = None  # a local tokenizer (dir, .gguf, embedded) for the chat template: raw text, Magpie
    revision: str | None = None  # what the server runs, if you know it (goes into the identity, so cache keys)
    batch: bool = False  # send requests through the Batch API (/v1/files, /v1/batches): same answers, not the cache key
    batch_max_requests: int = 50_000  # requests in one batch file at most (OpenAI's limit)
    batch_max_mb: float = 200.0  # size of one batch file at most (OpenAI's limit)
    batch_max_tokens: int | None = None  # prompt tokens in one batch at most (your tier's enqueued-token limit;
    # counted by `tokenizer` when set, else estimated at batch_bytes_per_token); null: no such limit
    batch_bytes_per_token: float = 4.0  # the stated estimate without a tokenizer: message bytes per token
    batch_poll_s: float = 5.0  # first wait between polls of a batch; it grows to at most a minute
    batch_tag: str = "synthforge"  # metadata that marks our batches (beside each one's intent id, the idempotency key)

    def __post_init__(self) -> None:
        problem = url_problem(self.base_url)
        if problem:
            raise ValueError(f"base_url {self.base_url!r}: {problem}")
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        _finite_positive("timeout", self.timeout)
        _finite_positive("requests_per_minute", self.requests_per_minute)
        _finite_positive("tokens_per_minute", self.tokens_per_minute)
        if self.score not in ("prompt_logprobs", "top_logprobs", "none"):
            raise ValueError(f"score must be prompt_logprobs, top_logprobs or none, got {self.score!r}")
        if not 1 <= self.top_logprobs <= 20:
            raise ValueError("top_logprobs must be in [1, 20] (the OpenAI API's limit)")
        limits_of(self)  # the batch_* settings checked


def openai_capabilities(settings: OpenAISettings) -> frozenset[str]:
    """What the backend can do with these settings (known before any request)."""
    # response_format: json_schema (every answer is validated anyway); thinking_token_budget (vLLM's; others ignore it)
    found = {LOGPROBS, STRUCTURED, THINKING_BUDGET} | ({BATCH} if settings.batch else set())
    if settings.score == "prompt_logprobs":
        found |= {SCORE, CHOICE}
    elif settings.score == "top_logprobs":
        found.add(CHOICE)
    if settings.tokenizer:
        found.add(RAW_TEXT)
    return frozenset(found)


def resolve_api_key(settings: OpenAISettings) -> str:
    """The API key from the environment variable the settings name ("EMPTY" when none is named)."""
    if settings.api_key_env is None:
        return "EMPTY"  # local servers accept any key
    key = os.environ.get(settings.api_key_env)
    if not key:
        raise UserError(f"teacher.openai.api_key_env: environment variable {settings.api_key_env} is not set")
    return key


def chat_request(model: str, conversation: Conversation, params: SamplingParams, n: int) -> dict[str, Any]:
    """The JSON body of a chat completion request for one conversation."""
    request: dict[str, Any] = {
        "model": model,
        "messages": conversation,
        "n": n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_new_tokens,
    }
    if params.stop:
        request["stop"] = list(params.stop)
    if params.seed is not None:
        request["seed"] = params.seed
    if params.logprobs is not None:
        request["logprobs"] = True
        request["top_logprobs"] = params.logprobs
    if params.json_schema is not None:
        request["response_format"] = response_format(params.json_schema)
    if params.max_reasoning_tokens is not None:  # vLLM's name (a server with a reasoning parser ends thinking there)
        request["thinking_token_budget"] = params.max_reasoning_tokens
    return request


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI ``response_format`` asking for JSON of ``schema`` (vLLM, SGLang and synthforge serve constrain
    decoding to it; a server that ignores it still has its answer validated by the stage)."""
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


def completion_request(model: str, text: str, params: SamplingParams, n: int) -> dict[str, Any]:
    """The JSON body of a ``/v1/completions`` request (raw text, no chat template) for one prompt."""
    request = chat_request(model, [], params, n)
    del request["messages"]
    request["prompt"] = text
    if params.logprobs is not None:
        request["logprobs"] = params.logprobs
        del request["top_logprobs"]
    return request


def _finish_reason(reason: str | None) -> str:
    if reason == "length":
        return "length"
    if reason in ("stop", "eos", "end_turn", None):
        return "stop"
    raise TeacherError(f"server ended a completion with finish_reason {reason!r}", retryable=False)


def _chat_logprobs(choice: Any) -> list[dict[str, Any]] | None:
    content = _get(_get(choice, "logprobs"), "content")
    if content is None:
        return None
    try:
        return [
            {
                "token": str(t["token"]),
                "logprob": float(t["logprob"]),
                "top": [[str(a["token"]), float(a["logprob"])] for a in (t.get("top_logprobs") or [])],
            }
            for t in content
        ]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise TeacherError(f"malformed answer from the server: bad logprobs ({exc})") from None


def _parse_choices(
    response: Any, n: int, text_of, logprobs_of, tags: Sequence[str] = THINK_TAGS, reasoning_of=lambda c: None
) -> list[Completion]:
    """Completions of one response (chat or raw text): exactly ``n`` choices, each with text, or a teacher error.
    A response of another shape (a server bug, a proxy's error page) is a teacher error too, never a crash.
    Thinking is what the server returned apart (``reasoning_of``), else what the text holds between ``tags``."""
    choices = _get(response, "choices")
    if not isinstance(choices, list) or not all(isinstance(_get(c, "index"), int) for c in choices):
        raise TeacherError(f"malformed answer from the server: no list of choices ({_shape(response)})")
    choices = sorted(choices, key=lambda c: c["index"])
    if len(choices) != n:
        raise TeacherError(f"server returned {len(choices)} choices, expected {n}")
    usage = _get(response, "usage")
    prompt_tokens = _count(_get(usage, "prompt_tokens", 0), "usage.prompt_tokens")
    completion_tokens = _count(_get(usage, "completion_tokens", 0), "usage.completion_tokens")
    completions = []
    for k, choice in enumerate(choices):
        text, reasoning = text_of(choice), reasoning_of(choice)
        if reasoning is not None and not isinstance(reasoning, str):
            raise TeacherError(f"malformed answer from the server: reasoning is {type(reasoning).__name__}, not text")
        if text is None and reasoning:
            text = ""  # it only thought (cut by max_tokens): no answer
        if text is None:
            raise TeacherError("server returned a choice without message content")
        if not isinstance(text, str):
            raise TeacherError(f"malformed answer from the server: choice text is {type(text).__name__}, not text")
        logprobs = logprobs_of(choice)
        count = len(logprobs) if logprobs is not None else _share(completion_tokens, n, k)
        if not reasoning:
            reasoning, text = split_reasoning(text, tags)
        completions.append(
            Completion(
                text=text.strip(),
                reasoning=reasoning.strip() if reasoning else None,
                finish_reason=_finish_reason(_get(choice, "finish_reason")),  # type: ignore[arg-type]
                prompt_tokens=prompt_tokens,
                completion_tokens=count,
                logprobs=logprobs,
            )
        )
    return completions


def _count(value: Any, what: str) -> int:
    """A token count the server reported (absent: 0); anything but a non-negative integer is a teacher error."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TeacherError(f"malformed answer from the server: {what} is {value!r}, not a token count")
    return value


def _shape(response: Any) -> str:
    text = response if isinstance(response, str) else type(response).__name__
    return text[:80]


def parse_chat_response(response: Any, n: int, tags: Sequence[str] = THINK_TAGS) -> list[Completion]:
    """Completions of one chat response (its JSON); a response without its ``n`` choices or text is a teacher
    error. A server's ``reasoning_content`` (vLLM's older name, transformers serve, DeepSeek) or ``reasoning``
    (vLLM's newer one) is the thinking."""
    return _parse_choices(
        response, n, lambda c: _get(_get(c, "message"), "content"), _chat_logprobs, tags, _message_reasoning
    )


def _message_reasoning(choice: Any) -> Any:
    message = _get(choice, "message")
    found = _get(message, "reasoning_content")
    return found if found is not None else _get(message, "reasoning")


def parse_completion_response(response: Any, n: int, tags: Sequence[str] = ()) -> list[Completion]:
    """Completions of one ``/v1/completions`` response (its JSON); a text continuation is whole unless ``tags``."""
    return _parse_choices(response, n, lambda c: _get(c, "text"), lambda c: None, tags)


def _share(total: int, n: int, k: int) -> int:
    """Sample ``k``'s share of ``total`` tokens (servers report usage per request, not per choice)."""
    return total // n + (1 if k < total % n else 0)


def trailing_logprob(entries: Sequence[Any], continuation: str) -> float:
    """Sum of the log-probabilities of the last prompt tokens that spell ``continuation``.

    ``entries`` is a server's ``prompt_logprobs`` (vLLM's layout: per prompt token ``None`` or
    ``{token_id: {"logprob", "rank", "decoded_token"}}``, the prompt token itself among them).
    """
    total, spelled = 0.0, ""
    for entry in reversed(entries):
        if len(spelled) >= len(continuation):
            break
        if not entry:
            raise TeacherError("server returned no log-probability for a continuation token", retryable=False)
        info = next(iter(entry.values()))  # asked with prompt_logprobs=0: the prompt token alone
        total += float(_get(info, "logprob"))
        spelled = str(_get(info, "decoded_token", "")) + spelled
    if len(spelled) < len(continuation):
        raise TeacherError("server's prompt log-probabilities do not cover the continuation", retryable=False)
    return total


def _get(value: Any, key: str, default: Any = None) -> Any:
    """``value[key]`` of a JSON object, else ``default`` (a value of another shape has no keys)."""
    return value.get(key, default) if isinstance(value, dict) else default


def options_from_top_logprobs(options: Sequence[str], positions: Sequence[dict[str, Any]]) -> list[float]:
    """Log-probabilities of alternative answers read from a greedy answer's top log-probabilities.

    The options' common prefix (``(`` for ``(A)``/``(B)``) is found in the generated text; at the next
    position each option's score is the log-sum-exp of the top tokens that start its remainder. Shared
    prefix tokens cancel when the options are normalised against each other. An option absent from the top
    list gets one nat below the least likely listed token (an upper bound of its true value).
    """
    prefix = os.path.commonprefix(list(options))
    spelled = ""
    for position in positions:
        if spelled.rstrip().endswith(prefix) or (not prefix and not spelled.strip()):
            top = [(str(tok), float(lp)) for tok, lp in position.get("top") or []]
            if not top:
                top = [(position["token"], float(position["logprob"]))]
            scores = [_option_score(option[len(prefix) :], top) for option in options]
            if any(s is not None for s in scores):
                floor = min(lp for _, lp in top) - 1.0
                return [floor if s is None else s for s in scores]
        spelled += str(position["token"])
    raise TeacherError(f"the answer {spelled!r} names none of {', '.join(options)}", retryable=False)


def _option_score(remainder: str, top: list[tuple[str, float]]) -> float | None:
    matches = [lp for tok, lp in top if tok.strip() and remainder.startswith(tok.strip())]
    if not matches:
        return None
    peak = max(matches)
    return peak + math.log(sum(math.exp(lp - peak) for lp in matches))


class OpenAITeacher(BatchMode, RemoteTeacher):
    """A :class:`~synthforge.teachers.base.Teacher` speaking the OpenAI API to ``settings.base_url``."""

    def __init__(
        self,
        model: str,
        settings: OpenAISettings,
        identity: dict[str, Any],
        tokenizer: Any = None,
        tags: Sequence[str] = THINK_TAGS,
    ):
        self.model = model
        self.tags = tuple(tags)
        self.settings = settings
        self._identity = identity
        self.capabilities = openai_capabilities(settings)
        self.native_n = settings.native_n  # turned off when the server turns out to ignore n
        self.tokenizer = tokenizer
        headers = {"authorization": f"Bearer {resolve_api_key(settings)}", "user-agent": f"synthforge/{__version__}"}
        super().__init__(settings, headers, "synthforge-openai")
        self.batches: BatchClient | None = None
        self.batch_setting = "teacher.openai.batch"
        if settings.batch:
            provider = OpenAIBatches(self.client, settings.batch_tag)
            tokens = self._prompt_tokens if tokenizer else None
            self.batches = BatchClient(provider, limits_of(settings), tokens=tokens)

    @property
    def identity(self) -> dict[str, Any]:
        return self._identity

    def _prompt_tokens(self, line: bytes) -> int:
        """A batch request line's prompt tokens, by the local tokenizer's chat template."""
        messages, _ = request_messages(line)
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def close(self) -> None:
        """Stop following batches (they go on on the server), then close the client."""
        self.close_batches()
        super().close()

    def no_batch_api_hint(self) -> str:
        return ", or start synthforge serve --state-dir"

    def ready(self) -> bool:
        """Whether the server lists this model at ``GET /models`` (one try): it is up, takes our key and serves
        the model, so the engine needn't send each stage's first batch alone to find out."""
        listed = asyncio.run_coroutine_threadsafe(self.client.get("/models"), self._loop).result()
        models = _get(listed, "data") if isinstance(listed, dict) else None
        return isinstance(models, list) and any(_get(m, "id") == self.model for m in models)

    # -- flow control (teachers.remote.RemoteTeacher) ---------------------------------------------
    def _classify_status(self, exc: Any) -> Exception:
        status = exc.status_code
        detail = error_detail(exc)
        if status in (401, 403):
            return UserError(
                f"teacher server {self.settings.base_url} refused the request ({status}): {detail} "
                f"(check teacher.openai.api_key_env)"
            )
        if status == 404:
            return UserError(
                f"teacher server {self.settings.base_url}: {detail} (HTTP 404; is model {self.model!r} served?)"
            )
        too_long = context_overflow(detail) if status == 400 else None
        if too_long is not None:
            return TeacherError(too_long, retryable=False)
        retryable = status in (408, 409, 429) or status >= 500
        return TeacherError(f"HTTP {status}: {detail}", retryable=retryable)

    # -- the teacher protocol -------------------------------------------------------------------
    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[list[Completion]]:
        all_params = per_conversation(params, len(conversations))
        return self._sample(
            [chat_request(self.model, list(c), p, 1) for c, p in zip(conversations, all_params, strict=True)],
            all_params,
            "/chat/completions",
            functools.partial(parse_chat_response, tags=self.tags),
        )

    def complete(
        self, texts: Sequence[str], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[list[Completion]]:
        """Continue raw texts through ``/v1/completions`` (no chat template applied by the server)."""
        all_params = per_conversation(params, len(texts))
        return self._sample(
            [completion_request(self.model, t, p, 1) for t, p in zip(texts, all_params, strict=True)],
            all_params,
            "/completions",
            parse_completion_response,
        )

    def _post(self, path: str, body: dict[str, Any]) -> Awaitable[Any]:
        """POST ``body`` as it is; the JSON answer, parsed by the caller."""
        return self.client.post(path, body)

    def _send_all(self, path: str, requests: list[dict[str, Any]], what: str) -> list[Any]:
        """Each request's JSON answer: online under the window and rate limits, or through the Batch API."""
        if self.batches is not None:
            return self._batch_answers("/v1" + path, requests)
        keys = [stable_hash([what, r]) for r in requests]
        coroutines = [
            self._call(key, lambda r=r: self._post(path, r), _cost(r)) for key, r in zip(keys, requests, strict=True)
        ]
        return self._run(coroutines, keys)

    def _sample(self, requests, all_params, path: str, parse) -> list[list[Completion]]:
        """Send each request with its ``n`` samples natively, or fanned out with distinct seeds."""
        plan: list[tuple[int, dict[str, Any]]] = []
        for index, (request, params) in enumerate(zip(requests, all_params, strict=True)):
            if self.native_n or params.n == 1:
                plan.append((index, {**request, "n": params.n}))
            else:
                for j in range(params.n):
                    seed = None if params.seed is None else derive_seed(params.seed, j)
                    plan.append((index, {**request, **({"seed": seed} if seed is not None else {})}))
        responses = self._send_all(path, [r for _, r in plan], "sample")
        if self.native_n and any(_ignored_n(r, request["n"]) for (_, request), r in zip(plan, responses, strict=True)):
            self.native_n = False  # the server answered n > 1 with one choice: ask once per sample from now on
            print(
                f"synthforge: teacher server {self.settings.base_url} ignores 'n'; sending one request per sample "
                "(set teacher.openai.native_n: false to say so)",
                file=sys.stderr,
            )
            return self._sample(requests, all_params, path, parse)
        out: list[list[Completion]] = [[] for _ in requests]
        for (index, request), response in zip(plan, responses, strict=True):
            out[index].extend(parse(response, request["n"]))
        return out

    def score(self, conversations: Sequence[Conversation], continuations: Sequence[Sequence[str]]) -> list[list[float]]:
        """Exact log-probabilities through prompt log-probabilities (vLLM's and ``synthforge serve``'s
        ``prompt_logprobs`` with ``continue_final_message``)."""
        if self.settings.score != "prompt_logprobs":
            raise TeacherError(
                f"teacher.openai.score is {self.settings.score!r}: exact scores need prompt_logprobs", retryable=False
            )
        plan = [
            (c, k, list(conv), cand)
            for c, (conv, cands) in enumerate(zip(conversations, continuations, strict=True))
            for k, cand in enumerate(cands)
        ]
        requests = [
            {
                "model": self.model,
                "messages": [*conv, {"role": "assistant", "content": cand}],
                "max_tokens": 1,
                "temperature": 0.0,
                "prompt_logprobs": 0,
                "continue_final_message": True,
                "add_generation_prompt": False,
            }
            for _, _, conv, cand in plan
        ]
        responses = self._send_all("/chat/completions", requests, "score")
        scores: list[list[float]] = [[0.0] * len(cands) for cands in continuations]
        for (c, k, _, cand), response in zip(plan, responses, strict=True):
            entries = _get(response, "prompt_logprobs")
            if not entries:
                raise UserError(
                    f"teacher server {self.settings.base_url} returned no prompt_logprobs (it doesn't support them): "
                    "set teacher.openai.score to top_logprobs for this server"
                )
            scores[c][k] = trailing_logprob(entries, cand)
        return scores

    def choose(self, conversations: Sequence[Conversation], options: Sequence[Sequence[str]]) -> list[list[float]]:
        """Log-probabilities of short alternative answers from a greedy answer's top log-probabilities."""
        params = self._choice_params()
        answers = self.generate(conversations, params)
        return [
            options_from_top_logprobs(list(opts), self._logprobs_of(answer))
            for opts, (answer, *_) in zip(options, answers, strict=True)
        ]

    def _choice_params(self) -> SamplingParams:
        """A judge's short greedy answer, with its top log-probabilities."""
        return SamplingParams(
            temperature=0.0, top_p=1.0, max_new_tokens=CHOICE_TOKENS, logprobs=self.settings.top_logprobs
        )

    def _logprobs_of(self, answer: Completion) -> list[dict[str, Any]]:
        """The answer's token log-probabilities; a server that ignores ``logprobs`` is one line."""
        if not answer.logprobs:
            raise UserError(
                f"teacher server {self.settings.base_url} returned no logprobs for the judge's answer (it ignores "
                "'logprobs'), so the judge can't read its choice there: point teacher.openai.base_url at a server "
                "that returns them (vLLM, synthforge serve; there teacher.openai.score: prompt_logprobs is exact)"
            )
        return answer.logprobs

    # -- what the server really does -----------------------------------------------------------------
    def probe(self, needs: frozenset[str]) -> list[str]:
        """One tiny request per need the server might accept and ignore (``transformers serve`` ignores
        ``logprobs``): a judge's log-probabilities have no fallback (one line, before any stage's work is sent);
        ``n`` falls back to one request per sample, a schema to validate-and-retry."""
        said: list[str] = []
        if self.batches is not None:  # a probe would be a batch of its own, waited for: nothing is asked up front
            return said
        hello: Conversation = [{"role": "user", "content": "Say yes."}]
        if CHOICE in needs and SCORE in self.capabilities:
            self.score([hello], [["yes"]])  # raises the one line if the server has no prompt_logprobs
        elif CHOICE in needs:  # whatever the model answers, the server must send its log-probabilities
            self._logprobs_of(self.generate([hello], self._choice_params())[0][0])
        if SAMPLES in needs and self.native_n:  # a server ignoring n answers with one choice: _sample says so
            self.generate([hello], SamplingParams(temperature=1.0, max_new_tokens=1, n=2, seed=0))
        if STRUCTURED in needs:
            schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
            params = SamplingParams(temperature=0.0, max_new_tokens=16, json_schema=schema)
            (answer, *_), *_ = self.generate([hello], params)
            if parse_json(answer.text)[0] is None:
                said.append(
                    f"teacher server {self.settings.base_url} doesn't constrain answers to a schema "
                    "(response_format): every answer is validated, and asked again when it isn't valid"
                )
        return said

    def render_chat(self, conversation: Conversation, add_generation_prompt: bool = False) -> str:
        """The conversation rendered by the local tokenizer's chat template (``teacher.openai.tokenizer``)."""
        if self.tokenizer is None:
            raise UserError("teacher.openai.tokenizer is not set: raw-text prompts need the model's chat template")
        return self.tokenizer.apply_chat_template(
            conversation, add_generation_prompt=add_generation_prompt, tokenize=False
        )


def _ignored_n(response: Any, n: int) -> bool:
    """A server that ignores ``n`` answers a request for several samples with one."""
    choices = _get(response, "choices")
    return n > 1 and isinstance(choices, list) and len(choices) == 1


def _cost(request: dict[str, Any]) -> float:
    """Tokens a request may use, estimated before sending (4 characters a token) for tokens-per-minute."""
    text = request.get("prompt") or "".join(m.get("content", "") for m in request.get("messages", []))
    return len(text) / 4 + request.get("max_tokens", 0) * request.get("n", 1)


_CONTEXT = re.compile(
    r"maximum context length is (?P<limit>\d+) tokens.*?(?:request has (?P<has>\d+) input tokens|"
    r"requested \d+ tokens \((?P<messages>\d+) in the messages)",
    re.DOTALL,
)


def context_overflow(detail: str) -> str | None:
    """A server's "prompt too long for the context window" answer (vLLM's wording, which ``synthforge serve``
    uses too), said as the in-process teacher says it, so the record is ledgered the same way; else None."""
    match = _CONTEXT.search(detail)
    if match is None:
        return None
    tokens = match["has"] or match["messages"]
    return f"prompt of {tokens} tokens does not fit the teacher's context window of {match['limit']} tokens"


def ref_overrides(rest: str) -> list[str]:
    """``--set`` assignments for ``--teacher openai:MODEL@URL`` (or ``openai:MODEL``: the pipeline's URL)."""
    if "@" not in rest:
        return [f"teacher.model={json.dumps(rest)}"]
    match = _URL.match(rest)
    if not match:
        raise UserError(
            f"--teacher 'openai:{rest}': the server after '@' must be a URL starting with http:// or https://, "
            "e.g. openai:MODEL@http://127.0.0.1:8000/v1"
        )
    problem = url_problem(match["url"])
    if problem:
        raise UserError(f"--teacher 'openai:{rest}': {match['url']} {problem}")
    return [f"teacher.openai.base_url={json.dumps(match['url'])}", f"teacher.model={json.dumps(match['model'])}"]


def _identity(spec: TeacherSpec, settings: OpenAISettings) -> dict[str, Any]:
    return {
        "backend": "openai",
        "model": spec.model,
        "revision": settings.revision,
        "score": settings.score,
        "top_logprobs": settings.top_logprobs if settings.score == "top_logprobs" else None,
        "native_n": settings.native_n,
    }


def _build(spec: TeacherSpec, settings: OpenAISettings, identity: dict[str, Any]) -> OpenAITeacher:
    tokenizer = None
    if settings.tokenizer:  # only then torch and transformers are imported
        from synthforge.models import load_tokenizer

        tokenizer = load_tokenizer(settings.tokenizer)
    return OpenAITeacher(spec.model, settings, identity, tokenizer, spec.tags)


BACKEND = Backend(
    name="openai",
    settings=OpenAISettings,
    identity=_identity,
    capabilities=lambda spec, settings: frozenset({GENERATE}) | openai_capabilities(settings),
    build=_build,
    batch_size=256,
    # in batch mode the engine may queue a whole batch file's requests: they go out together
    in_flight=lambda spec, settings: settings.batch_max_requests if settings.batch else settings.max_concurrency,
    tokenizer=lambda spec, settings: settings.tokenizer,
    remote=True,
    hints={
        CHOICE: "set teacher.openai.score to top_logprobs (hosted APIs) or prompt_logprobs (vLLM, synthforge serve)",
        RAW_TEXT: "set teacher.openai.tokenizer to a local copy of the model's tokenizer (its chat template)",
    },
    ref_overrides=ref_overrides,
)
