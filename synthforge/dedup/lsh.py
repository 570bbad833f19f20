"""LSH banding over signature matrices, candidate pairs, and global clusters as connected components.

Band sizes come from datasketch's own optimiser (the ``b``, ``r`` its ``MinHashLSH`` picks for a
threshold), so our candidate sets match its index. Clusters are connected components over every band
collision of the whole corpus: global and transitive, whatever the batch a document arrived in.
"""

from __future__ import annotations

import numpy as np
from datasketch.lsh import _optimal_param

_MIX = np.uint64(0x9E3779B97F4A7C15)


def band_params(threshold: float, num_perm: int, weights: tuple[float, float] = (0.5, 0.5)) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false-positive + false-negative area, as ``MinHashLSH`` does."""
    return _optimal_param(threshold, num_perm, weights[0], weights[1])


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(documents x bands) uint64 key of each band's ``rows`` signature values (a 64-bit mix)."""
    keys = np.zeros((len(signatures), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            block = signatures[:, band * rows : (band + 1) * rows].astype(np.uint64)
            acc = np.full(len(signatures), np.uint64(band + 1), dtype=np.uint64)
            for column in range(rows):
                acc = (acc ^ block[:, column]) * _MIX
                acc ^= acc >> np.uint64(31)
            keys[:, band] = acc
    return keys


def bucket_edges(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges linking documents that share a bucket in some band: each member to the bucket's first
    member and to the member before it (so a chain survives when one link is rejected later)."""
    lefts, rights = [], []
    for band in range(keys.shape[1]):
        order = np.argsort(keys[:, band], kind="stable")
        sorted_keys = keys[order, band]
        same = sorted_keys[1:] == sorted_keys[:-1]
        if not same.any():
            continue
        left, right = sorted_bucket_edges(order, same)
        lefts.append(left)
        rights.append(right)
    if not lefts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    left, right = np.concatenate(lefts), np.concatenate(rights)
    pairs = np.unique(np.stack([np.minimum(left, right), np.maximum(left, right)], axis=1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return pairs[:, 0], pairs[:, 1]


def sorted_bucket_edges(docs: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges of buckets in ``docs`` sorted by bucket (``same[i]``: ``docs[i + 1]`` shares ``docs[i]``'s bucket):
    each member to its bucket's first member and to the member before it."""
    head_pos = np.maximum.accumulate(np.where(np.r_[True, ~same], np.arange(len(docs)), 0))
    members = np.flatnonzero(same) + 1
    return np.concatenate([docs[head_pos[members]], docs[members - 1]]), np.concatenate([docs[members], docs[members]])


def bucket_pairs(keys: np.ndarray) -> set[tuple[int, int]]:
    """Every pair of documents sharing a bucket in some band (what an LSH query returns; for evaluation)."""
    found: set[tuple[int, int]] = set()
    for band in range(keys.shape[1]):
        buckets: dict[int, list[int]] = {}
        for doc, key in enumerate(keys[:, band].tolist()):
            buckets.setdefault(key, []).append(doc)
        for members in buckets.values():
            found.update((a, b) for i, a in enumerate(members) for b in members[i + 1 :])
    return found


def components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes (the smallest node index in its component)."""
    labels = np.arange(n)
    if len(left) == 0:
        return labels
    while True:  # min-label propagation with pointer jumping: O(log n) rounds on chains
        low = np.minimum(labels[left], labels[right])
        before = labels.copy()
        np.minimum.at(labels, left, low)
        np.minimum.at(labels, right, low)
        labels = pointer_jump(labels)
        if np.array_equal(labels, before):
            return labels


def pointer_jump(labels: np.ndarray) -> np.ndarray:
    """Follow label pointers to their end (``labels[labels]`` until it stops changing)."""
    labels = labels[labels]
    while True:
        jumped = labels[labels]
        if np.array_equal(jumped, labels):
            return labels
        labels = jumped
