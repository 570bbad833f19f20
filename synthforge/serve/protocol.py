"""The OpenAI API as ``synthforge serve`` speaks it: request bodies in (validated: a bad one is a 400 naming the
parameter), sampling parameters out; completions in, OpenAI response objects and stream chunks out."""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

from synthforge.rows import content_text, unicode_problem
from synthforge.schemas import schema_defect
from synthforge.teachers.base import Completion, SamplingParams
from synthforge.teachers.grammar import grammar_problem

MAX_N = 16
MAX_DEPTH = 32  # JSON nesting a request may have (a request is shallow; a deep one is an attack or a bug)
MAX_DIGITS = 64  # digits an integer in a request may have (a seed fits in 20; Python refuses more than 4,300)


class BadRequest(Exception):
    """A request the client must fix: answered with an OpenAI-style error object."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.kind = status, param, kind


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


def integer(body: dict, key: str, default: int | None, low: int, high: int) -> int | None:
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


def json_schema_of(body: dict) -> dict[str, Any] | None:
    """The JSON Schema a request's ``response_format`` asks for (``json_object``: any object), None for text; a
    malformed one, a schema that isn't JSON Schema or one the grammar engine can't compile is a 400."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind != "json_schema":
        raise BadRequest("response_format.type must be text, json_object or json_schema", param="response_format")
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise BadRequest("response_format.json_schema.schema must be a JSON Schema object", param="response_format")
    problem = schema_defect(schema) or grammar_problem(schema)
    if problem is not None:
        raise BadRequest(f"response_format.json_schema.schema: {problem}", param="response_format")
    return schema


def sampling_from_request(body: dict, default_max_tokens: int, logprobs: int | None) -> SamplingParams:
    """Our sampling parameters from an OpenAI request body (OpenAI's defaults: temperature 1, top_p 1)."""
    max_tokens = integer(body, "max_completion_tokens", None, 1, 1 << 20)
    max_tokens = integer(body, "max_tokens", max_tokens or default_max_tokens, 1, 1 << 20)
    budget = integer(body, "thinking_token_budget", None, -1, 1 << 20)  # vLLM's name; -1: unlimited
    return SamplingParams(
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
        max_new_tokens=max_tokens or default_max_tokens,
        n=integer(body, "n", 1, 1, MAX_N) or 1,
        stop=_stop(body),
        seed=integer(body, "seed", None, -(1 << 63), (1 << 63) - 1),
        logprobs=logprobs,
        json_schema=json_schema_of(body),
        max_reasoning_tokens=None if budget == -1 else budget,
    )


def messages_of(body: dict) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list of {role, content} objects", param="messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a role", param="messages")
        if message["role"] not in ("system", "user", "assistant"):
            raise BadRequest(f"messages[{i}].role must be system, user or assistant", param="messages")
        try:
            content = content_text(message.get("content"))  # a string, or text parts joined
        except ValueError as exc:
            raise BadRequest(f"messages[{i}].{exc}", param="messages") from None
        out.append({"role": message["role"], "content": content})
    return out


