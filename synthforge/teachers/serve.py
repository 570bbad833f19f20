"""``synthforge serve``: an OpenAI-compatible HTTP server over an in-process teacher, with dynamic batching.

Requests that arrive together are run together: a worker thread takes the first waiting request, collects
more for up to ``wait_ms`` milliseconds or until ``max_batch`` samples, and hands them to the teacher in one
call. Each request keeps its own seed, so its output doesn't depend on which requests shared its batch.

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` (n, temperature, top_p, max_tokens /
max_completion_tokens, stop, seed, logprobs / top_logprobs, usage; vLLM's ``prompt_logprobs`` with
``continue_final_message`` scores a final assistant message), ``POST /v1/completions`` (prompt, echo +
logprobs). Bad requests get an OpenAI-style error object (400/401/404), never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import queue
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from synthforge.teachers.base import Completion, SamplingParams

MAX_N = 16


class BadRequest(Exception):
    """A request the client must fix: answered with an OpenAI-style error object."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.kind = status, param, kind


@dataclass
class _Job:
    kind: str  # "chat" | "text"
    prompt: Any  # a conversation or a raw text
    params: SamplingParams
    done: Callable[[Any], None]
    samples: int = 1


@dataclass
class Batcher:
    """Runs concurrent requests on one teacher in batches: collect for ``wait_ms`` or up to ``max_batch``."""

    teacher: Any
    max_batch: int = 16
    wait_ms: float = 5.0
    batches: list[int] = field(default_factory=list)  # samples per teacher call, for tests and stats
    _queue: queue.Queue = field(default_factory=queue.Queue)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="synthforge-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)

    async def run(self, kind: str, prompt: Any, params: SamplingParams) -> list[Completion]:
        """Queue one request and wait for its completions."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def done(result: Any) -> None:
            def settle() -> None:
                if future.done():
                    return
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

            loop.call_soon_threadsafe(settle)

        self._queue.put(_Job(kind, prompt, params, done, params.n))
        return await future

    def _collect(self, first: _Job) -> list[_Job]:
        jobs, samples = [first], first.samples
        deadline = time.monotonic() + self.wait_ms / 1000.0
        while samples < self.max_batch:
            try:
                job = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)
                break
            jobs.append(job)
            samples += job.samples
        return jobs

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = self._collect(first)
            for kind in ("chat", "text"):
                group = [j for j in jobs if j.kind == kind]
                if group:
                    self._run_group(kind, group)

    def _run_group(self, kind: str, jobs: list[_Job]) -> None:
        self.batches.append(sum(j.samples for j in jobs))
        call = self.teacher.generate if kind == "chat" else self.teacher.complete
        try:
            results = call([j.prompt for j in jobs], [j.params for j in jobs])
        except Exception as exc:  # noqa: BLE001 - reported to each waiting request as a server error
            traceback.print_exc(file=sys.stderr)
            for job in jobs:
                job.done(exc)
            return
        for job, result in zip(jobs, results, strict=True):
            job.done(result)


# -- request validation ------------------------------------------------------------------------------
def _number(body: dict, key: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"{key} must be a finite number", param=key)
    if value < low or value > high or (low_open and value == low):
        raise BadRequest(f"{key} must be in {'(' if low_open else '['}{low}, {high}]", param=key)
    return float(value)


def _integer(body: dict, key: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{key} must be an integer", param=key)
    if not low <= value <= high:
        raise BadRequest(f"{key} must be in [{low}, {high}]", param=key)
    return value


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 16:
        return tuple(stop)
    raise BadRequest("stop must be a string or a list of at most 16 strings", param="stop")


def sampling_from_request(body: dict, default_max_tokens: int, logprobs: int | None) -> SamplingParams:
    """Our sampling parameters from an OpenAI request body (OpenAI's defaults: temperature 1, top_p 1)."""
    max_tokens = _integer(body, "max_completion_tokens", None, 1, 1 << 20)
    max_tokens = _integer(body, "max_tokens", max_tokens or default_max_tokens, 1, 1 << 20)
    return SamplingParams(
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
        max_new_tokens=max_tokens or default_max_tokens,
        n=_integer(body, "n", 1, 1, MAX_N) or 1,
        stop=_stop(body),
        seed=_integer(body, "seed", None, -(1 << 63), (1 << 63) - 1),
        logprobs=logprobs,
    )


def _messages(body: dict) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list of {role, content} objects", param="messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a role", param="messages")
        if message["role"] not in ("system", "user", "assistant"):
            raise BadRequest(f"messages[{i}].role must be system, user or assistant", param="messages")
        content = message.get("content")
        if isinstance(content, list):  # content parts: text only
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise BadRequest(f"messages[{i}].content: only text parts are supported", param="messages")
            content = "".join(str(p.get("text", "")) for p in content)
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string", param="messages")
        out.append({"role": message["role"], "content": content})
    return out


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _chat_logprobs(completion: Completion) -> dict[str, Any] | None:
    if completion.logprobs is None:
        return None
    return {
        "content": [
            {
                "token": entry["token"],
                "logprob": entry["logprob"],
                "bytes": list(entry["token"].encode("utf-8")),
                "top_logprobs": [
                    {"token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8"))} for tok, lp in entry["top"]
                ],
            }
            for entry in completion.logprobs
        ]
    }


