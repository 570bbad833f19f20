"""Find near-duplicate clusters in a corpus: shingles → MinHash signatures → LSH bands → verified
candidate edges → connected components. The library entry point behind the stage and ``synthforge dedup``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from synthforge.dedup.lsh import band_keys, band_params, bucket_edges, components
from synthforge.dedup.minhash import MinHasher, estimated_jaccard
from synthforge.dedup.shingles import ShingleHasher, Shingling

VERIFY = ("signature", "exact", "none")

MIN_PERM, MAX_PERM = 2, 4096  # signatures hold 4 bytes per permutation per row: 4,096 is 16 KiB a row
EDGE_LIMIT = 50_000_000  # verified edges joined on the driver (16 bytes each); more go distributed (Ray)


@dataclass
class DedupSettings:
    """Similarity threshold (Jaccard), signature size, shingling, and how candidate pairs are checked.

    ``verify``: "signature" keeps a candidate pair when its MinHash estimate reaches ``threshold -
    tolerance``; "exact" computes the Jaccard similarity of the two shingle sets; "none" keeps every
    pair that shares a band (datasketch's ``MinHashLSH`` behaviour).
    ``false_negative_weight`` steers the band choice (datasketch's optimiser, weights fn and 1 - fn):
    None picks 0.5 (datasketch's default) without verification and 0.9 with it, since verification
    removes the extra false positives that the more sensitive bands let in.
    """

    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 5
    unit: str = "word"
    seed: int = 1
    verify: str = "signature"
    tolerance: float = 0.0
    false_negative_weight: float | None = None
    batch_size: int = 4096

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError("threshold must be between 0 and 1")
        if not MIN_PERM <= self.num_perm <= MAX_PERM:
            raise ValueError(f"num_perm must be between {MIN_PERM} and {MAX_PERM}")
        if self.verify not in VERIFY:
            raise ValueError(f"verify must be one of {', '.join(VERIFY)}")
        if self.false_negative_weight is not None and not 0.0 < self.false_negative_weight < 1.0:
            raise ValueError("false_negative_weight must be between 0 and 1")
        Shingling(self.ngram, self.unit)

    def bands(self) -> tuple[int, int]:
        """(bands, rows) of the LSH index for these settings."""
        fn = self.false_negative_weight
        if fn is None:
            fn = 0.5 if self.verify == "none" else 0.9
        return band_params(self.threshold, self.num_perm, (1.0 - fn, fn))


@dataclass
class Clusters:
    """Cluster label per document (the smallest member index), and the accepted similar pairs."""

    labels: np.ndarray
    left: np.ndarray
    right: np.ndarray
    similarity: np.ndarray

    def sizes(self) -> np.ndarray:
        """Size of each document's cluster."""
        return np.bincount(self.labels, minlength=len(self.labels))[self.labels]


def signatures(
    texts: Sequence[str], settings: DedupSettings, progress: Callable[[int], None] | None = None
) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """MinHash signatures of ``texts`` in batches; with exact verification also each text's shingle set."""
    hasher = ShingleHasher(Shingling(settings.ngram, settings.unit))
    minhasher = MinHasher(settings.num_perm, settings.seed)
    out = np.empty((len(texts), settings.num_perm), dtype=np.uint32)
    sets: list[np.ndarray] | None = [] if settings.verify == "exact" else None
    for start in range(0, len(texts), settings.batch_size):
        batch = texts[start : start + settings.batch_size]
        hashes, offsets = hasher.hash_texts(batch)
        out[start : start + len(batch)] = minhasher.signatures(hashes, offsets)
        if sets is not None:
            sets += [np.unique(hashes[offsets[i] : offsets[i + 1]]) for i in range(len(batch))]
        if progress:
            progress(len(batch))
    return out, sets


def find_clusters(
    texts: Sequence[str], settings: DedupSettings, progress: Callable[[int], None] | None = None
) -> Clusters:
    """Near-duplicate clusters of ``texts`` (global and transitive: A~B and B~C puts A, B, C together)."""
    sigs, sets = signatures(texts, settings, progress)
    return cluster_signatures(sigs, sets, settings)


def cluster_signatures(sigs: np.ndarray, sets: list[np.ndarray] | None, settings: DedupSettings) -> Clusters:
    """Near-duplicate clusters of documents given their signatures (and shingle sets for exact verification)."""
    bands, rows = settings.bands()
    left, right = bucket_edges(band_keys(sigs, bands, rows))
    return verified_clusters(sigs, sets, left, right, settings)


def verified_clusters(
    sigs: np.ndarray, sets: list[np.ndarray] | None, left: np.ndarray, right: np.ndarray, settings: DedupSettings
) -> Clusters:
    """Candidate edges checked as ``settings.verify`` says, then joined into connected components."""
    if settings.verify == "exact":
        assert sets is not None
        similarity = np.array([exact_jaccard(sets[a], sets[b]) for a, b in zip(left, right, strict=True)])
    else:
        similarity = estimated_jaccard(sigs, left, right)
    keep = accepted(similarity, settings)
    left, right, similarity = left[keep], right[keep], similarity[keep]
    return Clusters(components(len(sigs), left, right), left, right, similarity)


def accepted(similarity: np.ndarray, settings: DedupSettings) -> np.ndarray:
    """Which candidate pairs are near-duplicates, given their similarity and ``settings.verify``."""
    if settings.verify == "none":
        return np.ones(len(similarity), dtype=bool)
    return similarity >= settings.threshold - (settings.tolerance if settings.verify == "signature" else 0.0)


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted unique shingle-hash arrays."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    shared = len(np.intersect1d(a, b, assume_unique=True))
    return shared / (len(a) + len(b) - shared)


KEEP = ("first", "longest", "confidence")


def keep_scores(keep: str, texts: Sequence[str], confidences: Sequence[float]) -> np.ndarray:
    """Score per document for a keep policy: "first" (all equal: the earliest wins), "longest"
    (text length) or "confidence" (e.g. the judge's preference confidence)."""
    if keep not in KEEP:
        raise ValueError(f"keep must be one of {', '.join(KEEP)}")
    if keep == "longest":
        return np.array([len(t) for t in texts], dtype=np.float64)
    if keep == "confidence":
        return np.asarray(confidences, dtype=np.float64)
    return np.zeros(len(texts))


def representatives(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """For each document, the member of its cluster with the highest score (ties: the earliest)."""
    order = np.lexsort((np.arange(len(labels)), -scores, labels))  # by cluster, best score, then index
    sorted_labels = labels[order]
    heads = np.r_[True, sorted_labels[1:] != sorted_labels[:-1]]
    best = np.empty(labels.max() + 1 if len(labels) else 0, dtype=np.int64)
    best[sorted_labels[heads]] = order[heads]
    return best[labels]
