"""Benchmark decontamination: an index of every word n-gram (default 13) of evaluation texts, queried
with training prompts. Eval texts shorter than n words (but at least ``min_words``) match as a whole."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthforge.dedup.shingles import ShingleHasher, Shingling, tokens
from synthforge.errors import UserError
from synthforge.files import read_text
from synthforge.rows import iter_json_values

EVAL_SUFFIXES = (".jsonl", ".json", ".txt", ".parquet")


@dataclass
class Hit:
    """A contaminated text: the eval file it overlaps and the shared words."""

    source: str
    words: str


def read_eval_texts(path: Path) -> list[str]:
    """Every text in an evaluation file: each string value of each JSON line (nested too), each
    non-blank line of a .txt file, or each string cell of a .parquet file."""
    if not path.is_file():
        raise UserError(f"evaluation file {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [line for line in read_text(path, "eval file").splitlines() if line.strip()]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return [v for row in table.to_pylist() for v in _strings(row)]
    if suffix in (".jsonl", ".json"):
        return [text for _, value in iter_json_values(path, "eval file") for text in _strings(value)]
    raise UserError(f"evaluation file {path}: unsupported type (expected one of {', '.join(EVAL_SUFFIXES)})")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


class NgramIndex:
    """64-bit hashes of eval n-grams (and of whole short eval texts), each tagged with its source."""

    def __init__(self, ngram: int = 13, min_words: int = 8):
        self.ngram, self.min_words = ngram, min_words
        self.sources: list[str] = []
        self._tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # size -> (sorted hashes, source ids)
        self._hashers: dict[int, ShingleHasher] = {}

    def _hasher(self, size: int) -> ShingleHasher:
        """One hasher per n-gram size, kept across calls (it caches its power tables)."""
        if size not in self._hashers:
            self._hashers[size] = ShingleHasher(Shingling(size, "word"))
        return self._hashers[size]

    def add(self, source: str, texts: Iterable[str]) -> None:
        """Index ``texts`` as coming from ``source`` (e.g. the eval file's path)."""
        source_id = len(self.sources)
        self.sources.append(source)
        by_size: dict[int, list[str]] = {}
        for text in texts:
            size = len(tokens(text, "word"))
            if size >= self.ngram:
                by_size.setdefault(self.ngram, []).append(text)
            elif size >= self.min_words:
                by_size.setdefault(size, []).append(text)
        for size, group in by_size.items():
            hashes, _ = self._hasher(size).hash_texts(group, wide=True)
            old_hashes, old_ids = self._tables.get(size, (np.zeros(0, np.uint64), np.zeros(0, np.int32)))
            merged = np.concatenate([old_hashes, hashes])
            ids = np.concatenate([old_ids, np.full(len(hashes), source_id, np.int32)])
            order = np.argsort(merged, kind="stable")
            self._tables[size] = (merged[order], ids[order])

    def __len__(self) -> int:
        return sum(len(h) for h, _ in self._tables.values())

    def query(self, texts: Sequence[str]) -> list[Hit | None]:
        """For each text, its first overlap with the index, or None."""
        hits: list[Hit | None] = [None] * len(texts)
        for size, (table, ids) in sorted(self._tables.items(), reverse=True):
            hashes, offsets = self._hasher(size).hash_texts(texts, wide=True)
            if not len(hashes) or not len(table):
                continue
            where = np.minimum(np.searchsorted(table, hashes), len(table) - 1)
            found = np.flatnonzero(table[where] == hashes)
            owners = np.searchsorted(offsets, found, side="right") - 1
            for position, owner in zip(found.tolist(), owners.tolist(), strict=True):
                if hits[owner] is not None:
                    continue
                words = tokens(texts[owner], "word")
                if len(words) >= size:
                    start = position - int(offsets[owner])
                    hits[owner] = Hit(self.sources[int(ids[where[position]])], " ".join(words[start : start + size]))
        return hits
