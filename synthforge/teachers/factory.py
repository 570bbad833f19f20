"""The only module that knows the teacher backends: identity, capabilities and construction from a spec.

A teacher's identity (part of every cache key) and its capabilities are computed from the spec alone,
before any model loads or any request is sent; :class:`LazyTeacher` builds the backend on first use, so
a run whose every stage is reused never loads a model.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from synthforge.errors import UserError
from synthforge.teachers.base import CHOICE, GENERATE, RAW_TEXT, Teacher
from synthforge.teachers.config import TeacherSpec, url_problem

DEFAULT_BATCH_SIZE = {"transformers": 16, "openai": 256, "vllm": 1024}
_URL = re.compile(r"^(?P<model>.+?)@(?P<url>https?://\S+)$")

CAPABILITY_HINTS = {
    (
        "openai",
        CHOICE,
    ): "set teacher.openai.score to top_logprobs (hosted APIs) or prompt_logprobs (vLLM, synthforge serve)",
    ("openai", RAW_TEXT): "set teacher.openai.tokenizer to a local copy of the model's tokenizer (its chat template)",
}
CAPABILITY_WORDS = {
    CHOICE: "log-probabilities of the judge's answers",
    RAW_TEXT: "raw-text completion with the model's chat template",
}


def teacher_overrides(ref: str) -> list[str]:
    """``--set`` assignments for a ``--teacher`` reference.

    ``embedded``, ``DIR``, ``FILE.gguf`` or ``transformers:REF`` (in-process transformers); ``vllm:REF``
    (in-process vLLM); ``openai:MODEL@URL`` or ``openai:MODEL`` (an OpenAI-compatible server; the URL
    defaults to the pipeline's ``teacher.openai.base_url``).
    """
    backend, _, rest = ref.partition(":")
    if backend not in ("transformers", "vllm", "openai"):
        backend, rest = "transformers", ref
    if not rest.strip():
        raise UserError(f"--teacher {ref!r}: no model given (e.g. openai:MODEL@http://127.0.0.1:8000/v1)")
    sets = [f"teacher.backend={backend}"]
    others = {"transformers": ("openai", "vllm"), "vllm": ("openai",), "openai": ("vllm",)}[backend]
    sets += [f"teacher.{other}=null" for other in others]
    if backend == "openai" and "@" in rest:
        match = _URL.match(rest)
        if not match:
            raise UserError(
                f"--teacher {ref!r}: the server after '@' must be a URL starting with http:// or https://, "
                "e.g. openai:MODEL@http://127.0.0.1:8000/v1"
            )
        rest = match["model"]
        problem = url_problem(match["url"])
        if problem:
            raise UserError(f"--teacher {ref!r}: {match['url']} {problem}")
        sets.append(f"teacher.openai.base_url={json.dumps(match['url'])}")
    sets.append(f"teacher.model={json.dumps(rest)}")
    return sets


def batch_size(spec: TeacherSpec) -> int:
    """Records per teacher call and checkpointed unit: the spec's, or the backend's default."""
    return spec.batch_size or DEFAULT_BATCH_SIZE[spec.backend]


def teacher_identity(spec: TeacherSpec) -> dict[str, Any]:
    """What identifies the teacher's outputs, from the spec alone (no model loaded, no request sent)."""
    if spec.backend == "transformers":
        from synthforge.teachers.loading import resolve_teacher_dir
        from synthforge.teachers.transformers_teacher import default_dtype

        name, weights_id, _ = resolve_teacher_dir(spec.model)
        device = _torch_device(spec.device)
        return {
            "backend": "transformers",
            "name": name,
            "weights": weights_id,
            "dtype": str(default_dtype(device)).removeprefix("torch."),
            "device_type": device.type,
        }
    if spec.backend == "openai":
        assert spec.openai is not None
        settings = spec.openai
        return {
            "backend": "openai",
            "model": spec.model,
            "revision": settings.revision,
            "score": settings.score,
            "top_logprobs": settings.top_logprobs if settings.score == "top_logprobs" else None,
            "native_n": settings.native_n,
        }
    assert spec.vllm is not None
    path = Path(spec.model).expanduser()
    weights = spec.model
    if path.is_dir() and (path / "config.json").is_file():
        from synthforge.teachers.loading import weights_id

        weights = weights_id(path)
    return {
        "backend": "vllm",
        "name": path.name if path.is_dir() else spec.model,
        "weights": weights,
        "dtype": spec.vllm.dtype,
        "max_model_len": spec.vllm.max_model_len,
    }


def teacher_capabilities(spec: TeacherSpec) -> frozenset[str]:
    """What the configured backend can do (every backend generates)."""
    if spec.backend == "openai":
        from synthforge.teachers.openai_teacher import openai_capabilities

        assert spec.openai is not None
        return frozenset({GENERATE}) | openai_capabilities(spec.openai)
    from synthforge.teachers.base import LOGPROBS, SCORE

    return frozenset({GENERATE, SCORE, CHOICE, RAW_TEXT, LOGPROBS})


def missing_capability(backend: str, needed: frozenset[str], have: frozenset[str]) -> str | None:
    """One line saying what a stage needs that the teacher lacks, and how to get it; None when nothing is."""
    missing = sorted(needed - have)
    if not missing:
        return None
    words = "; ".join(CAPABILITY_WORDS.get(m, m) for m in missing)
    hint = "; ".join(CAPABILITY_HINTS[(backend, m)] for m in missing if (backend, m) in CAPABILITY_HINTS)
    return f"needs {words}, which teacher backend {backend!r} can't provide" + (f" ({hint})" if hint else "")


def check_device(spec: TeacherSpec, where: str) -> None:
    """A device that doesn't exist on this machine is a spec error (before any model loads)."""
    if spec.backend == "transformers":
        _torch_device(spec.device, where)


def _torch_device(device: str | None, where: str = "teacher") -> Any:
    import torch

    from synthforge.teachers.transformers_teacher import default_device

    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"{where}.device: unknown device {device!r} (expected cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"{where}.device: {device!r} asked for, but this machine has no CUDA GPU")
        if dev.index is not None and dev.index >= count:
            raise UserError(f"{where}.device: {device!r} asked for, but this machine has {count} CUDA GPU(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{where}.device: 'mps' asked for, but it is not available here")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{where}.device: unsupported device {device!r} (expected cpu, cuda, cuda:N or mps)")
    return dev


def build_teacher(spec: TeacherSpec, identity: dict[str, Any] | None = None) -> Teacher:
    """Load or connect the configured backend."""
    identity = identity or teacher_identity(spec)
    if spec.backend == "transformers":
        from synthforge.teachers.loading import load_teacher

        return load_teacher(spec.model, batch_size(spec), spec.device)
    if spec.backend == "openai":
        from synthforge.teachers.loading import load_tokenizer
        from synthforge.teachers.openai_teacher import OpenAITeacher

        assert spec.openai is not None
        tokenizer = load_tokenizer(spec.openai.tokenizer) if spec.openai.tokenizer else None
        return OpenAITeacher(spec.model, spec.openai, identity, tokenizer)
    from synthforge.teachers.vllm_teacher import VLLMTeacher

    assert spec.vllm is not None
    return VLLMTeacher(spec.model, spec.vllm, identity)


def replica_devices(spec: TeacherSpec) -> int:
    """Accelerators one replica of this teacher spans: a vLLM engine's tensor x pipeline parallel size, else 1."""
    if spec.backend != "vllm":
        return 1
    assert spec.vllm is not None
    return spec.vllm.tensor_parallel_size * int(spec.vllm.extra.get("pipeline_parallel_size", 1))


def placement_group_replica(spec: TeacherSpec) -> TeacherSpec:
    """The spec a Ray actor builds a multi-device replica from: vLLM runs its workers with its Ray executor in
    the replica's placement group (as Ray Data LLM does); the identity, hence cache keys, is unchanged."""
    if spec.backend != "vllm" or replica_devices(spec) == 1:
        return spec
    assert spec.vllm is not None
    extra = {"distributed_executor_backend": "ray", **spec.vllm.extra}
    return replace(spec, vllm=replace(spec.vllm, extra=extra))


class LazyTeacher:
    """A teacher whose identity and capabilities are known now and whose backend is built on first use."""

    def __init__(self, spec: TeacherSpec):
        self.spec = spec
        self.identity = teacher_identity(spec)
        self.capabilities = teacher_capabilities(spec)
        self._teacher: Teacher | None = None

    @property
    def loaded(self) -> bool:
        return self._teacher is not None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._teacher is None:
            self._teacher = build_teacher(self.spec, self.identity)
        return getattr(self._teacher, name)

    def close(self) -> None:
        """Release the backend (HTTP client, event-loop thread), if it was built."""
        if self._teacher is not None and callable(getattr(self._teacher, "close", None)):
            self._teacher.close()  # type: ignore[attr-defined]
