"""MinHash dedup as a Ray job, equal to the local result document for document.

1. Signatures and band keys are computed in parallel Ray tasks over chunks of the corpus (the same
   vectorised code as locally, so the same values).
2. Band keys are shuffled by (band, key): each partition task receives every (band, key, document) whose
   key hashes to it, so a bucket lands whole on one worker, and turns each bucket into the local edges:
   every member to the bucket's first (smallest) member and to the member before it.
3. Edges are verified and joined into connected components on the driver (while the edge list fits in
   memory, which it does far past the signature matrix), then the kept ids are chosen as locally.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from synthforge.dedup.lsh import band_keys
from synthforge.dedup.near_duplicates import Clusters, DedupSettings, signatures, verified_clusters


def _signature_task(texts: Sequence[str], settings: DedupSettings, bands: int, rows: int):
    sigs, sets = signatures(texts, settings)
    return sigs, sets, band_keys(sigs, bands, rows)


def _bucket_task(bands_idx: np.ndarray, keys: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges of the buckets in one partition: (band, key) groups of document ids, sorted."""
    order = np.lexsort((docs, keys, bands_idx))
    b, k, d = bands_idx[order], keys[order], docs[order]
    same = (b[1:] == b[:-1]) & (k[1:] == k[:-1])
    if not same.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    head_pos = np.maximum.accumulate(np.where(np.r_[True, ~same], np.arange(len(d)), 0))
    members = np.flatnonzero(same) + 1
    left = np.concatenate([d[head_pos[members]], d[members - 1]])
    right = np.concatenate([d[members], d[members]])
    return left, right


def find_clusters_ray(
    texts: Sequence[str],
    settings: DedupSettings,
    workers: int = 2,
    chunk: int = 20_000,
    progress: Callable[[int], None] | None = None,
) -> Clusters:
    """The same clusters as :func:`synthforge.dedup.near_duplicates.find_clusters`, computed on Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    bands, rows = settings.bands()
    remote_sig = ray.remote(num_cpus=1)(_signature_task)
    settings_ref = ray.put(settings)
    futures = [
        remote_sig.remote(list(texts[start : start + chunk]), settings_ref, bands, rows)
        for start in range(0, len(texts), chunk)
    ]
    parts = []
    for future in futures:  # in corpus order
        parts.append(ray.get(future))
        if progress:
            progress(len(parts[-1][0]))
    sigs = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, settings.num_perm), np.uint32)
    keys = np.concatenate([p[2] for p in parts]) if parts else np.zeros((0, bands), np.uint64)
    sets = [s for p in parts for s in (p[1] or [])] if settings.verify == "exact" else None
    # Shuffle by (band, key): a bucket's members all go to the partition its key hashes to.
    flat_keys = keys.reshape(-1)
    flat_bands = np.tile(np.arange(bands, dtype=np.int64), len(keys))
    flat_docs = np.repeat(np.arange(len(keys), dtype=np.int64), bands)
    partition = (flat_keys ^ (flat_bands.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))) % np.uint64(workers)
    remote_bucket = ray.remote(num_cpus=1)(_bucket_task)
    edge_futures = []
    for p in range(workers):
        mask = partition == np.uint64(p)
        edge_futures.append(remote_bucket.remote(flat_bands[mask], flat_keys[mask], flat_docs[mask]))
    edges = ray.get(edge_futures)
    left = np.concatenate([e[0] for e in edges]) if edges else np.zeros(0, np.int64)
    right = np.concatenate([e[1] for e in edges]) if edges else np.zeros(0, np.int64)
    if len(left):
        pairs = np.unique(np.stack([np.minimum(left, right), np.maximum(left, right)], axis=1), axis=0)
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        left, right = pairs[:, 0], pairs[:, 1]
    return verified_clusters(sigs, sets, left, right, settings)
