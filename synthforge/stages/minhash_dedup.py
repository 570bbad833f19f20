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
from synthforge.dedup.engines import DEFAULT_RAY_WORKERS, ENGINES, choose_kept
from synthforge.dedup.keys import KEYS, compared_text
from synthforge.dedup.near_duplicates import KEEP, DedupSettings
from synthforge.records import Drop, Record
from synthforge.settings import renamed
from synthforge.stages.base import DatasetStage, Journal
from synthforge.teachers.base import Teacher
from synthforge.trace import DEDUP_STEP


@dataclass
class MinHashDedupConfig:
    """What text is compared (``key``), which record of a cluster stays (``keep``), and the MinHash settings."""

    key: str = "prompt"
    keep: str = "first"
    minhash: DedupSettings = field(default_factory=DedupSettings)
    engine: str | None = None  # where the clustering runs, as for `synthforge dedup --engine`: local | ray;
    # null: ray when `workers` is set or the run is on Ray (--engine ray), else local (same result either way)
    workers: int = renamed(
        "ray_workers", default=0
    )  # Ray workers (0: the run's Ray workers under --engine ray, else 2); read
    # under its older name ray_workers too. Neither is in the cache key: the clusters are the same

    def __post_init__(self) -> None:
        if self.key not in KEYS:
            raise ValueError(f"key must be one of {', '.join(KEYS)}")
        if self.engine not in (None, *ENGINES):
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.keep not in KEEP:
            raise ValueError(f"keep must be one of {', '.join(KEEP)}")


def key_text(record: Record, key: str) -> str:
    """The text compared for ``record`` (:mod:`synthforge.dedup.keys`: the last user turn, the final answer, both,
    or the whole conversation)."""
    return compared_text(key, record.dialogue, record.response)


class MinHashDedup(DatasetStage):
    kind = "minhash_dedup"
    traces = (DEDUP_STEP,)
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
        """Where the clustering runs doesn't change it: ``engine`` and ``workers`` are left out of the cache key."""
        parts = super().fingerprint()
        parts["config"] = {k: v for k, v in parts["config"].items() if k not in ("engine", "workers")}
        return parts

    def distributed(self, workers: int) -> MinHashDedup:
        """Under an executor with workers (``--engine ray``), cluster as a Ray job on them unless the settings
        say where (``engine: local``, or their own ``workers``)."""
        if workers < 1 or self.config.workers or self.config.engine == "local":
            return self
        settings = {k: v for k, v in self.settings.items() if k != "ray_workers"}
        return MinHashDedup(self.name, {**settings, "workers": workers}, self.resources, self.where)

    def ray_workers(self) -> int:
        """Workers of the Ray job the clustering runs as; 0: it runs in this process."""
        engine = self.config.engine or ("ray" if self.config.workers else "local")
        return 0 if engine == "local" else self.config.workers or DEFAULT_RAY_WORKERS

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
            texts, confidences, self.config.minhash, self.config.keep, progress, self.ray_workers()
        )
        sizes = clusters.sizes()
        results: list[Record | Drop] = []
        for i, record in enumerate(records):
            if best[i] == i:
                results.append(record)
                continue
            kept = records[int(best[i])]
            step = DEDUP_STEP.make(self.name, duplicate_of=kept.id, cluster_size=int(sizes[i]))
            dropped = Record(**{**record.to_dict(), "steps": [*record.steps, step]})
            results.append(self.drop(dropped, f"near-duplicate (of {kept.id}, cluster of {int(sizes[i])})"))
        return results
