"""Text → shingle hashes (uint32) for many documents at once, with numpy and no Python loop per token.

Words are the lower-cased text split at whitespace, punctuation, symbols and control characters. A
word's hash is a polynomial hash of its UTF-8 bytes (computed for all words of a batch from one prefix
sum), a character's is its code point; both are mixed with MurmurHash3's 64-bit finalizer, and an
n-gram's hash combines its units' hashes. :func:`shingle_hasher` computes the same value from one
shingle's text, which makes our signatures reproducible with datasketch
(``MinHash(hashfunc=shingle_hasher(unit))``). (A per-token xxhash call was the first design: its
Python loop cost more than the whole MinHash step, so the unit hash is vectorised instead.)
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

_P = 0x100000001B3  # FNV-64 prime (odd, so it has an inverse mod 2**64)
_P_INV = pow(_P, -1, 1 << 64)
_MASK = (1 << 64) - 1
_MIX = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio multiplier of the n-gram combine step
_SPACE = re.compile(r"\s+")
_SEPARATORS = str.maketrans(
    {c: " " for c in range(0x10000) if unicodedata.category(chr(c))[0] in "PSZ" or unicodedata.category(chr(c)) == "Cc"}
)


@dataclass(frozen=True)
class Shingling:
    """How a text becomes a set of shingles: ``unit`` "word" or "char" n-grams of length ``ngram``."""

    ngram: int = 5
    unit: str = "word"

    def __post_init__(self) -> None:
        if self.ngram < 1:
            raise ValueError("ngram must be >= 1")
        if self.unit not in ("word", "char"):
            raise ValueError("unit must be 'word' or 'char'")


def normalise(text: str, unit: str) -> str:
    """Lower-cased text; for words, separators become spaces; for characters, whitespace runs one space."""
    lowered = text.lower()
    if unit == "word":
        return lowered.translate(_SEPARATORS)
    return _SPACE.sub(" ", lowered).strip()


def tokens(text: str, unit: str) -> list[str]:
    """The units of ``text``: its words, or its characters (after :func:`normalise`)."""
    normal = normalise(text, unit)
    return normal.split() if unit == "word" else list(normal)


def shingles(text: str, shingling: Shingling) -> list[str]:
    """Every n-gram of ``text`` as :func:`shingle_text` writes it; a text shorter than n is one shingle."""
    units, n = tokens(text, shingling.unit), shingling.ngram
    grams = [units[i : i + n] for i in range(len(units) - n + 1)] if len(units) >= n else [units] if units else []
    return [shingle_text(g, shingling.unit) for g in grams]


def shingle_text(units: Sequence[str], unit: str) -> str:
    """The canonical text of one shingle: words joined by one space, or the characters as they are."""
    return " ".join(units) if unit == "word" else "".join(units)


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer (an avalanching bijection)."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _combine(hashes: np.ndarray, starts: np.ndarray, ngram: int, wide: bool = False) -> np.ndarray:
    """Hash of each n-gram starting at ``starts`` from per-unit hashes (uint64 mix; folded to 32 bits
    unless ``wide``)."""
    acc = np.zeros(len(starts), dtype=np.uint64)
    for k in range(ngram):
        acc = (acc ^ hashes[starts + k]) * _MIX
    acc ^= acc >> np.uint64(29)
    return acc if wide else (acc & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def _word_hash(word: str) -> int:
    """The polynomial hash of one word's UTF-8 bytes (each byte + 1, times P**position), mod 2**64."""
    value, power = 0, 1
    for byte in word.encode("utf-8", "surrogatepass"):
        value = (value + (byte + 1) * power) & _MASK
        power = (power * _P) & _MASK
    return value


def shingle_hasher(unit: str) -> Callable[[bytes], int]:
    """A datasketch ``hashfunc`` for shingles made by :func:`shingle_text`: equals our batched hashes."""

    def shingle_hash(shingle: bytes) -> int:
        text = shingle.decode("utf-8")
        raw = [_word_hash(w) for w in text.split(" ")] if unit == "word" else [ord(c) + 1 for c in text]
        hashes = fmix64(np.array(raw, dtype=np.uint64))
        return int(_combine(hashes, np.zeros(1, dtype=np.int64), len(raw))[0])

    return shingle_hash


