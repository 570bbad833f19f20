"""The run directory: only ever a new or empty directory, or one that holds a synthforge run; locked while a
run writes to it; ``--fresh`` removes only the checkpoints a run wrote there.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

from synthforge import __version__
from synthforge.files import check_writable, claim_dir, exclusive_lock, make_dirs, write_atomic
from synthforge.provenance import RUN_MARKER

MARKER = RUN_MARKER
LOCK = ".synthforge-lock"
CHECKPOINTS = "checkpoints"
BATCH_LOG = "batches.jsonl"  # the write-ahead log of batch submissions (engine/batch_log.py)
# What a run writes under checkpoints/: NN-stage-fingerprint.jsonl, NN-stage.json, their journals and temp files,
# and the batch log.
CHECKPOINT_FILE = re.compile(r"^(\.?\d{2}-[A-Za-z0-9._-]+\.(jsonl|json)(\.[A-Za-z0-9_-]+)?|batches\.jsonl)$")


def is_run_dir(path: Path) -> bool:
    """A directory a synthforge run made: it carries the marker (or, from before markers, a manifest of ours)."""
    if (path / MARKER).is_file():
        return True
    manifest = path / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        return "synthforge_version" in json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, TypeError):
        return False


def _claim(out_dir: Path, pipeline: str) -> None:
    """Make sure ``out_dir`` is ours to write: new, empty, or a marked run; mark it."""
    claim_dir(out_dir, is_run_dir, "--out", "generate")
    make_dirs(out_dir)
    if not (out_dir / MARKER).is_file():
        marker = {"synthforge_version": __version__, "pipeline": pipeline, "created": int(time.time())}
        write_atomic(out_dir / MARKER, json.dumps(marker) + "\n")


@contextlib.contextmanager
def run_directory(out_dir: Path, pipeline: str) -> Iterator[Path]:
    """Claim and exclusively lock ``out_dir`` for one run; a second run on it exits naming the holder."""
    out_dir = out_dir.expanduser()
    _claim(out_dir, pipeline)
    busy = f"--out {out_dir}: another synthforge run is writing there (pid {{pid}}); wait for it to finish or give "
    busy += "another --out"
    with exclusive_lock(out_dir / LOCK, busy):
        for folder in (out_dir, out_dir / CHECKPOINTS):
            check_writable(folder)  # before any model loads: a run that could not save its work never starts
        yield out_dir


def remove_checkpoints(out_dir: Path) -> int:
    """``--fresh``: delete the checkpoint files a run wrote (nothing else); returns how many."""
    folder = out_dir / CHECKPOINTS
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.iterdir():
        if path.is_file() and CHECKPOINT_FILE.match(path.name):
            path.unlink()
            removed += 1
    with contextlib.suppress(OSError):
        folder.rmdir()  # only if nothing else is left in it
    return removed
