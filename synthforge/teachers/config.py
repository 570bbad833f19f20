"""The ``teacher:`` section of a pipeline: which backend, which model, and each backend's own settings.

Plain data, validated key by key like every stage setting; ``synthforge.teachers.factory`` turns it into an
identity (without loading anything) and into a teacher.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

BACKENDS = ("transformers", "openai", "vllm")


def _finite_positive(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def url_problem(url: str) -> str | None:
    """Why ``url`` can't be a server's base URL (scheme, host, port), or None."""
    from urllib.parse import urlsplit

    if not url.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if not parts.hostname:
        return "names no host"
    if port == 0:
        return "port 0 is not a port a server listens on"
    return None


@dataclass
class OpenAISettings:
    """An OpenAI-compatible HTTP server (vLLM, SGLang, TGI, Ollama, ``synthforge serve``) or a hosted API."""

    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str | None = None  # name of the environment variable holding the key; never the key itself
    max_concurrency: int = 32  # upper bound of requests in flight; the adaptive window stays below it
    timeout: float = 600.0  # seconds per request
    retries: int = 3  # the SDK's own retries (429 with Retry-After, 5xx, timeouts, dropped connections)
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    native_n: bool = True  # send n in one request; false: fan out n requests with distinct seeds
    score: str = "top_logprobs"  # prompt_logprobs (exact: vLLM, synthforge serve) | top_logprobs | none
    top_logprobs: int = 20
    tokenizer: str | None = None  # a local tokenizer (dir, .gguf, embedded) for the chat template: raw text, Magpie
    revision: str | None = None  # what the server runs, if you know it (goes into the identity, so cache keys)

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


@dataclass
class VLLMSettings:
    """Engine arguments of an in-process ``vllm.LLM``."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    dtype: str = "auto"
    seed: int = 0
    extra: dict = field(default_factory=dict)  # any other EngineArgs, passed through as given

    def __post_init__(self) -> None:
        if self.tensor_parallel_size < 1:
            raise ValueError("tensor_parallel_size must be >= 1")
        if not (math.isfinite(self.gpu_memory_utilization) and 0 < self.gpu_memory_utilization <= 1):
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError("max_model_len must be >= 1")


@dataclass
class TeacherSpec:
    """Which teacher to use and how to run it; ``batch_size``, ``device`` and retries don't change cache keys.

    ``batch_size`` is the number of records per checkpointed unit and teacher call; null picks the backend's
    default (16 in-process, 256 for a server or vLLM, which schedule their own batches).
    """

    model: str = "embedded"
    backend: str = "transformers"
    batch_size: int | None = None
    device: str | None = None
    max_retries: int = 2
    openai: OpenAISettings | None = None
    vllm: VLLMSettings | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if not self.model.strip():
            raise ValueError("model must not be empty")
        for other in ("openai", "vllm"):
            if getattr(self, other) is not None and other != self.backend:
                raise ValueError(f"settings for backend {other!r} given, but backend is {self.backend!r}")
        if self.backend == "openai" and self.openai is None:
            self.openai = OpenAISettings()
        if self.backend == "vllm" and self.vllm is None:
            self.vllm = VLLMSettings()
