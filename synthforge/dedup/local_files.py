"""Dedup JSONL / parquet files (one, or a directory of them), keeping rows unchanged, on the local engine.

Both engines write through the same staging: kept and dropped rows go to shard files named by (input file,
first row), so the shards in name order are the rows in input order; then :func:`publish` turns the staging
into the output — a directory of shards, or one JSONL file — so a failed run leaves no half-written output.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from synthforge.dedup.near_duplicates import DedupSettings, cluster_signatures, representatives, signatures
from synthforge.dedup.sources import keyed_rows
from synthforge.errors import UserError
from synthforge.files import claim_dir, claim_file, discard_staging, journal_path_for, made_by, staging_dir
from synthforge.files import publish as publish_moves
from synthforge.provenance import package_versions
from synthforge.rows import iter_lines

FILE_LIKE = (".json", ".parquet", ".gz", ".csv", ".txt", ".arrow", ".zst")  # --out names that are not a directory
PROVENANCE = ".synthforge-dedup.json"  # inside an output directory (hidden: dataset loaders skip it)
MADE_BY = "synthforge dedup"


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


def write_rows(
    staging: Path,
    name: str,
    lines: Iterable[str],
    first_id: int,
    best: np.ndarray,
    sizes: np.ndarray,
    source: str,
    expected: int | None = None,
) -> tuple[int, int]:
    """Route consecutive rows (ids ``first_id``, ``first_id + 1``, ...) to shard ``name`` of ``kept/`` or, with
    the row each duplicates, of ``dropped/``; streamed (a shard file is opened at its first row). Returns
    (kept, dropped) counts; rows beyond those the first pass read (``expected``, or ``best``'s length), or
    fewer than ``expected``, mean ``source`` changed while it was being read: a user error."""
    handles: dict[str, Any] = {}
    counts = {"kept": 0, "dropped": 0}
    try:
        for doc, line in enumerate(lines, first_id):
            if doc >= len(best) or (expected is not None and doc - first_id >= expected):
                raise UserError(f"{source}: the file changed while it was being deduplicated; run again")
            kept = best[doc] == doc
            where = "kept" if kept else "dropped"
            if where not in handles:
                handles[where] = (staging / where / name).open("w", encoding="utf-8")
            handles[where].write(line if kept else dropped_entry(line, int(best[doc]), int(sizes[doc])))
            counts[where] += 1
    finally:
        for handle in handles.values():
            handle.close()
    if expected is not None and counts["kept"] + counts["dropped"] != expected:
        raise UserError(f"{source}: the file changed while it was being deduplicated; run again")
    return counts["kept"], counts["dropped"]


def stage_dir(out: Path) -> Path:
    """A fresh staging directory beside ``out`` with ``kept/`` and ``dropped/`` (removed by :func:`publish`, or
    by the next dedup into ``out`` if this one is killed)."""
    staging = staging_dir(out)
    (staging / "kept").mkdir()
    (staging / "dropped").mkdir()
    return staging


def ours(path: Path) -> bool:
    """A provenance file written by ``synthforge dedup``."""
    return made_by(path, MADE_BY)


def check_output(out: Path) -> None:
    """Refuse outputs that exist and were not written by ``synthforge dedup`` (we never replace others' files),
    and a file name we would not write (a directory would appear under a name like ``x.json``)."""
    if out.suffix.lower() in FILE_LIKE:
        raise UserError(
            f"--out {out}: dedup writes a .jsonl file, or a directory of shards (a name without {out.suffix})"
        )
    provenance = provenance_path_for(out)
    if out.suffix == ".jsonl":
        for target in (out, dropped_path_for(out), provenance):
            claim_file(target, lambda _: ours(provenance), "--out", "dedup")
        return
    claim_dir(out, lambda _: ours(provenance), "--out", "dedup")
    dropped = dropped_path_for(out)
    shards_only = lambda d: ours(provenance) and all(p.name.startswith("part-") for p in d.iterdir())  # noqa: E731
    claim_dir(dropped, shards_only, "--out", "dedup")


def publish(staging: Path, out: Path, provenance: dict[str, Any]) -> None:
    """Turn the staging shards into the output (a directory of shards, or one JSONL file with its dropped rows
    and provenance beside it), as one unit: the old output is taken away first, the provenance comes last."""
    dropped = dropped_path_for(out)
    text = json.dumps(provenance, indent=2) + "\n"
    try:
        if out.suffix == ".jsonl":
            _concatenate(staging / "dropped", staging / "dropped.jsonl")
            _concatenate(staging / "kept", staging / "kept.jsonl")
            (staging / "provenance.json").write_text(text, encoding="utf-8")
            moves = [
                (None, provenance_path_for(out)),
                (staging / "dropped.jsonl", dropped),
                (staging / "kept.jsonl", out),
                (staging / "provenance.json", provenance_path_for(out)),
            ]
        else:
            (staging / "kept" / PROVENANCE).write_text(text, encoding="utf-8")
            moves = [(None, out), (staging / "dropped", dropped), (staging / "kept", out)]
        publish_moves(moves, journal_path_for(out))
    finally:
        discard_staging(staging, out)


def _concatenate(shards: Path, target: Path) -> None:
    """Concatenate shards in name order into ``target``, streaming (constant memory)."""
    with open(target, "wb") as handle:
        for shard in sorted(shards.glob("part-*.jsonl")):
            with shard.open("rb") as part:
                shutil.copyfileobj(part, handle)
    target.chmod(0o644)


def provenance_record(
    inputs: list[Path], settings: DedupSettings, key: str, keep: str, report: DedupReport
) -> dict[str, Any]:
    """What made a dedup output: settings, inputs (names and sizes), engine, counts and versions."""
    bands, rows = settings.bands()
    return {
        "made_by": MADE_BY,
        "settings": {**asdict(settings), "bands": bands, "rows_per_band": rows, "key": key, "keep": keep},
        "inputs": [{"file": p.name, "bytes": p.stat().st_size} for p in inputs],
        "engine": report.engine,
        "counts": {"rows": report.rows, "kept": report.kept, "dropped": report.dropped, "clusters": report.clusters},
        "versions": package_versions(),
    }


def _read_keys(inputs: list[Path], key: str, keep: str) -> Iterator[tuple[int, str, float]]:
    """(file index, compared text, keep score) of every row of every input, streamed."""
    for index, path in enumerate(inputs):
        for text, score in keyed_rows(path, str(path), key, keep):
            yield index, text, score


def dedup_files(
    inputs: list[Path],
    out: Path,
    settings: DedupSettings,
    key: str = "prompt",
    keep: str = "first",
    progress: Callable[[int], None] | None = None,
) -> DedupReport:
    """Keep one row per near-duplicate cluster of the rows of ``inputs``; write ``out`` (a ``.jsonl`` file or
    a directory of shards) and the dropped rows beside it. Two streaming passes: signatures (kept in memory,
    4 bytes per permutation per row), then the rows again into shards; the rows themselves are never held."""
    check_output(out)
    counts, sig_parts, set_parts, scores = np.zeros(len(inputs), np.int64), [], [], []
    rows = _read_keys(inputs, key, keep)
    while chunk := list(islice(rows, settings.batch_size)):
        sigs, sets = signatures([text for _, text, _ in chunk], settings)
        sig_parts.append(sigs)
        set_parts += sets or []
        scores += [score for _, _, score in chunk]
        np.add.at(counts, [index for index, _, _ in chunk], 1)
        if progress:
            progress(len(chunk))
    if not sig_parts:
        raise UserError(f"{inputs[0] if len(inputs) == 1 else 'the input files'}: no rows to deduplicate (empty)")
    sets = set_parts if settings.verify == "exact" else None
    clusters = cluster_signatures(np.concatenate(sig_parts), sets, settings)
    del sig_parts, set_parts
    labels = clusters.labels
    best = labels if keep == "first" else representatives(labels, np.asarray(scores))
    sizes = clusters.sizes()
    staging = stage_dir(out)
    try:
        kept = 0
        firsts = np.r_[0, np.cumsum(counts)[:-1]].tolist()  # the id of each file's first row
        for index, path in enumerate(inputs):
            with path.open("rb") as handle:
                lines = islice(iter_lines(handle, str(path)), int(counts[index]) + 1)
                name = shard_name(index, 0)
                written = write_rows(staging, name, lines, firsts[index], best, sizes, str(path), counts[index])
            kept += written[0]
        n = len(labels)
        clusters_n = int(np.count_nonzero(labels == np.arange(n)))
        report = DedupReport(n, kept, n - kept, clusters_n, out, dropped_path_for(out))
        publish(staging, out, provenance_record(inputs, settings, key, keep, report))
    finally:
        discard_staging(staging, out)
    return report
