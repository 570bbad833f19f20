"""MinHash signatures for many documents at once, interchangeable with datasketch's ``LeanMinHash``.

Permutations are datasketch's own (``MinHash(num_perm, seed).permutations``, scheme "affine32"): each
shingle hash h is pre-mixed with the MurmurHash3 finalizer, then ``a * h + b mod 2**32``; the signature is
the minimum per permutation. With ``hashfunc=shingle_hasher(unit)`` datasketch computes the same values.
"""

from __future__ import annotations

import numpy as np
from datasketch import MinHash

from synthforge.hashing import fmix32

EMPTY = np.uint32(0xFFFFFFFF)  # datasketch's value for a MinHash that saw no shingle
_CHUNK = 16384  # shingles per block: the (num_perm x chunk) block stays in cache (measured best)


class MinHasher:
    """Signatures of ``num_perm`` permutations drawn from ``seed`` exactly as datasketch draws them."""

    def __init__(self, num_perm: int = 128, seed: int = 1):
        a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
        self.num_perm, self.seed = num_perm, seed
        self.a, self.b = a.astype(np.uint32), b.astype(np.uint32)

    def signatures(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """(documents x num_perm) uint32 signatures; document i owns ``hashes[offsets[i]:offsets[i+1]]``."""
        n_docs = len(offsets) - 1
        out = np.full((n_docs, self.num_perm), EMPTY, dtype=np.uint32)
        if len(hashes) == 0:
            return out
        mixed = fmix32(hashes.astype(np.uint32, copy=False))
        owner = np.repeat(np.arange(n_docs), np.diff(offsets))
        with np.errstate(over="ignore"):
            for start in range(0, len(mixed), _CHUNK):
                block_min, docs = self._block(mixed, owner, start)
                out[docs] = np.minimum(out[docs], block_min)  # a document may span two blocks
        return out

    def _block(self, mixed: np.ndarray, owner: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-document minima of one block of shingles (documents may straddle block edges)."""
        values = self.a[:, None] * mixed[None, start : start + _CHUNK]  # permutation-major: fast reduceat
        values += self.b[:, None]
        docs = owner[start : start + _CHUNK]
        heads = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])
        return np.minimum.reduceat(values, heads, axis=1).T, docs[heads]

    def lean(self, signature: np.ndarray):
        """A datasketch ``LeanMinHash`` holding ``signature`` (for use with datasketch's own indexes)."""
        from datasketch import LeanMinHash

        return LeanMinHash(seed=self.seed, hashvalues=signature.astype(np.uint32), scheme="affine32")


def estimated_jaccard(signatures: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Share of equal signature slots for each pair (left[k], right[k]): the MinHash Jaccard estimate."""
    result = np.empty(len(left), dtype=np.float64)
    for start in range(0, len(left), 65536):
        stop = start + 65536
        result[start:stop] = slot_agreement(signatures[left[start:stop]], signatures[right[start:stop]])
    return result


def slot_agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of equal slots, row by row, of two equally shaped signature matrices."""
    return (a == b).mean(axis=1)
