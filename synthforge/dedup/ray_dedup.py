"""MinHash dedup as a Ray job, equal to the local result document for document.

Signature blocks live in Ray's object store — ``{"file", "row", "sig"[, "sets"]}`` per block, made by Ray
tasks from text chunks (:func:`find_clusters_ray`) or by Ray Data from files (``ray_files``); a document's id
is its row's place in the whole input (``offsets[file] + row``). Nothing corpus-sized reaches the driver but
one label per document:

1. scatter: each block's band keys go to one of P partitions by hash of (band, key), so a bucket lands whole
   on one worker; its signatures go to the partition owning their id range;
2. buckets: each partition turns its buckets into candidate edges (each member to the bucket's smallest
   member and to the member before it, as locally), routed to the range of the edge's smaller id;
3. verify, in two hops: a range attaches the left document's signature to its edges and sends them to the
   range of the right document, which compares and keeps the near-duplicates;
4. components: on the driver while the verified edges number at most ``edge_limit``, else distributed
   min-label propagation (:func:`synthforge.dedup.ray_components.components_ray`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from synthforge.dedup.lsh import band_keys, components, sorted_bucket_edges
from synthforge.dedup.minhash import slot_agreement
from synthforge.dedup.near_duplicates import (
    EDGE_LIMIT,
    Clusters,
    DedupSettings,
    accepted,
    exact_jaccard,
    signatures,
)
from synthforge.dedup.ray_components import components_ray
from synthforge.ray_support import init_ray

_MIX = np.uint64(0x9E3779B97F4A7C15)

Block = dict[str, Any]


def text_block(texts: Sequence[str], start: int, settings: DedupSettings) -> Block:
    """A signature block of documents ``start .. start + len(texts)`` of an in-memory corpus."""
    sigs, sets = signatures(texts, settings)
    rows = np.arange(start, start + len(texts), dtype=np.int64)
    return {"file": np.zeros(len(texts), np.int64), "row": rows, "sig": sigs, "sets": sets}


def columns(block: Any, names: Sequence[str]) -> dict[str, Any]:
    """The named columns of a signature block as numpy arrays: a dict as is, or a Ray Data block (an Arrow
    table; ragged shingle sets become a list of arrays)."""
    if isinstance(block, dict):
        return {name: block.get(name) for name in names}
    from ray.data.block import BlockAccessor

    present = [name for name in names if name in block.column_names]
    found = dict(BlockAccessor.for_block(block.select(present)).to_numpy())
    if "sets" in found:
        found["sets"] = [np.asarray(s, dtype=np.uint32) for s in found["sets"]]
    return {name: found.get(name) for name in names}


def _split(order_key: np.ndarray, parts: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions sorted by part, and where each part starts (for ``np.split``)."""
    order = np.argsort(order_key, kind="stable")
    counts = np.bincount(order_key, minlength=parts)
    return order, np.cumsum(counts)[:-1]