# -- the application ---------------------------------------------------------------------------------
@dataclass
class ServeConfig:
    """What ``synthforge serve`` serves and how."""

    model_name: str
    api_key: str | None = None
    max_batch: int = 16
    wait_ms: float = 5.0
    default_max_tokens: int = 256


def build_app(teacher: Any, config: ServeConfig) -> Any:
    """The Starlette application serving ``teacher`` under ``config.model_name``."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    batcher = Batcher(teacher, max_batch=config.max_batch, wait_ms=config.wait_ms)

    def error(message: str, status: int, kind: str = "invalid_request_error", param: str | None = None):
        body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
        return JSONResponse(body, status_code=status)

    def check_key(request: Request) -> None:
        if config.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {config.api_key}".encode()):
            raise BadRequest("invalid or missing API key", status=401, kind="authentication_error")

    async def body_of(request: Request) -> dict:
        check_key(request)
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        model = body.get("model")
        if model != config.model_name:
            raise BadRequest(
                f"The model {model!r} does not exist (this server serves {config.model_name!r})",
                status=404,
                param="model",
                kind="not_found_error",
            )
        if body.get("stream"):
            raise BadRequest("stream is not supported", param="stream")
        return body

    def envelope(kind: str, choices: list, prompt_tokens: int, completion_tokens: int, **extra: Any) -> dict:
        prefix = "chatcmpl" if kind == "chat.completion" else "cmpl"
        return {
            "id": f"{prefix}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": config.model_name,
            "choices": choices,
            "usage": _usage(prompt_tokens, completion_tokens),
            **extra,
        }

    def token_logprobs(conversation: Any, text: str) -> tuple[int, list]:
        scorer = getattr(teacher, "continuation_token_logprobs", None)
        if scorer is None:
            raise BadRequest("prompt log-probabilities are not supported by this server's backend")
        return scorer(conversation, text)

    async def chat(request: Request) -> JSONResponse:
        body = await body_of(request)
        messages = _messages(body)
        top = _integer(body, "top_logprobs", None, 0, 20)
        logprobs = body.get("logprobs")
        if logprobs not in (None, True, False):
            raise BadRequest("logprobs must be a boolean", param="logprobs")
        params = sampling_from_request(body, config.default_max_tokens, (top or 0) if logprobs else None)
        prompt_logprobs = _integer(body, "prompt_logprobs", None, 0, 20)
        if prompt_logprobs is not None:
            return await score_final_message(body, messages, params)
        completions = await batcher.run("chat", messages, params)
        choices = [
            {
                "index": k,
                "message": {"role": "assistant", "content": c.text},
                "finish_reason": c.finish_reason,
                "logprobs": _chat_logprobs(c),
            }
            for k, c in enumerate(completions)
        ]
        used = sum(c.completion_tokens for c in completions)
        return JSONResponse(envelope("chat.completion", choices, completions[0].prompt_tokens, used))

    async def score_final_message(body: dict, messages: list, params: SamplingParams) -> JSONResponse:
        """vLLM's scoring idiom: prompt_logprobs + continue_final_message scores the last assistant message."""
        if not body.get("continue_final_message") or messages[-1]["role"] != "assistant":
            raise BadRequest(
                "prompt_logprobs needs continue_final_message: true and a final assistant message to score",
                param="prompt_logprobs",
            )
        if params.n != 1:
            raise BadRequest("prompt_logprobs needs n = 1", param="n")
        prefix_len, tokens = await asyncio.to_thread(token_logprobs, messages[:-1], messages[-1]["content"])
        entries: list[Any] = [None] * prefix_len
        entries += [
            None if lp is None else {str(tid): {"logprob": lp, "rank": None, "decoded_token": text}}
            for tid, text, lp in tokens
        ]
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": ""},
            "finish_reason": "length",
            "logprobs": None,
        }
        return JSONResponse(envelope("chat.completion", [choice], len(entries), 0, prompt_logprobs=entries))

    async def completions(request: Request) -> JSONResponse:
        body = await body_of(request)
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise BadRequest("prompt must be a string or a non-empty list of strings", param="prompt")
        echo = bool(body.get("echo"))
        top = _integer(body, "logprobs", None, 0, 20)
        zero_tokens = echo and body.get("max_tokens") == 0
        request_body = {k: v for k, v in body.items() if not (zero_tokens and k == "max_tokens")}
        params = sampling_from_request(request_body, config.default_max_tokens, top)
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for p_index, text in enumerate(prompts):
            echoed = await asyncio.to_thread(token_logprobs, None, text) if echo and top is not None else None
            generated = [] if zero_tokens else await batcher.run("text", text, params)
            samples = generated or [Completion("", "length", len(echoed[1]) if echoed else 0, 0)]
            for k, sample in enumerate(samples):
                choice: dict[str, Any] = {
                    "index": p_index * params.n + k,
                    "text": (text if echo else "") + sample.text,
                    "finish_reason": sample.finish_reason,
                    "logprobs": _text_logprobs(echoed, sample, text if echo else "") if top is not None else None,
                }
                choices.append(choice)
                completion_tokens += sample.completion_tokens
            prompt_tokens += samples[0].prompt_tokens
        return JSONResponse(envelope("text_completion", choices, prompt_tokens, completion_tokens))

    async def models(request: Request) -> JSONResponse:
        check_key(request)
        data = [{"id": config.model_name, "object": "model", "created": 0, "owned_by": "synthforge"}]
        return JSONResponse({"object": "list", "data": data})

    async def on_bad_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BadRequest)
        return error(str(exc), exc.status, exc.kind, exc.param)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        status = getattr(exc, "status_code", 500)
        return error(str(getattr(exc, "detail", "error")), status, "invalid_request_error")

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        traceback.print_exception(exc, file=sys.stderr)
        return error(f"internal error: {type(exc).__name__}", 500, "server_error")

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        batcher.start()
        yield
        batcher.stop()

    app = Starlette(
        routes=[
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
        ],
        exception_handlers={BadRequest: on_bad_request, HTTPException: on_http, Exception: on_error},
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    return app


def _text_logprobs(echoed: tuple[int, list] | None, sample: Completion, prefix: str) -> dict[str, Any]:
    """The legacy completions ``logprobs`` object: tokens, their log-probabilities, text offsets."""
    tokens, values, tops, offsets, position = [], [], [], [], 0
    for _, text, lp in echoed[1] if echoed else []:
        tokens.append(text)
        values.append(lp)
        tops.append(None)
        offsets.append(position)
        position += len(text)
    position = len(prefix)
    for entry in sample.logprobs or []:
        tokens.append(entry["token"])
        values.append(entry["logprob"])
        tops.append(dict(entry["top"]))
        offsets.append(position)
        position += len(entry["token"])
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


def serve(teacher: Any, config: ServeConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted."""
    import uvicorn

    uvicorn.run(build_app(teacher, config), host=host, port=port, log_level="warning", access_log=False)
