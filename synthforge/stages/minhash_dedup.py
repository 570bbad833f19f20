"""Near-duplicate removal over the whole run: MinHash + LSH + union-find clusters; one record kept per cluster.

Clusters are global and transitive (A~B, B~C: one cluster even when A and C are below the threshold).
The kept record is chosen by ``keep``: "first" (input order), "longest" (by the key text), or
"confidence" (the judge's preference confidence). Others go to the drop ledger naming the kept record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from synthforge.annotations import PREFERENCE
from synthforge.dedup.engines import choose_kept
from synthforge.dedup.keys import KEYS, compared_text
from synthforge.dedup.near_duplicates import KEEP, DedupSettings
from synthforge.records import Drop, Record
from synthforge.stages.base import DatasetStage, Journal
from synthforge.teachers.base import Teacher


@dataclass
class MinHashDedupConfig:
    """What text is compared (``key``), which record of a cluster stays (``keep``), and the MinHash settings."""

    key: str = "prompt"
    keep: str = "first"
    minhash: DedupSettings = field(default_factory=DedupSettings)
    ray_workers: int = 0  # > 0: cluster as a Ray job on this many workers (same result; not in the cache key);
    # 0 under --engine ray: the engine's CPUs

    def __post_init__(self) -> None:
        if self.key not in KEYS:
            raise ValueError(f"key must be one of {', '.join(KEYS)}")
        if self.keep not in KEEP:
            raise ValueError(f"keep must be one of {', '.join(KEEP)}")


def key_text(record: Record, key: str) -> str:
    """The text compared for ``record`` (:mod:`synthforge.dedup.keys`: the last user turn, the final answer, both,
    or the whole conversation)."""
    return compared_text(key, record.dialogue, record.response)


class MinHashDedup(DatasetStage):
    kind = "minhash_dedup"
    Config = MinHashDedupConfig
    uses_teacher = False

    def fields_read(self) -> tuple[str, ...]:
        return (
            ("prompt", "response")
            if self.config.key == "both"
            else ("prompt",)
            if self.config.key == "conversation"
            else (self.config.key,)
        )

    def fingerprint(self) -> dict[str, Any]:
        """Where the clustering runs doesn't change it: ``ray_workers`` is left out of the cache key."""
        parts = super().fingerprint()
        parts["config"] = {k: v for k, v in parts["config"].items() if k != "ray_workers"}
        return parts

    def distributed(self, workers: int) -> MinHashDedup:
        """Under an executor with workers (``--engine ray``), cluster as a Ray job unless ``ray_workers`` says."""
        if workers < 1 or self.config.ray_workers:
            return self
        return MinHashDedup(self.name, {**self.settings, "ray_workers": workers}, self.resources, self.where)

    def process_all(
        self,
        records: list[Record],
        teacher: Teacher | None,
        progress: Callable[[int], None],
        journal: Journal | None = None,
    ) -> list[Record | Drop]:
        texts = [key_text(r, self.config.key) for r in records]
        confidences = [p.confidence if (p := PREFERENCE.of(r)) is not None else 0.0 for r in records]
        best, clusters = choose_kept(
            texts, confidences, self.config.minhash, self.config.keep, progress, self.config.ray_workers
        )
        sizes = clusters.sizes()
        results: list[Record | Drop] = []
        for i, record in enumerate(records):
            if best[i] == i:
                results.append(record)
                continue
            kept = records[int(best[i])]
            step = {"stage": self.name, "role": "dedup", "duplicate_of": kept.id, "cluster_size": int(sizes[i])}
            dropped = Record(**{**record.to_dict(), "steps": [*record.steps, step]})
            results.append(self.drop(dropped, f"near-duplicate (of {kept.id}, cluster of {int(sizes[i])})"))
        return results
