"""The only module that knows the teacher backends: a registry of them, and identity, capabilities and
construction from a spec by looking the backend up.

A teacher's identity (part of every cache key) and its capabilities are computed from the spec alone,
before any model loads or any request is sent; :class:`LazyTeacher` builds the backend on first use, so
a run whose every stage is reused never loads a model. A new backend is one module in ``teachers/backends/``
exporting a :class:`~synthforge.teachers.config.Backend` record, plus its line in ``BACKENDS``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from synthforge.errors import UserError
from synthforge.resolve import resolve
from synthforge.settings import SpecError, build_config
from synthforge.teachers.base import (
    CHOICE,
    RAW_TEXT,
    STRUCTURED,
    THINKING_BUDGET,
    TOKENS,
    BatchJournal,
    Probing,
    Teacher,
)
from synthforge.teachers.batch_api import open_intents
from synthforge.teachers.config import COMMON_KEYS, Backend, TeacherSpec

BACKENDS: dict[str, str] = {
    "transformers": "synthforge.teachers.backends.transformers:BACKEND",
    "openai": "synthforge.teachers.backends.openai:BACKEND",
    "vllm": "synthforge.teachers.backends.vllm:BACKEND",
    "anthropic": "synthforge.teachers.backends.anthropic:BACKEND",
}

CAPABILITY_WORDS = {
    CHOICE: "log-probabilities of the judge's answers",
    RAW_TEXT: "raw-text completion with the model's chat template",
    TOKENS: "counting a conversation's tokens against the context window (truncate: oldest)",
    STRUCTURED: "structured output (decoding constrained to a JSON Schema)",
    THINKING_BUDGET: "a thinking budget (sampling.max_reasoning_tokens)",
}


def backend_of(name: str, where: str = "teacher.backend") -> Backend:
    """The registered backend called ``name``; an unknown one is a one-line error naming the known ones."""
    if name not in BACKENDS:
        raise SpecError(f"{where}: backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    return resolve(BACKENDS[name], where)


def options_of(spec: TeacherSpec) -> Any:
    """The backend's own settings of ``spec``: as given, or the backend's defaults."""
    backend = backend_of(spec.backend)
    if spec.options is None and backend.settings is not None:
        return backend.settings()
    return spec.options


def teacher_spec(data: Any, where: str) -> TeacherSpec:
    """A :class:`TeacherSpec` from the ``teacher:`` mapping: the common keys, and the backend's own settings under
    a key named after it (``teacher.openai``); a section for another backend, or an unknown key, names its key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping of settings, got {type(data).__name__} {data!r}")
    name = data.get("backend", "transformers")
    backend = backend_of(name, f"{where}")
    for key in data:
        if key not in COMMON_KEYS and key not in BACKENDS:
            known = ", ".join(sorted([*COMMON_KEYS, *BACKENDS]))
            raise SpecError(f"{where}.{key}: unknown setting (expected one of: {known})")
    for other in BACKENDS:
        if other != name and data.get(other) is not None:
            raise SpecError(f"{where}: settings for backend {other!r} given, but backend is {name!r}")
    spec = build_config(TeacherSpec, {k: v for k, v in data.items() if k in COMMON_KEYS}, where)
    section = data.get(name)
    if backend.settings is not None:
        spec.options = build_config(backend.settings, section, f"{where}.{name}")
    elif section is not None:
        raise SpecError(f"{where}.{name}: backend {name!r} has no settings of its own")
    return spec


def teacher_settings(spec: TeacherSpec) -> dict[str, Any]:
    """The spec as plain data, the backend's settings under its name (as written in a pipeline)."""
    from synthforge.settings import config_to_dict

    data = {key: getattr(spec, key) for key in COMMON_KEYS}
    options = options_of(spec)
    if options is not None:
        data[spec.backend] = config_to_dict(options)
    return data


def teacher_overrides(ref: str) -> list[str]:
    """``--set`` assignments for a ``--teacher`` reference: ``NAME:REST`` for a registered backend (e.g.
    ``vllm:MODEL``, ``openai:MODEL@URL``), else a transformers model (``embedded``, ``DIR``, ``FILE.gguf``)."""
    name, _, rest = ref.partition(":")
    if name not in BACKENDS:
        name, rest = "transformers", ref
    if not rest.strip():
        raise UserError(f"--teacher {ref!r}: no model given (e.g. openai:MODEL@http://127.0.0.1:8000/v1)")
    sets = [f"teacher.backend={name}", *(f"teacher.{other}=null" for other in BACKENDS if other != name)]
    backend = backend_of(name)
    if backend.ref_overrides is not None:
        return sets + backend.ref_overrides(rest)
    return [*sets, f"teacher.model={json.dumps(rest)}"]


def spec_from_ref(ref: str, **common: Any) -> TeacherSpec:
    """The spec a ``--teacher`` reference names, with ``common`` settings (batch_size, device, …) on top."""
    import yaml

    data: dict[str, Any] = {}
    for assignment in teacher_overrides(ref):
        dotted, _, value = assignment.partition("=")
        *path, last = dotted.split(".")[1:]
        node = data
        for key in path:
            node = node.setdefault(key, {})
        node[last] = yaml.safe_load(value)
    return teacher_spec({**data, **common}, "--teacher")


def batch_size(spec: TeacherSpec) -> int:
    """Records per teacher call and checkpointed unit: the spec's, or the backend's default."""
    return spec.batch_size or backend_of(spec.backend).batch_size


def teacher_identity(spec: TeacherSpec) -> dict[str, Any]:
    """What identifies the teacher's outputs, from the spec alone (no model loaded, no request sent); other
    thinking tags than the usual ones split answers differently, so they are part of it."""
    identity = backend_of(spec.backend).identity(spec, options_of(spec))
    return identity if spec.reasoning_tags is None else {**identity, "reasoning_tags": list(spec.reasoning_tags)}


