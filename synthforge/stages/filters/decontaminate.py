"""Drop records whose prompt shares a long word n-gram (default 13) with any text of the given eval
files, so benchmarks don't leak into training; drops name the eval file (counted per file in the run)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthforge.dedup.contamination import EVAL_SUFFIXES, NgramIndex, read_eval_texts
from synthforge.hashing import file_sha256
from synthforge.records import Record
from synthforge.settings import SpecError
from synthforge.stages.filters.base import FilterStage, check_fields, field_text


@dataclass
class DecontaminateConfig:
    """``eval_files`` (JSONL/JSON lines, TXT, parquet; relative to the pipeline file), n-gram size, fields."""

    eval_files: tuple[str, ...] = ()
    ngram: int = 13
    min_words: int = 8
    fields: tuple[str, ...] = ("prompt",)

    def __post_init__(self) -> None:
        check_fields(self.fields)
        if not self.eval_files:
            raise ValueError("eval_files: give at least one evaluation file")
        if self.ngram < 1 or self.min_words < 1:
            raise ValueError("ngram and min_words must be >= 1")


class Decontaminate(FilterStage):
    kind = "decontaminate"
    Config = DecontaminateConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        base = self.resources.base_dir or Path(".")
        self.paths = [(base / p).resolve() for p in self.config.eval_files]
        for given, path in zip(self.config.eval_files, self.paths, strict=True):
            if not path.is_file():
                raise SpecError(f"{self.where}.eval_files: {given}: evaluation file not found ({path})")
            if path.suffix.lower() not in EVAL_SUFFIXES:
                raise SpecError(
                    f"{self.where}.eval_files: {given}: unsupported type (expected one of {', '.join(EVAL_SUFFIXES)})"
                )
        self._index: NgramIndex | None = None  # built on first use, where the stage runs

    @property
    def index(self) -> NgramIndex:
        """The n-gram index of every evaluation text (built once, lazily)."""
        if self._index is None:
            self._index = NgramIndex(self.config.ngram, self.config.min_words)
            for path in self.paths:
                self._index.add(str(path.name), read_eval_texts(path))
        return self._index

    def fingerprint(self) -> dict[str, Any]:
        """Eval files by the name the pipeline gives them (not where this machine keeps them) and content."""
        hashes = {given: file_sha256(p) for given, p in zip(self.config.eval_files, self.paths, strict=True)}
        return {**super().fingerprint(), "eval_files": hashes}

    def files(self) -> dict[str, str]:
        return {**super().files(), **{str(p): file_sha256(p) for p in self.paths}}

    def verdicts(self, batch: list[Record]) -> list[bool | tuple[bool, str]]:
        """All records of a batch looked up at once (the index queries a batch in one vectorised pass)."""
        found: list[bool | tuple[bool, str]] = [True] * len(batch)
        for name in self.config.fields:
            hits = self.index.query([field_text(r, name) or "" for r in batch])
            for i, hit in enumerate(hits):
                if hit is not None and found[i] is True:
                    found[i] = (False, f"contaminated by {hit.source} ({name} shares: {hit.words!r})")
        return found

    def filter(self, record: Record) -> bool | tuple[bool, str]:
        return self.verdicts([record])[0]
