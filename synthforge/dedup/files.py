"""Dedup JSONL / parquet files (one, or a directory of them), keeping rows unchanged, on the local engine.

Both engines write through the same staging: kept and dropped rows go to shard files named by (input file,
first row), so the shards in name order are the rows in input order; then :func:`publish` turns the staging
into the output — a directory of shards, or one JSONL file — so a failed run leaves no half-written output.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthforge.dedup.near_duplicates import DedupSettings, choose_kept
from synthforge.dedup.sources import confidence, iter_rows, json_line, key_text
from synthforge.errors import UserError
from synthforge.files import make_dirs, write_atomic
from synthforge.provenance import package_versions

PROVENANCE = ".synthforge-dedup.json"  # inside an output directory (hidden: dataset loaders skip it)


@dataclass
class DedupReport:
    """What a dedup did, and where it wrote."""

    rows: int
    kept: int
    dropped: int
    clusters: int
    out: Path
    dropped_path: Path
    engine: dict[str, Any] = field(default_factory=lambda: {"kind": "local"})


def dropped_path_for(out: Path) -> Path:
    """Where ``synthforge dedup --out OUT`` writes the rows it dropped: ``X.dropped.jsonl`` beside a
    ``X.jsonl`` file, ``OUT.dropped/`` beside an output directory."""
    if out.suffix == ".jsonl":
        return out.with_name(out.name.removesuffix(".jsonl") + ".dropped.jsonl")
    return out.with_name(out.name + ".dropped")


def provenance_path_for(out: Path) -> Path:
    """Where the record of what made ``out`` goes."""
    if out.suffix == ".jsonl":
        return out.with_name(out.name.removesuffix(".jsonl") + ".provenance.json")
    return out / PROVENANCE


def shard_name(file_index: int, first_row: int) -> str:
    """Shard of input file ``file_index`` starting at its row ``first_row`` (name order = input order)."""
    return f"part-{file_index:05d}-{first_row:012d}.jsonl"


def dropped_entry(row_json: str, duplicate_of: int, cluster_size: int) -> str:
    """One line of the dropped file: the row unchanged, with the (1-based, whole-input) row it duplicates."""
    return (
        f'{{"reason": "near-duplicate", "duplicate_of_row": {duplicate_of + 1}, '
        f'"cluster_size": {cluster_size}, "row": {row_json.rstrip(chr(10))}}}\n'
    )


def write_shard(directory: Path, name: str, lines: Iterable[str]) -> int:
    """Write one shard (skipped when empty); returns its line count."""
    lines = list(lines)
    if lines:
        (directory / name).write_text("".join(lines), encoding="utf-8")
    return len(lines)


def stage_dir(out: Path) -> Path:
    """A fresh staging directory beside ``out`` with ``kept/`` and ``dropped/`` (removed by :func:`publish`)."""
    make_dirs(out.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    (staging / "kept").mkdir()
    (staging / "dropped").mkdir()
    return staging


def check_output(out: Path) -> None:
    """Refuse an output directory that exists and is not an earlier dedup output (we never delete others' files)."""
    for target in (out, dropped_path_for(out)):
        if target.is_dir() and any(target.iterdir()) and not _ours(target, out):
            raise UserError(f"--out {out}: {target} exists and was not written by synthforge dedup; choose another")
        if target.suffix != ".jsonl" and target.exists() and not target.is_dir():
            raise UserError(f"--out {out}: {target} is a file; an output directory is written there")


def _ours(target: Path, out: Path) -> bool:
    if target == out:
        return (out / PROVENANCE).is_file()
    return (out / PROVENANCE).is_file() and all(p.name.startswith("part-") for p in target.iterdir())


def publish(staging: Path, out: Path, provenance: dict[str, Any]) -> None:
    """Turn the staging shards into the output (a directory of shards, or one JSONL file) and remove it."""
    dropped = dropped_path_for(out)
    try:
        if out.suffix == ".jsonl":
            _concatenate(staging / "dropped", dropped)
            _concatenate(staging / "kept", out)
            write_atomic(provenance_path_for(out), json.dumps(provenance, indent=2) + "\n")
        else:
            (staging / "kept" / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
            for source, target in ((staging / "dropped", dropped), (staging / "kept", out)):
                if target.exists():
                    shutil.rmtree(target)
                source.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _concatenate(shards: Path, target: Path) -> None:
    """Concatenate shards in name order into ``target`` atomically, streaming (constant memory)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with open(fd, "wb") as handle:
            for shard in sorted(shards.glob("part-*.jsonl")):
                with shard.open("rb") as part:
                    shutil.copyfileobj(part, handle)
        Path(tmp).chmod(0o644)
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def provenance_record(
    inputs: list[Path], settings: DedupSettings, key: str, keep: str, report: DedupReport
) -> dict[str, Any]:
    """What made a dedup output: settings, inputs (names and sizes), engine, counts and versions."""
    bands, rows = settings.bands()
    return {
        "made_by": "synthforge dedup",
        "settings": {**asdict(settings), "bands": bands, "rows_per_band": rows, "key": key, "keep": keep},
        "inputs": [{"file": p.name, "bytes": p.stat().st_size} for p in inputs],
        "engine": report.engine,
        "counts": {"rows": report.rows, "kept": report.kept, "dropped": report.dropped, "clusters": report.clusters},
        "versions": package_versions(),
    }


def _read_all(inputs: list[Path], key: str) -> Iterator[tuple[int, int, str, str, float]]:
    """(file index, row index in file, output line, compared text, confidence) of every row of every input."""
    for index, path in enumerate(inputs):
        for row_index, (number, row, text) in enumerate(iter_rows(path, str(path))):
            at = (str(path), number, row_index + 1)
            line = text + "\n" if text is not None else json_line(row, at)
            yield index, row_index, line, key_text(row, key, at), confidence(row, at)


def dedup_files(
    inputs: list[Path],
    out: Path,
    settings: DedupSettings,
    key: str = "prompt",
    keep: str = "first",
    progress=None,
) -> DedupReport:
    """Keep one row per near-duplicate cluster of the rows of ``inputs`` (in memory); write ``out`` (a
    ``.jsonl`` file or a directory of shards) and the dropped rows beside it."""
    check_output(out)
    files, rows, lines, texts, scores = [], [], [], [], []
    for index, row_index, line, text, score in _read_all(inputs, key):
        files.append(index)
        rows.append(row_index)
        lines.append(line)
        texts.append(text)
        scores.append(score)
    if not lines:
        raise UserError(f"{inputs[0] if len(inputs) == 1 else 'the input files'}: no rows to deduplicate (empty)")
    best, clusters = choose_kept(texts, scores, settings, keep, progress)
    sizes = clusters.sizes()
    staging = stage_dir(out)
    try:
        file_of = np.asarray(files)
        for index in np.unique(file_of).tolist():
            members = np.flatnonzero(file_of == index).tolist()
            name = shard_name(index, rows[members[0]])
            write_shard(staging / "kept", name, (lines[i] for i in members if best[i] == i))
            dropped = (dropped_entry(lines[i], int(best[i]), int(sizes[i])) for i in members if best[i] != i)
            write_shard(staging / "dropped", name, dropped)
        kept = int(np.sum(best == np.arange(len(best))))
        clusters_n = len(np.unique(clusters.labels))
        report = DedupReport(len(lines), kept, len(lines) - kept, clusters_n, out, dropped_path_for(out))
        publish(staging, out, provenance_record(inputs, settings, key, keep, report))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report