class ShingleHasher:
    """Hashes many texts' shingles in one vectorised pass (keeps power tables between calls)."""

    def __init__(self, shingling: Shingling):
        self.shingling = shingling
        self._powers = np.ones(1, dtype=np.uint64)
        self._inverse = np.ones(1, dtype=np.uint64)

    def _tables(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """P**i and P**-i mod 2**64 for i < size (grown by doubling, then reused)."""
        if len(self._powers) < size:
            size = max(size, 2 * len(self._powers))
            with np.errstate(over="ignore"):
                self._powers = np.cumprod(np.r_[np.uint64(1), np.full(size - 1, _P, np.uint64)])
                self._inverse = np.cumprod(np.r_[np.uint64(1), np.full(size - 1, _P_INV, np.uint64)])
        return self._powers, self._inverse

    def unit_hashes(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Hash of every unit of every text, concatenated, and each text's unit offset."""
        normal = [normalise(t, self.shingling.unit) for t in texts]
        if self.shingling.unit == "char":
            lengths = np.fromiter((len(t) for t in normal), np.int64, len(normal))
            points = np.frombuffer("".join(normal).encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(
                np.uint64
            )
            return fmix64(points + np.uint64(1)), np.concatenate([[0], np.cumsum(lengths)])
        encoded = [
            t.encode("utf-8", "surrogatepass") for t in normal
        ]  # a lone surrogate (valid JSON) is compared as written
        data = np.frombuffer(b" ".join(encoded), dtype=np.uint8)
        text_starts = np.cumsum([0] + [len(e) + 1 for e in encoded[:-1]]) if encoded else np.zeros(0, np.int64)
        edges = np.diff((data != 32).view(np.int8), prepend=np.int8(0), append=np.int8(0))
        begins, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        powers, inverse = self._tables(len(data) + 1)
        prefix = np.zeros(len(data) + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            np.cumsum((data.astype(np.uint64) + np.uint64(1)) * powers[: len(data)], out=prefix[1:])
            words = (prefix[ends] - prefix[begins]) * inverse[begins]
        owner = np.searchsorted(text_starts, begins, side="right") - 1
        counts = np.bincount(owner, minlength=len(texts)) if len(owner) else np.zeros(len(texts), np.int64)
        return fmix64(words), np.concatenate([[0], np.cumsum(counts)])

    def hash_texts(self, texts: Sequence[str], wide: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Shingle hashes of all ``texts`` concatenated, and each text's offset (length ``len(texts) + 1``).

        A text shorter than ``ngram`` units is one shingle of all its units; an empty text has none.
        ``wide``: 64-bit hashes (for exact n-gram lookups in large sets), else 32-bit (MinHash input).
        """
        n = self.shingling.ngram
        unit_hashes, unit_offsets = self.unit_hashes(texts)
        lengths = np.diff(unit_offsets)
        counts = np.where(lengths >= n, lengths - n + 1, (lengths > 0).astype(np.int64))
        offsets = np.concatenate([[0], np.cumsum(counts)])
        full = lengths >= n
        out = np.empty(int(offsets[-1]), dtype=np.uint64 if wide else np.uint32)
        with np.errstate(over="ignore"):
            out[_ranges(offsets[:-1][full], counts[full])] = _combine(
                unit_hashes, _ranges(unit_offsets[:-1][full], counts[full]), n, wide
            )
            for i in np.flatnonzero(~full & (lengths > 0)):  # short texts: one shingle of all their units
                begin, size = int(unit_offsets[i]), int(lengths[i])
                out[offsets[i]] = _combine(unit_hashes[begin : begin + size], np.zeros(1, np.int64), size, wide)[0]
        return out, offsets


def _ranges(begins: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(b, b + c)`` for each pair, without a Python loop."""
    heads = np.cumsum(counts) - counts
    return np.repeat(begins - heads, counts) + np.arange(int(counts.sum()), dtype=np.int64)