def usage_of(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_logprobs(completion: Completion) -> dict[str, Any] | None:
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


def text_logprobs(echoed: tuple[int, list] | None, sample: Completion, prefix: str) -> dict[str, Any]:
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


def parse_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object; not JSON, nested deeper than ``MAX_DEPTH``, not an object, or holding
    text that is not Unicode (a lone surrogate escape) or an integer of more than ``MAX_DIGITS`` digits: a 400
    naming where."""
    try:
        body = json.loads(raw, parse_int=_integer)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(f"request body is nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    _check_values(body)
    return body


class _HugeInteger:
    """An integer literal longer than any parameter takes (converting it would cost quadratic time, or fail)."""


def _integer(digits: str) -> int | _HugeInteger:
    return _HugeInteger() if len(digits.lstrip("-")) > MAX_DIGITS else int(digits)


def _check_values(body: dict[str, Any]) -> None:
    """Walk the body iteratively (a deep value must not exhaust the stack here either): depth, huge integers and
    text a tokenizer can't take, each a 400 naming the parameter's path."""
    todo: list[tuple[Any, int, str]] = [(body, 1, "")]
    while todo:
        item, level, path = todo.pop()
        if level > MAX_DEPTH:
            raise BadRequest(f"request body is nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, _HugeInteger):
            raise BadRequest(f"{path}: an integer of more than {MAX_DIGITS} digits", param=path)
        if isinstance(item, str) and (problem := unicode_problem(item)):
            raise BadRequest(f"{path}: text {problem}", param=path)
        children = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        for key, child in children:
            shown = key.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(key, str) else key
            where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{shown}" if path else shown
            if isinstance(key, str) and not key.isascii():
                todo.append((key, level + 1, where))
            todo.append((child, level + 1, where))


def context_error(prompt_tokens: int, limit: int) -> BadRequest:
    """vLLM's answer to a prompt that doesn't fit the context window (its wording, which clients parse)."""
    return BadRequest(
        f"This model's maximum context length is {limit} tokens. However, your request has {prompt_tokens} input "
        "tokens. Please reduce the length of the input messages.",
        param="messages",
    )


def envelope(kind: str, model: str, choices: list, prompt_tokens: int, completion_tokens: int, **extra: Any) -> dict:
    """A whole (non-streamed) response object of ``kind`` ("chat.completion" or "text_completion")."""
    prefix = "chatcmpl" if kind == "chat.completion" else "cmpl"
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage_of(prompt_tokens, completion_tokens),
        **extra,
    }


def _message(completion: Completion) -> dict[str, Any]:
    """The assistant message of a completion: a reasoning model's thinking apart, as ``reasoning_content``."""
    message: dict[str, Any] = {"role": "assistant", "content": completion.text}
    if completion.reasoning is not None:
        message["reasoning_content"] = completion.reasoning
    return message


def chat_choices(completions: list[Completion]) -> list[dict[str, Any]]:
    return [
        {
            "index": k,
            "message": _message(c),
            "finish_reason": c.finish_reason,
            "logprobs": chat_logprobs(c),
        }
        for k, c in enumerate(completions)
    ]


def stream_events(kind: str, model: str, choices: list[dict[str, Any]], usage: dict[str, int] | None) -> list[str]:
    """Server-sent events of a finished response, as the OpenAI API streams one: per choice a first chunk
    (the role, for chat), its text, and a last chunk with its finish reason; the usage chunk when asked
    (``stream_options.include_usage``); then ``[DONE]``."""
    chat = kind == "chat.completion"
    common = {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
    }
    chunks: list[dict[str, Any]] = []
    for choice in choices:
        index = choice["index"]
        if chat:
            text = choice["message"]["content"]
            chunks.append({"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})
            if "reasoning_content" in choice["message"]:
                chunks.append({"index": index, "delta": {"reasoning_content": choice["message"]["reasoning_content"]}})
            chunks.append({"index": index, "delta": {"content": text}, "logprobs": choice["logprobs"]})
            chunks.append({"index": index, "delta": {}, "finish_reason": choice["finish_reason"]})
        else:
            chunks.append({"index": index, "text": choice["text"], "logprobs": choice["logprobs"]})
            chunks.append({"index": index, "text": "", "finish_reason": choice["finish_reason"]})
    events = [{**common, "choices": [{"finish_reason": None, **c}]} for c in chunks]
    if usage is not None:
        events.append({**common, "choices": [], "usage": usage})
    return [f"data: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events] + ["data: [DONE]\n\n"]


def stream_options(body: dict[str, Any]) -> bool | None:
    """None when the response is not streamed; else whether the usage chunk is asked for."""
    if not body.get("stream"):
        return None
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("stream_options must be an object", param="stream_options")
    return bool(options.get("include_usage"))
