"""The run's teachers by name: the pipeline's ``teacher:`` as ``default``, and each entry of its ``teachers:``
mapping under its own name. Stages name the teacher they call (``teacher: NAME``); a pool or a jury names
several. Each is its own teacher object (its own model, or its own HTTP client, request window and rate limits)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from synthforge.teachers.base import Teacher

DEFAULT = "default"  # the pipeline's `teacher:`


class Team(Mapping[str, Teacher]):
    """Teachers by name (``DEFAULT``: the pipeline's ``teacher:``)."""

    def __init__(self, teachers: Mapping[str, Teacher]):
        self._teachers = dict(teachers)

    @classmethod
    def of(cls, teacher: Teacher | None) -> Team:
        """A team of one: ``teacher`` as the default (none for a run that calls no teacher)."""
        return cls({DEFAULT: teacher} if teacher is not None else {})

    @property
    def default(self) -> Teacher | None:
        return self._teachers.get(DEFAULT)

    def __getitem__(self, name: str) -> Teacher:
        return self._teachers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._teachers)

    def __len__(self) -> int:
        return len(self._teachers)

    def distinct(self) -> list[Teacher]:
        """Each teacher once (names with the same settings share one)."""
        return list({id(t): t for t in self._teachers.values()}.values())

    def close(self) -> None:
        """Release every teacher that holds something (an HTTP client, an event-loop thread)."""
        for teacher in self.distinct():
            close = getattr(teacher, "close", None)
            if callable(close):
                close()
