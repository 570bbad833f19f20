"""The HTTP application of ``synthforge serve``: OpenAI-compatible endpoints over one in-process teacher.

``GET /v1/models``, ``POST /v1/chat/completions`` (n, temperature, top_p, max_tokens / max_completion_tokens,
stop, seed, logprobs / top_logprobs, usage, stream; vLLM's ``prompt_logprobs`` with ``continue_final_message``
scores a final assistant message), ``POST /v1/completions`` (a prompt or a list of them, echo + logprobs,
stream). Bad requests get an OpenAI-style error object (400/401/404/413), never a traceback; a prompt that does
not fit the context window is a 400 in vLLM's words; a request whose client has gone is not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import sys
import traceback
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from synthforge.files import exclusive_lock
from synthforge.serve.batcher import Batcher
from synthforge.serve.batches import BatchError, BatchRequestFailed, BatchRunner, BatchSettings, BatchStore
from synthforge.serve.protocol import (
    BadRequest,
    chat_choices,
    context_error,
    envelope,
    integer,
    messages_of,
    parse_body,
    sampling_from_request,
    stream_events,
    stream_options,
    text_logprobs,
    usage_of,
)
from synthforge.teachers.base import (
    CONTINUOUS,
    PROMPT_LOGPROBS,
    STRUCTURED,
    THINKING_BUDGET,
    TOKENS,
    Completion,
    SamplingParams,
    capabilities_of,
)

DISCONNECT_POLL_S = 0.1
DRAIN_LIMIT = 16  # a body this many times the limit is not even read to the end


@dataclass
class ServeConfig:
    """What ``synthforge serve`` serves and how."""

    model_name: str
    api_key: str | None = None
    max_batch: int = 16
    wait_ms: float = 5.0
    default_max_tokens: int = 256
    max_body_bytes: int = 8 << 20  # a larger request body is answered 413
    max_prompts: int = 256  # prompts in one /v1/completions request
    batch: BatchSettings | None = None  # the Batch API (/v1/files, /v1/batches), its state kept there


@dataclass
class Answered:
    """What an endpoint answers, before its HTTP shape (a JSON body, a stream, or a Batch API result line)."""

    kind: str
    choices: list
    prompt_tokens: int
    used: int  # completion tokens
    extra: dict = field(default_factory=dict)


class ClientGone(Exception):
    """The client closed its connection before its answer was ready: its work is dropped."""


class Server:
    """``synthforge serve``'s handlers over one teacher: requests checked, queued to the teacher (its running
    batch, or the batcher), answered in OpenAI's shapes."""

    def __init__(self, teacher: Any, config: ServeConfig):
        self.teacher = teacher
        self.config = config
        self.batcher = Batcher(teacher, max_batch=config.max_batch, wait_ms=config.wait_ms)
        self.capabilities = capabilities_of(teacher)
        self.interactive = 0  # interactive requests running (Batch API requests yield to them)
        self.batches: BatchStore | None = None
        self.runner: BatchRunner | None = None
        self._lock = contextlib.ExitStack()
        if config.batch is not None:
            folder = config.batch.state_dir
            busy = f"--state-dir {folder}: another synthforge serve keeps its batches there (pid {{pid}})"
            self._lock.enter_context(exclusive_lock(folder / ".synthforge-serve.lock", busy))
            self.batches = BatchStore(config.batch)
            self.runner = BatchRunner(self.batches, self.batch_answer, lambda: self.interactive > 0, config.max_batch)

    def check_supported(self, params: SamplingParams) -> None:
        """A schema or a thinking budget the teacher can't honour is a 400 before any work."""
        if params.json_schema is not None and STRUCTURED not in self.capabilities:
            raise BadRequest("this server's teacher can't constrain its output", param="response_format")
        if params.max_reasoning_tokens is not None and THINKING_BUDGET not in self.capabilities:
            raise BadRequest("this server's teacher can't end thinking early", param="thinking_token_budget")

    async def run(self, kind: str, prompt: Any, params: SamplingParams, batch: bool = False) -> list[Completion]:
        """A request's completions (``batch``: a Batch API request, counted apart: it yields to interactive ones)."""
        if batch:
            return await self._run(kind, prompt, params)
        self.interactive += 1
        try:
            return await self._run(kind, prompt, params)
        finally:
            self.interactive -= 1

    async def _run(self, kind: str, prompt: Any, params: SamplingParams) -> list[Completion]:
        """Straight into a continuous-batching teacher's running batch (it joins at the next step; cancelled if
        the client leaves), else through the batcher."""
        if CONTINUOUS not in self.capabilities:
            return await self.batcher.run(kind, prompt, params)
        submission = await asyncio.to_thread(self.teacher.start, [prompt], params)
        try:
            await asyncio.wrap_future(submission.future)
        except asyncio.CancelledError:
            submission.cancel()
            raise
        return submission.result()[0]

    @staticmethod
    def error(message: str, status: int, kind: str = "invalid_request_error", param: str | None = None):
        body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
        return JSONResponse(body, status_code=status)

    def check_key(self, request: Request) -> None:
        if self.config.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.config.api_key}".encode()):
            raise BadRequest("invalid or missing API key", status=401, kind="authentication_error")

    async def read_limited(self, request: Request) -> bytes:
        """The body; past the limit it is read on but not kept (so the client hears the 413 rather than a reset
        connection), and refused."""
        limit = self.config.max_body_bytes
        parts, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size <= limit:
                parts.append(chunk)
            elif size > DRAIN_LIMIT * limit:
                break  # not worth reading on: the client gets a closed connection
        if size > limit:
            raise BadRequest(f"request body is larger than {limit} bytes", status=413, kind="request_too_large")
        return b"".join(parts)

    async def body_of(self, request: Request) -> dict:
        self.check_key(request)
        body = parse_body(await self.read_limited(request))
        self.check_model(body)
        return body

    def check_model(self, body: dict) -> None:
        model = body.get("model")
        if model != self.config.model_name:
            raise BadRequest(
                f"The model {model!r} does not exist (this server serves {self.config.model_name!r})",
                status=404,
                param="model",
                kind="not_found_error",
            )

    def check_fits(self, prompt: Any) -> int | None:
        """A prompt that leaves no room in the context window is the client's to fix (as vLLM answers it)."""
        if TOKENS not in self.capabilities:
            return None
        limit = self.teacher.context_window
        tokens = self.teacher.count_tokens(prompt)
        if limit and tokens >= limit:
            raise context_error(tokens, limit)
        return tokens

    async def unless_gone(self, request: Request, work: Awaitable[Any]) -> Any:
        """``work``'s result; if the client disconnects first, the work is cancelled (queued requests are
        skipped) and :class:`ClientGone` raised."""
        task = asyncio.ensure_future(work)

        async def watch() -> None:
            while not await request.is_disconnected():
                await asyncio.sleep(DISCONNECT_POLL_S)

        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise ClientGone
        return task.result()

    def respond(self, kind: str, body: dict, choices: list, prompt_tokens: int, completion_tokens: int, **extra: Any):
        include_usage = stream_options(body)
        if include_usage is None:
            return JSONResponse(
                envelope(kind, self.config.model_name, choices, prompt_tokens, completion_tokens, **extra)
            )
        usage = usage_of(prompt_tokens, completion_tokens) if include_usage else None
        events = stream_events(kind, self.config.model_name, choices, usage)
        return StreamingResponse(iter(events), media_type="text/event-stream")

    def token_logprobs(self, conversation: Any, text: str) -> tuple[int, list]:
        if PROMPT_LOGPROBS not in self.capabilities:
            raise BadRequest("prompt log-probabilities are not supported by this server's backend")
        return self.teacher.continuation_token_logprobs(conversation, text)

    async def chat(self, request: Request) -> Response:
        body = await self.body_of(request)
        stream_options(body)  # a malformed stream_options is a 400 before any work
        answer = await self.unless_gone(request, self.chat_answer(body))
        return self.respond(answer.kind, body, answer.choices, answer.prompt_tokens, answer.used, **answer.extra)

    async def chat_answer(self, body: dict, batch: bool = False) -> Answered:
        messages = messages_of(body)
        top = integer(body, "top_logprobs", None, 0, 20)
        logprobs = body.get("logprobs")
        if logprobs not in (None, True, False):
            raise BadRequest("logprobs must be a boolean", param="logprobs")
        params = sampling_from_request(body, self.config.default_max_tokens, (top or 0) if logprobs else None)
        self.check_supported(params)
        if integer(body, "prompt_logprobs", None, 0, 20) is not None:
            return await self.score_final_message(body, messages, params)
        self.check_fits(messages)
        answers = await self.run("chat", messages, params, batch)
        used = sum(c.completion_tokens for c in answers)
        return Answered("chat.completion", chat_choices(answers), answers[0].prompt_tokens, used)

    async def score_final_message(self, body: dict, messages: list, params: SamplingParams) -> Answered:
        """vLLM's scoring idiom: prompt_logprobs + continue_final_message scores the last assistant message."""
        if not body.get("continue_final_message") or messages[-1]["role"] != "assistant":
            raise BadRequest(
                "prompt_logprobs needs continue_final_message: true and a final assistant message to score",
                param="prompt_logprobs",
            )
        if params.n != 1:
            raise BadRequest("prompt_logprobs needs n = 1", param="n")
        self.check_fits(messages)
        prefix_len, tokens = await asyncio.to_thread(self.token_logprobs, messages[:-1], messages[-1]["content"])
        entries: list[Any] = [None] * prefix_len
        entries += [
            None if lp is None else {str(tid): {"logprob": lp, "rank": None, "decoded_token": text}}
            for tid, text, lp in tokens
        ]
        choice = {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "length"}
        choices = [{**choice, "logprobs": None}]
        return Answered("chat.completion", choices, len(entries), 0, {"prompt_logprobs": entries})

    def prompts_of(self, body: dict) -> list[str]:
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise BadRequest("prompt must be a string or a non-empty list of strings", param="prompt")
        if len(prompts) > self.config.max_prompts:
            raise BadRequest(f"prompt: at most {self.config.max_prompts} prompts in one request", param="prompt")
        if not all(prompts):
            raise BadRequest("prompt must not be empty", param="prompt")
        return prompts

    async def completions(self, request: Request) -> Response:
        body = await self.body_of(request)
        stream_options(body)
        answer = await self.unless_gone(request, self.text_answer(body))
        return self.respond(answer.kind, body, answer.choices, answer.prompt_tokens, answer.used)

    async def text_answer(self, body: dict, batch: bool = False) -> Answered:
        prompts = self.prompts_of(body)
        echo = bool(body.get("echo"))
        top = integer(body, "logprobs", None, 0, 20)
        zero_tokens = echo and body.get("max_tokens") == 0
        request_body = {k: v for k, v in body.items() if not (zero_tokens and k == "max_tokens")}
        params = sampling_from_request(request_body, self.config.default_max_tokens, top)
        self.check_supported(params)
        for text in prompts:
            self.check_fits(text)

        async def one(text: str) -> tuple[Any, list[Completion]]:
            echoed = await asyncio.to_thread(self.token_logprobs, None, text) if echo and top is not None else None
            generated = [] if zero_tokens else await self.run("text", text, params, batch)
            return echoed, generated

        # Every prompt is queued at once: they batch together, and a client that leaves cancels them all.
        answers = await asyncio.gather(*(one(text) for text in prompts))
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for p_index, (text, (echoed, generated)) in enumerate(zip(prompts, answers, strict=True)):
            samples = generated or [Completion("", "length", len(echoed[1]) if echoed else 0, 0)]
            for k, sample in enumerate(samples):
                choice: dict[str, Any] = {
                    "index": p_index * params.n + k,
                    "text": (text if echo else "") + sample.text,
                    "finish_reason": sample.finish_reason,
                    "logprobs": text_logprobs(echoed, sample, text if echo else "") if top is not None else None,
                }
                choices.append(choice)
                completion_tokens += sample.completion_tokens
            prompt_tokens += samples[0].prompt_tokens
        return Answered("text_completion", choices, prompt_tokens, completion_tokens)

    async def batch_answer(self, endpoint: str, body: dict) -> dict:
        """One Batch API request answered as its endpoint answers it (a failure: its status and error object)."""
        try:
            self.check_model(body)
            chat = endpoint.endswith("chat/completions")
            answer = await (self.chat_answer(body, True) if chat else self.text_answer(body, True))
        except BadRequest as exc:
            raise BatchRequestFailed(exc.status, {"message": str(exc), "type": exc.kind, "param": exc.param}) from None
        except Exception as exc:  # a teacher failure: this request fails, the batch goes on
            raise BatchRequestFailed(500, {"message": f"{type(exc).__name__}: {exc}", "type": "server_error"}) from None
        model = self.config.model_name
        return envelope(answer.kind, model, answer.choices, answer.prompt_tokens, answer.used, **answer.extra)

    # -- the Batch API (with --state-dir) ----------------------------------------------------------------------
    def store(self, request: Request) -> BatchStore:
        self.check_key(request)
        if self.batches is None:
            raise BadRequest("the Batch API is off on this server (start it with --state-dir)", status=404)
        return self.batches

    async def upload(self, request: Request) -> JSONResponse:
        """``POST /v1/files``: a multipart upload (``file``, ``purpose``), kept in the state folder."""
        store = self.store(request)
        limit = store.settings.max_upload_bytes
        if int(request.headers.get("content-length") or 0) > limit + (1 << 16):
            raise BatchError(f"file is larger than {limit} bytes", status=413, kind="request_too_large")
        try:
            form = await request.form(max_files=1, max_fields=8)
        except Exception as exc:  # a body that isn't multipart form data
            raise BatchError(f"expected multipart/form-data with file and purpose ({exc})") from None
        upload, purpose = form.get("file"), form.get("purpose")
        if upload is None or isinstance(upload, str):
            raise BatchError("file: a file part is required", param="file")
        data = await upload.read()
        return JSONResponse(store.create_file(data, upload.filename or "upload.jsonl", str(purpose)))

    async def file_object(self, request: Request) -> JSONResponse:
        return JSONResponse(self.store(request).file(request.path_params["file_id"]))

    async def list_files(self, request: Request) -> JSONResponse:
        store = self.store(request)
        query = request.query_params
        return JSONResponse(store.list_files(query.get("purpose"), query.get("after"), _page_limit(query, 10_000)))

    async def delete_file(self, request: Request) -> JSONResponse:
        return JSONResponse(self.store(request).delete_file(request.path_params["file_id"]))

    async def file_content(self, request: Request) -> Response:
        data = self.store(request).content(request.path_params["file_id"])
        return Response(data, media_type="application/octet-stream")

    async def create_batch(self, request: Request) -> JSONResponse:
        store = self.store(request)
        batch = store.create_batch(parse_body(await self.read_limited(request)))
        if self.runner is not None:
            self.runner.wake.set()
        return JSONResponse(batch)

    async def list_batches(self, request: Request) -> JSONResponse:
        store = self.store(request)
        query = request.query_params
        return JSONResponse(store.list_batches(query.get("after"), _page_limit(query, 100)))

    async def batch_object(self, request: Request) -> JSONResponse:
        return JSONResponse(self.store(request).batch(request.path_params["batch_id"]))

    async def cancel_batch(self, request: Request) -> JSONResponse:
        batch = self.store(request).cancel(request.path_params["batch_id"])
        if self.runner is not None:
            self.runner.wake.set()
        return JSONResponse(batch)

    async def on_batch_error(self, request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BatchError)
        return self.error(str(exc), exc.status, exc.kind, exc.param)

    async def models(self, request: Request) -> JSONResponse:
        self.check_key(request)
        data = [{"id": self.config.model_name, "object": "model", "created": 0, "owned_by": "synthforge"}]
        return JSONResponse({"object": "list", "data": data})

    async def on_bad_request(self, request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BadRequest)
        return self.error(str(exc), exc.status, exc.kind, exc.param)

    async def on_client_gone(self, request: Request, exc: Exception) -> Response:
        return Response(status_code=499)  # nobody reads it: the client closed the connection

    async def on_http(self, request: Request, exc: Exception) -> JSONResponse:
        status = getattr(exc, "status_code", 500)
        return self.error(str(getattr(exc, "detail", "error")), status, "invalid_request_error")

    async def on_error(self, request: Request, exc: Exception) -> JSONResponse:
        traceback.print_exception(exc, file=sys.stderr)
        return self.error(f"internal error: {type(exc).__name__}", 500, "server_error")

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any):
        self.batcher.start()
        running = asyncio.ensure_future(self.runner.run_forever()) if self.runner is not None else None
        yield
        if running is not None:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        self.batcher.stop()
        self._lock.close()  # another server may keep its batches in the folder now

    def app(self) -> Any:
        """The Starlette application."""
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.routing import Route

        app = Starlette(
            routes=[
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/files", self.upload, methods=["POST"]),
                Route("/v1/files", self.list_files, methods=["GET"]),
                Route("/v1/files/{file_id}", self.file_object, methods=["GET"]),
                Route("/v1/files/{file_id}", self.delete_file, methods=["DELETE"]),
                Route("/v1/files/{file_id}/content", self.file_content, methods=["GET"]),
                Route("/v1/batches", self.create_batch, methods=["POST"]),
                Route("/v1/batches", self.list_batches, methods=["GET"]),
                Route("/v1/batches/{batch_id}", self.batch_object, methods=["GET"]),
                Route("/v1/batches/{batch_id}/cancel", self.cancel_batch, methods=["POST"]),
            ],
            exception_handlers={
                BadRequest: self.on_bad_request,
                BatchError: self.on_batch_error,
                ClientGone: self.on_client_gone,
                HTTPException: self.on_http,
                Exception: self.on_error,
            },
            lifespan=self.lifespan,
        )
        app.state.batcher = self.batcher
        return app


def build_app(teacher: Any, config: ServeConfig) -> Any:
    """The Starlette application serving ``teacher`` under ``config.model_name``."""
    return Server(teacher, config).app()


def serve(teacher: Any, config: ServeConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted."""
    import uvicorn

    uvicorn.run(build_app(teacher, config), host=host, port=port, log_level="warning", access_log=False)


def _page_limit(query: Any, most: int) -> int:
    """A list route's ``limit`` (default 20), from 1 to ``most``; anything else is a 400 naming the parameter."""
    limit = query.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= most:
        raise BatchError(f"limit must be from 1 to {most}", param="limit")
    return int(limit)
