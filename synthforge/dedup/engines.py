"""Where deduplication runs: the one module that knows both engines. The local core (``near_duplicates``,
``files``) knows nothing of Ray; the Ray engine (``ray_dedup``, ``ray_files``) builds on it; callers (the
``minhash_dedup`` stage, ``synthforge dedup``) choose through here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from synthforge.dedup.local_files import DedupReport, dedup_files
from synthforge.dedup.near_duplicates import Clusters, DedupSettings, find_clusters, keep_scores, representatives
from synthforge.files import writing

ENGINES = ("local", "ray")
DEFAULT_RAY_WORKERS = 2  # Ray workers when none are named (`synthforge dedup --workers`, `minhash_dedup`)


def choose_kept(
    texts: Sequence[str],
    confidences: Sequence[float],
    settings: DedupSettings,
    keep: str,
    progress: Callable[[int], None] | None = None,
    workers: int = 0,
) -> tuple[np.ndarray, Clusters]:
    """Cluster ``texts`` and pick each cluster's kept member by the ``keep`` policy: returns, per document,
    the index of the document kept for its cluster (itself when it is kept), and the clusters. ``workers``
    > 0 runs the clustering as a Ray job on that many workers (same result)."""
    if workers > 0:
        from synthforge.dedup.ray_dedup import find_clusters_ray

        clusters = find_clusters_ray(texts, settings, workers, progress=progress)
    else:
        clusters = find_clusters(texts, settings, progress)
    return representatives(clusters.labels, keep_scores(keep, texts, confidences)), clusters


def dedup_files_on(
    engine: str,
    inputs: list[Path],
    out: Path,
    settings: DedupSettings,
    key: str,
    keep: str,
    progress: Callable[[int], None] | None = None,
    workers: int = 2,
    edge_limit: int | None = None,
) -> DedupReport:
    """Deduplicate files on ``engine`` ("local" in this process; "ray": streamed through Ray Data); both write
    the same output. A file system refusing a write (full, read-only) is one line; the old output stays whole."""
    with writing(out):
        if engine == "ray":
            from synthforge.dedup.ray_files import dedup_files_ray
            from synthforge.ray_support import import_ray

            import_ray()  # one line telling how to install it when missing
            extra = {} if edge_limit is None else {"edge_limit": edge_limit}
            return dedup_files_ray(inputs, out, settings, key, keep, workers, progress, **extra)
        return dedup_files(inputs, out, settings, key, keep, progress)