def _range_of(ids: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    return np.searchsorted(bounds, ids, side="right") - 1


def _take(block_sets: list[np.ndarray] | None, positions: np.ndarray) -> list[np.ndarray] | None:
    return None if block_sets is None else [block_sets[i] for i in positions.tolist()]


def scatter(block: Block, offsets: np.ndarray, bounds: np.ndarray, bands: int, rows: int) -> tuple:
    """Split a block into P band-key partitions (band, key, id) and P id-range signature pieces."""
    parts = len(bounds) - 1
    block = columns(block, ("file", "row", "sig", "sets"))
    ids = offsets[block["file"]] + block["row"]
    keys = band_keys(block["sig"], bands, rows).reshape(-1)
    band_of = np.tile(np.arange(bands, dtype=np.int64), len(ids))
    docs = np.repeat(ids, bands)
    partition = ((keys ^ (band_of.astype(np.uint64) * _MIX)) % np.uint64(parts)).astype(np.int64)
    order, cuts = _split(partition, parts)
    band_parts = [(band_of[o], keys[o], docs[o]) for o in np.split(order, cuts)]
    order, cuts = _split(_range_of(ids, bounds), parts)
    sig_parts = [
        {"ids": ids[o], "sig": block["sig"][o], "sets": _take(block["sets"], o)} for o in np.split(order, cuts)
    ]
    return (*band_parts, *sig_parts)


def bucket_edges(bounds: np.ndarray, *pieces: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple:
    """Candidate edges of every bucket in one partition, as (smaller id, larger id), split by the smaller id's range."""
    parts = len(bounds) - 1
    band_of = np.concatenate([p[0] for p in pieces])
    keys = np.concatenate([p[1] for p in pieces])
    docs = np.concatenate([p[2] for p in pieces])
    order = np.lexsort((docs, keys, band_of))
    b, k, d = band_of[order], keys[order], docs[order]
    left, right = sorted_bucket_edges(d, (b[1:] == b[:-1]) & (k[1:] == k[:-1]))
    low, high = np.minimum(left, right), np.maximum(left, right)
    keep = low != high
    low, high = low[keep], high[keep]
    order, cuts = _split(_range_of(low, bounds), parts)
    return tuple((low[o], high[o]) for o in np.split(order, cuts))


def _merged(sig_pieces: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]:
    """The signatures of one id range (from every block), sorted by id."""
    ids = np.concatenate([p["ids"] for p in sig_pieces])
    sig = np.concatenate([p["sig"] for p in sig_pieces])
    sets = None if sig_pieces[0]["sets"] is None else [s for p in sig_pieces for s in p["sets"]]
    order = np.argsort(ids, kind="stable")
    return ids[order], sig[order], _take(sets, order)


def attach_left(bounds: np.ndarray, n_sig: int, *pieces) -> tuple:
    """Hop 1 of verification in one id range (``pieces``: its ``n_sig`` signature pieces, then its edges):
    the edges, deduplicated, with the left document's signature (and shingle set), split by the right's range."""
    parts = len(bounds) - 1
    ids, sig, sets = _merged(pieces[:n_sig])
    edge_pieces = pieces[n_sig:]
    pairs = np.stack([np.concatenate([p[0] for p in edge_pieces]), np.concatenate([p[1] for p in edge_pieces])], 1)
    pairs = np.unique(pairs, axis=0) if len(pairs) else pairs
    at = np.searchsorted(ids, pairs[:, 0])
    order, cuts = _split(_range_of(pairs[:, 1], bounds), parts)
    return tuple((pairs[o, 0], pairs[o, 1], sig[at[o]], _take(sets, at[o])) for o in np.split(order, cuts))


def verify(settings: DedupSettings, n_sig: int, *pieces) -> tuple[np.ndarray, ...]:
    """Hop 2 in one id range (its ``n_sig`` signature pieces, then the hop-1 edges sent to it): compare each
    edge's two documents; (left, right, similarity) of those kept."""
    ids, sig, sets = _merged(pieces[:n_sig])
    hops = pieces[n_sig:]
    left = np.concatenate([h[0] for h in hops])
    right = np.concatenate([h[1] for h in hops])
    at = np.searchsorted(ids, right)
    if settings.verify == "exact":
        left_sets = [s for h in hops for s in h[3]]
        similarity = np.array([exact_jaccard(a, sets[i]) for a, i in zip(left_sets, at.tolist(), strict=True)])
    else:
        similarity = slot_agreement(np.concatenate([h[2] for h in hops]), sig[at])
    keep = accepted(similarity.astype(np.float64), settings)
    return left[keep], right[keep], similarity[keep]


def _only(fn: Callable, *args: Any) -> Any:
    """The one part of a one-part split."""
    (part,) = fn(*args)
    return part


def _length(edges: tuple[np.ndarray, ...]) -> int:
    return len(edges[0])


def cluster_blocks(
    blocks: list[Any],
    offsets: np.ndarray,
    n: int,
    settings: DedupSettings,
    parts: int,
    edge_limit: int | None = EDGE_LIMIT,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """Cluster labels (smallest member id) of the ``n`` documents in signature ``blocks`` (object refs), and
    the verified edges sorted by (left, right) when they were gathered (at most ``edge_limit`` of them; None:
    always)."""
    import ray

    def fanout(fn: Callable, returns: int, *args: Any) -> list[Any]:
        """Run ``fn`` (which returns a tuple of ``returns`` parts) as a task with one object per part."""
        if returns == 1:
            return [ray.remote(_only).remote(fn, *args)]
        return ray.remote(fn).options(num_returns=returns).remote(*args)

    bands, rows = settings.bands()
    bounds = np.linspace(0, n, parts + 1).astype(np.int64)
    scattered = [fanout(scatter, 2 * parts, b, offsets, bounds, bands, rows) for b in blocks]
    buckets = [fanout(bucket_edges, parts, bounds, *[s[p] for s in scattered]) for p in range(parts)]
    sig_pieces = [[s[parts + q] for s in scattered] for q in range(parts)]
    hops = [
        fanout(attach_left, parts, bounds, len(blocks), *sig_pieces[q], *[b[q] for b in buckets]) for q in range(parts)
    ]
    check = ray.remote(verify)
    edges = [check.remote(settings, len(blocks), *sig_pieces[q], *[h[q] for h in hops]) for q in range(parts)]
    if edge_limit is not None and sum(ray.get([ray.remote(_length).remote(e) for e in edges])) > edge_limit:
        return components_ray(n, edges), None
    found = ray.get(edges)
    left = np.concatenate([e[0] for e in found])
    right = np.concatenate([e[1] for e in found])
    similarity = np.concatenate([e[2] for e in found]).astype(np.float64)
    order = np.lexsort((right, left))
    left, right, similarity = left[order], right[order], similarity[order]
    return components(n, left, right), (left, right, similarity)


def find_clusters_ray(
    texts: Sequence[str],
    settings: DedupSettings,
    workers: int = 2,
    chunk: int = 20_000,
    progress: Callable[[int], None] | None = None,
) -> Clusters:
    """The same clusters as :func:`synthforge.dedup.near_duplicates.find_clusters`, computed on Ray (the
    corpus is in memory, so its verified edges are gathered too)."""
    ray = init_ray(workers)
    settings_ref = ray.put(settings)
    make = ray.remote(num_cpus=1)(text_block)
    starts = range(0, len(texts), chunk)
    blocks = [make.remote(list(texts[s : s + chunk]), s, settings_ref) for s in starts]
    for start, block in zip(starts, blocks, strict=True):
        ray.wait([block], fetch_local=False)
        if progress:
            progress(min(chunk, len(texts) - start))
    labels, edges = cluster_blocks(blocks, np.zeros(1, np.int64), len(texts), settings, workers, edge_limit=None)
    assert edges is not None
    return Clusters(labels, *edges)
