"""The ``teacher:`` section of a pipeline (which backend, which model, and the backend's own settings under
a key named after it) and the :class:`Backend` record each backend module exports.

Plain data, validated key by key like every stage setting; ``synthforge.teachers.factory`` looks the backend
up in its registry and turns the spec into an identity (without loading anything) and into a teacher.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from synthforge.teachers.reasoning import THINK_TAGS

COMMON_KEYS = ("model", "backend", "batch_size", "device", "max_retries", "reasoning_tags")


@dataclass
class TeacherSpec:
    """Which teacher to use and how to run it; ``batch_size``, ``device`` and retries don't change cache keys.

    ``batch_size`` is the number of records per checkpointed unit and teacher call; null picks the backend's
    default (16 in-process, 256 for a server, 1024 for vLLM, which schedule their own batches). ``options``:
    the backend's own settings (the ``teacher.<backend>:`` section, e.g. ``teacher.openai``), or None for its
    defaults. ``reasoning_tags``: the opening and closing tag of a reasoning model's thinking, split from its
    answers (null: ``<think>``/``</think>``; an empty list: answers are never split).
    """

    model: str = "embedded"
    backend: str = "transformers"
    batch_size: int | None = None
    device: str | None = None
    max_retries: int = 2
    reasoning_tags: list[str] | None = None
    options: Any = None

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if not self.model.strip():
            raise ValueError("model must not be empty")
        tags = self.reasoning_tags
        if tags is not None and (len(tags) not in (0, 2) or (tags and not all(t.strip() for t in tags))):
            raise ValueError(f"reasoning_tags must be [opening, closing] (or [] to never split), got {tags!r}")

    @property
    def tags(self) -> tuple[str, ...]:
        """The thinking tags answers are split at (none: never split)."""
        return THINK_TAGS if self.reasoning_tags is None else tuple(self.reasoning_tags)


def _one(spec: TeacherSpec, options: Any) -> int:
    return 1


def _no_tokenizer(spec: TeacherSpec, options: Any) -> str | None:
    return None


@dataclass(frozen=True)
class Backend:
    """Everything the factory needs to know about one backend (one module in ``teachers/backends/``).

    ``settings``: the dataclass of its ``teacher.<name>:`` section (None: it has none). The callables take the
    spec and the resolved settings: ``identity`` (what identifies its outputs, from the spec alone: part of
    every cache key), ``capabilities`` (what it can do beyond generating), ``build`` (load or connect),
    ``devices`` (accelerators one replica spans), ``replica_spec`` (the spec a multi-device replica is built
    from inside its placement group), ``check`` (problems found before loading, e.g. a missing device).
    ``hints``: per capability, the setting that provides it when it is missing. ``ref_overrides``: how the
    part after ``NAME:`` of ``--teacher NAME:REST`` becomes ``--set`` assignments (default: the model).
    ``in_flight``: requests it serves at once when called from several threads (1: calls must not overlap); the
    engine keeps about twice that many in flight. ``tokenizer``: the local tokenizer (a model reference) its
    prompts are counted with before anything runs (the dry run's cost bound), None when it has none here.
    """

    name: str
    settings: type | None
    identity: Callable[[TeacherSpec, Any], dict[str, Any]]
    capabilities: Callable[[TeacherSpec, Any], frozenset[str]]
    build: Callable[[TeacherSpec, Any, dict[str, Any]], Any]
    batch_size: int
    devices: Callable[[TeacherSpec, Any], int] = _one
    replica_spec: Callable[[TeacherSpec, Any], TeacherSpec] | None = None
    check: Callable[[TeacherSpec, str], None] | None = None
    hints: dict[str, str] = field(default_factory=dict)
    ref_overrides: Callable[[str], list[str]] | None = None
    in_flight: Callable[[TeacherSpec, Any], int] = _one  # requests it serves at once when called concurrently
    remote: bool = False  # a server over the network: probed with one batch per stage unless ready() says it is up
    tokenizer: Callable[[TeacherSpec, Any], str | None] = _no_tokenizer  # counts its prompts (the dry run's bound)
