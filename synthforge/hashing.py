"""Stable content hashes used for record ids, cache keys and provenance."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def stable_hash(obj: Any, length: int = 64) -> str:
    """SHA-256 hex digest of ``obj``'s canonical JSON (or of the text itself for a str)."""
    text = obj if isinstance(obj, str) else canonical_json(obj)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


MASK32 = 0xFFFFFFFF


def fmix32(h: Any) -> Any:
    """MurmurHash3's 32-bit finaliser on an integer array holding values below 2**32: numpy ``uint32`` (which
    wraps by itself) or a numpy / torch ``int64`` array (masked back to 32 bits after each product)."""
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & MASK32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & MASK32
    return h ^ (h >> 16)


def derive_seed(*parts: Any) -> int:
    """A 63-bit integer seed derived from any JSON-able parts (global seed, record id, stage, round)."""
    return int(stable_hash(list(parts), 16), 16) & ((1 << 63) - 1)