def prompt_tokenizer(spec: TeacherSpec) -> str | None:
    """The local tokenizer a teacher's prompts can be counted with before anything runs (None: none here)."""
    return backend_of(spec.backend).tokenizer(spec, options_of(spec))


def teacher_capabilities(spec: TeacherSpec) -> frozenset[str]:
    """What the configured backend can do (every backend generates)."""
    return backend_of(spec.backend).capabilities(spec, options_of(spec))


def missing_capability(backend: str, needed: frozenset[str], have: frozenset[str]) -> str | None:
    """One line saying what a stage needs that the teacher lacks, and how to get it; None when nothing is."""
    missing = sorted(needed - have)
    if not missing:
        return None
    words = "; ".join(CAPABILITY_WORDS.get(m, m) for m in missing)
    hints = backend_of(backend).hints if backend in BACKENDS else {}
    hint = "; ".join(hints[m] for m in missing if m in hints)
    return f"needs {words}, which teacher backend {backend!r} can't provide" + (f" ({hint})" if hint else "")


def check_device(spec: TeacherSpec, where: str) -> None:
    """What the backend can tell is wrong before loading (a device this machine lacks) is a spec error."""
    backend = backend_of(spec.backend)
    if backend.check is not None:
        backend.check(spec, where)


def build_teacher(spec: TeacherSpec, identity: dict[str, Any] | None = None) -> Teacher:
    """Load or connect the configured backend."""
    backend = backend_of(spec.backend)
    identity = identity or teacher_identity(spec)
    return backend.build(replace(spec, batch_size=batch_size(spec)), options_of(spec), identity)


def replica_devices(spec: TeacherSpec) -> int:
    """Accelerators one replica of this teacher spans (e.g. a vLLM engine's tensor x pipeline parallel size)."""
    return backend_of(spec.backend).devices(spec, options_of(spec))


def placement_group_replica(spec: TeacherSpec) -> TeacherSpec:
    """The spec a Ray actor builds a multi-device replica from, inside its placement group; the identity,
    hence cache keys, is unchanged."""
    backend = backend_of(spec.backend)
    return spec if backend.replica_spec is None else backend.replica_spec(spec, options_of(spec))


def requests_in_flight(spec: TeacherSpec) -> int:
    """Requests the backend serves at once when called concurrently (1: calls must not overlap)."""
    return backend_of(spec.backend).in_flight(replace(spec, batch_size=batch_size(spec)), options_of(spec))


_LOADING = threading.Lock()  # in-process models load one at a time (transformers' loading isn't thread-safe)


class LazyTeacher:
    """A teacher whose identity and capabilities are known now and whose backend is built on first use."""

    def __init__(
        self, spec: TeacherSpec, needs: frozenset[str] = frozenset(), log: Callable[[str], None] | None = None
    ):
        """``needs``: what the pipeline will ask of it, probed once when it is built (:class:`Probing`), with each
        fallback taken told to ``log``."""
        self.spec = spec
        self.needs = needs
        self._log = log or (lambda line: print(line, file=sys.stderr))
        self.identity = teacher_identity(spec)
        self.capabilities = teacher_capabilities(spec)
        self.max_in_flight = requests_in_flight(spec)
        self.remote = backend_of(spec.backend).remote
        self._teacher: Teacher | None = None
        self._building = threading.Lock()  # the engine's worker threads may all ask for it at once
        self._journal: tuple[BatchJournal, frozenset[str]] | None = None  # a batch log to hand on when built

    @property
    def loaded(self) -> bool:
        return self._teacher is not None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._built(), name)

    def _built(self) -> Teacher:
        if self._teacher is None:
            with self._building:
                if self._teacher is None:
                    with contextlib.nullcontext() if self.remote else _LOADING:
                        teacher = build_teacher(self.spec, self.identity)
                    try:
                        if self.needs and isinstance(teacher, Probing):
                            for line in teacher.probe(self.needs):
                                self._log(line)
                        if self._journal is not None:  # a batch log handed over before it was built
                            teacher.keep_log(*self._journal)  # type: ignore[attr-defined]
                    except BaseException:
                        if callable(getattr(teacher, "close", None)):
                            teacher.close()  # type: ignore[attr-defined]
                        raise
                    self._teacher = teacher
        return self._teacher

    # -- Batched, without building the backend while the run's log leaves it nothing to do ---------------------
    def keep_log(self, journal: BatchJournal, live: frozenset[str]) -> int:
        """The log is handed on when the backend is built; it is built now only to cancel batches of stages no
        longer live (a fully cached rerun opens no connection and needs no key)."""
        if self._teacher is None and all(i.scope in live for i in open_intents(journal)):
            self._journal = (journal, live)
            return 0
        return self._built().keep_log(journal, live)  # type: ignore[attr-defined]

    def forget_batches(self) -> int:
        return 0 if self._log_idle() else self._built().forget_batches()  # type: ignore[attr-defined]

    def release_batches(self) -> int:
        return 0 if self._log_idle() else self._built().release_batches()  # type: ignore[attr-defined]

    def _log_idle(self) -> bool:
        """Not built, and the batch log handed over records nothing still open: nothing to cancel or release."""
        return self._teacher is None and self._journal is not None and not open_intents(self._journal[0])

    def close(self) -> None:
        """Release the backend (HTTP client, event-loop thread), if it was built."""
        if self._teacher is not None and callable(getattr(self._teacher, "close", None)):
            self._teacher.close()  # type: ignore[attr-defined]
