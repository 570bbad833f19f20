"""Self-Instruct's novelty test, fast: is a new instruction's ROUGE-L F1 against every instruction already in
the pool at most a threshold (0.7)? Decisions equal ``rouge-score``'s (same tokenizer, same float formula).

Naively this is quadratic in Python (every candidate against every pool member with an LCS table). Here
an inverted index (numpy postings per token) gives each pool member's bag-of-words overlap with the
candidate at once; since LCS <= overlap, F1 <= 2*overlap / (len_a + len_b), and only members whose bound
passes the threshold get an exact LCS (bit-parallel, on Python ints).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's tokenizer without stemming: lower-case, non-alphanumerics split, empties dropped."""
    return [t for t in _NON_ALNUM.sub(" ", text.lower()).split() if t]


def lcs_length(a: list[int], b: list[int]) -> int:
    """Length of the longest common subsequence (Allison-Dix / Hyyrö bit-parallel algorithm)."""
    if not a or not b:
        return 0
    masks: dict[int, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def rouge_l_f1(lcs: int, len_a: int, len_b: int) -> float:
    """F1 from the LCS exactly as rouge-score computes it (so decisions at the threshold agree)."""
    if not len_a or not len_b:
        return 0.0
    precision, recall = lcs / len_b, lcs / len_a
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@dataclass
class Verdict:
    """Whether a candidate is novel, and its closest pool member (index, F1): for a novel candidate the exact
    maximum over the pool; for a rejected one the first member found above the threshold."""

    novel: bool
    score: float
    nearest: int | None


class _Postings:
    """A token's pool members and counts, in growable numpy arrays."""

    __slots__ = ("counts", "docs", "size")

    def __init__(self) -> None:
        self.docs = np.zeros(8, dtype=np.int32)
        self.counts = np.zeros(8, dtype=np.int32)
        self.size = 0

    def append(self, doc: int, count: int) -> None:
        if self.size == len(self.docs):
            self.docs = np.resize(self.docs, 2 * self.size)
            self.counts = np.resize(self.counts, 2 * self.size)
        self.docs[self.size], self.counts[self.size] = doc, count
        self.size += 1


class NoveltyIndex:
    """A pool of instructions; :meth:`offer` adds a candidate only if its max ROUGE-L F1 is <= threshold."""

    def __init__(self, threshold: float = 0.7):
        self.threshold = threshold
        self.texts: list[str] = []
        self._ids: list[list[int]] = []
        self._lengths = np.zeros(64, dtype=np.int32)
        self._vocab: dict[str, int] = {}
        self._postings: dict[int, _Postings] = {}

    def __len__(self) -> int:
        return len(self.texts)

    def _encode(self, text: str) -> list[int]:
        vocab = self._vocab
        return [vocab.setdefault(t, len(vocab)) for t in rouge_tokens(text)]

    def add(self, text: str) -> int:
        """Add ``text`` unconditionally (e.g. a seed task); returns its index."""
        return self._add(text, self._encode(text))

    def _add(self, text: str, ids: list[int]) -> int:
        doc = len(self.texts)
        self.texts.append(text)
        self._ids.append(ids)
        if doc == len(self._lengths):
            self._lengths = np.resize(self._lengths, 2 * doc)
        self._lengths[doc] = len(ids)
        for token, count in zip(*np.unique(ids, return_counts=True), strict=True) if ids else ():
            self._postings.setdefault(int(token), _Postings()).append(doc, int(count))
        return doc

    def check(self, text: str) -> Verdict:
        """Is ``text`` novel against the pool? (Does not add it.)"""
        return self._check(self._encode(text))

    def _check(self, ids: list[int]) -> Verdict:
        size = len(self.texts)
        if not ids or not size:
            return Verdict(True, 0.0, None)
        overlap = np.zeros(size, dtype=np.int32)
        for token, count in zip(*np.unique(ids, return_counts=True), strict=True):
            postings = self._postings.get(int(token))
            if postings is not None:
                docs = postings.docs[: postings.size]
                overlap[docs] += np.minimum(postings.counts[: postings.size], count)
        bound = 2.0 * overlap / (len(ids) + self._lengths[:size])
        best, nearest = 0.0, None
        for doc in np.flatnonzero(bound > self.threshold - 1e-9).tolist():
            score = self._score(ids, doc)
            if score > self.threshold:
                return Verdict(False, score, doc)
            if score > best:
                best, nearest = score, doc
        return self._nearest_below(ids, bound, best, nearest)

    def _nearest_below(self, ids: list[int], bound: np.ndarray, best: float, nearest: int | None) -> Verdict:
        """The exact maximum F1 of a novel candidate: members by descending bound until none can beat it."""
        rest = np.flatnonzero((bound > best) & (bound <= self.threshold - 1e-9))
        for doc in rest[np.argsort(-bound[rest], kind="stable")].tolist():
            if bound[doc] <= best:
                break
            score = self._score(ids, doc)
            if score > best:
                best, nearest = score, doc
        return Verdict(True, best, nearest)

    def _score(self, ids: list[int], doc: int) -> float:
        """Exact ROUGE-L F1 of token ids ``ids`` against pool member ``doc``."""
        return rouge_l_f1(lcs_length(ids, self._ids[doc]), len(ids), len(self._ids[doc]))

    def offer(self, text: str) -> Verdict:
        """Add ``text`` if it is novel; the verdict says whether it was added and its nearest member."""
        ids = self._encode(text)
        verdict = self._check(ids)
        if verdict.novel:
            self._add(text, ids)
        return verdict
