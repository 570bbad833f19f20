"""Dedup of files larger than one process on Ray: rows read by Ray Data in blocks, kept rows written as shards.

Two streaming passes over the inputs, neither holding the corpus anywhere:
1. Ray Data reads the JSONL / parquet files in blocks (:class:`RowsDatasource`: each row's file, its row
   number in the file, the compared text and the keep score) and ``map_batches`` turns each block into
   MinHash signatures; the signature blocks stay in the object store and are clustered by
   :func:`synthforge.dedup.ray_dedup.cluster_blocks`.
2. Ray Data reads the rows again and each block writes its kept rows (and dropped rows) to shard files named
   by (file, first row), so the shards in name order are the local engine's output, byte for byte.
The driver holds a few arrays of 8 bytes per document (labels, cluster sizes, keep scores and kept ids
with ``--keep longest|confidence``): measured 53 bytes per document at its peak (keep "first"), ~5 GB at 100M.
On a cluster, the inputs and ``--out`` must be on a filesystem every node sees (NFS, a mounted bucket).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from synthforge.dedup.local_files import (
    DedupReport,
    check_output,
    dropped_path_for,
    provenance_record,
    publish,
    shard_name,
    stage_dir,
    write_rows,
)
from synthforge.dedup.near_duplicates import EDGE_LIMIT, DedupSettings, representatives, signatures
from synthforge.dedup.ray_dedup import cluster_blocks, columns
from synthforge.dedup.sources import keyed_rows
from synthforge.errors import UserError
from synthforge.files import discard_staging
from synthforge.ray_support import init_ray
from synthforge.rows import iter_lines

ROWS_PER_BLOCK = 8192


def _datasource_class() -> type:
    """:class:`RowsDatasource` (defined on first use: Ray is an optional extra)."""
    from ray.data.datasource import FileBasedDatasource

    class RowsDatasource(FileBasedDatasource):
        """Our input files as Ray Data blocks: ``mode`` "keys" gives file, row, text, score per row; "rows"
        gives file, row and the row's JSON line."""

        _FILE_EXTENSIONS = ["jsonl", "parquet"]

        def __init__(self, paths: list[str], key: str, keep: str, mode: str, rows_per_block: int):
            super().__init__(paths)
            self._index = {os.path.normpath(p): i for i, p in enumerate(paths)}
            self._key, self._keep, self._mode, self._rows_per_block = key, keep, mode, rows_per_block

        def _open_input_source(self, filesystem: Any, path: str, **open_args: Any) -> Any:
            if path.endswith(".parquet"):  # parquet needs random access
                return filesystem.open_input_file(path)
            return super()._open_input_source(filesystem, path, **open_args)

        def _read_stream(self, f: Any, path: str) -> Iterator[Any]:
            import pyarrow as pa

            index = self._index[os.path.normpath(path)]
            if self._mode == "rows":  # the output lines only: JSONL lines are not parsed again
                numbered: Iterator[Any] = enumerate(iter_lines(f, path))
                while chunk := list(islice(numbered, self._rows_per_block)):
                    yield pa.table({**self._place(index, chunk), "json": [line for _, line in chunk]})
                return
            numbered = enumerate(keyed_rows(f, path, self._key, self._keep))
            while chunk := list(islice(numbered, self._rows_per_block)):
                columns = {**self._place(index, chunk), "text": [text for _, (text, _) in chunk]}
                if self._keep != "first":
                    columns["score"] = np.array([score for _, (_, score) in chunk], np.float64)
                yield pa.table(columns)

        @staticmethod
        def _place(index: int, chunk: list[tuple[int, Any]]) -> dict[str, np.ndarray]:
            rows = np.array([i for i, _ in chunk], np.int64)
            return {"file": np.full(len(chunk), index, np.int64), "row": rows}

    return RowsDatasource


def signature_batch(batch: dict[str, np.ndarray], settings: DedupSettings) -> dict[str, Any]:
    """A block of rows → its signature block (file, row, signatures, keep score, shingle sets if exact)."""
    sigs, sets = signatures(list(batch["text"]), settings)
    out: dict[str, Any] = {"file": batch["file"], "row": batch["row"], "sig": sigs}
    if "score" in batch:
        out["score"] = batch["score"]
    if sets is not None:
        out["sets"] = np.array(sets + [None], dtype=object)[:-1]  # ragged: one array per row
    return out


def _extent(block: Any) -> tuple[np.ndarray, np.ndarray]:
    """(files, rows seen per file) of a block: the largest row index + 1 of each file in it."""
    block = columns(block, ("file", "row"))
    files = np.unique(block["file"])
    return files, np.array([block["row"][block["file"] == f].max() + 1 for f in files.tolist()], np.int64)


def _scores(block: Any, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    block = columns(block, ("file", "row", "score"))
    return offsets[block["file"]] + block["row"], block["score"]


def write_batch(
    batch: dict[str, np.ndarray], shared: dict[str, Any], staging: str, paths: list[str]
) -> dict[str, np.ndarray]:
    """Write one block's kept rows and dropped rows to shards (one per run of consecutive rows of a file)."""
    import ray

    best, sizes, offsets = (ray.get(shared[k]) for k in ("best", "sizes", "offsets"))
    ids = offsets[batch["file"]] + batch["row"]
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    kept = dropped = 0
    for run in np.split(np.arange(len(ids)), breaks):
        if not len(run):
            continue
        name = shard_name(int(batch["file"][run[0]]), int(batch["row"][run[0]]))
        lines = (batch["json"][i] for i in run)
        source = paths[int(batch["file"][run[0]])]
        counts = write_rows(Path(staging), name, lines, int(ids[run[0]]), best, sizes, source)
        kept, dropped = kept + counts[0], dropped + counts[1]
    return {"kept": np.array([kept]), "dropped": np.array([dropped])}


def _user_error(exc: BaseException) -> UserError | None:
    """The UserError a Ray task raised, however Ray wrapped it (Ray's wrappers subclass it, with tracebacks)."""
    from ray.exceptions import RayError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, UserError) and not isinstance(seen, RayError):
            return UserError(str(seen).split("\n")[0])  # Ray Data appends retry hints on further lines
        seen = getattr(seen, "cause", None) or seen.__cause__ or seen.__context__
    return None


@dataclass
class RayDedupJob:
    """What one Ray file dedup reads, writes and how (plain data)."""

    inputs: list[Path]
    out: Path
    settings: DedupSettings
    key: str = "prompt"
    keep: str = "first"
    workers: int = 2
    rows_per_block: int = ROWS_PER_BLOCK
    edge_limit: int = EDGE_LIMIT

    def paths(self) -> list[str]:
        return [os.path.normpath(str(p.resolve())) for p in self.inputs]

    def read(self, mode: str) -> Any:
        """A Ray Data dataset of the inputs' blocks (mode "keys" or "rows"). One read task per file, fused
        with the map that follows (measured 2x faster than Ray Data's default of splitting each file's blocks
        for separate map tasks); with fewer files than workers, splitting keeps the workers busy."""
        from ray.data import read_datasource

        paths = self.paths()
        hint = {"override_num_blocks": len(paths)} if len(paths) >= self.workers else {}
        source = _datasource_class()(paths, self.key, self.keep, mode, self.rows_per_block)
        return read_datasource(source, **hint)


def dedup_files_ray(
    inputs: list[Path],
    out: Path,
    settings: DedupSettings,
    key: str = "prompt",
    keep: str = "first",
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
    rows_per_block: int = ROWS_PER_BLOCK,
    edge_limit: int = EDGE_LIMIT,
) -> DedupReport:
    """Keep one row per near-duplicate cluster of the rows of ``inputs``, streaming them through Ray Data;
    write ``out`` (a directory of shards, or a ``.jsonl`` file) and the dropped rows beside it."""
    check_output(out)
    job = RayDedupJob(inputs, out, settings, key, keep, workers, rows_per_block, edge_limit)
    ray = init_ray(workers)
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = context.print_on_execution_start = False  # our own bar reports progress
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # errors come back to us: a user error is one line
    try:
        blocks, offsets = _signature_blocks(job, progress)
        n = int(offsets[-1])
        labels, _ = cluster_blocks(blocks, offsets[:-1], n, settings, max(workers, 1), edge_limit)
        best = _kept(job, blocks, offsets[:-1], labels)
        del blocks
        return _write(job, ray, labels, best, offsets[:-1])
    except Exception as exc:
        error = _user_error(exc)
        if error is None:
            raise
        raise error from None


def _signature_blocks(job: RayDedupJob, progress: Callable[[int], None] | None) -> tuple[list[Any], np.ndarray]:
    """Pass 1: signature blocks (object refs) of every row, and each file's first id (plus the total last)."""
    import ray

    signed = job.read("keys").map_batches(
        signature_batch, fn_kwargs={"settings": job.settings}, batch_format="numpy", batch_size=None
    )
    blocks = []
    for bundle in signed.iter_internal_ref_bundles():
        blocks += bundle.block_refs
        if progress:
            progress(bundle.num_rows() or 0)
    ends = np.zeros(len(job.inputs), np.int64)
    for files, file_ends in ray.get([ray.remote(_extent).remote(b) for b in blocks]):
        np.maximum.at(ends, files, file_ends)
    if not ends.sum():
        where = job.inputs[0] if len(job.inputs) == 1 else "the input files"
        raise UserError(f"{where}: no rows to deduplicate (empty)")
    return blocks, np.r_[0, np.cumsum(ends)].astype(np.int64)


def _kept(job: RayDedupJob, blocks: list[Any], offsets: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The kept id of every document's cluster under the keep policy."""
    import ray

    if job.keep == "first":
        return labels  # a cluster's label is its first member
    scores = np.zeros(len(labels))
    for ids, values in ray.get([ray.remote(_scores).remote(b, offsets) for b in blocks]):
        scores[ids] = values
    return representatives(labels, scores)


def _write(job: RayDedupJob, ray: Any, labels: np.ndarray, best: np.ndarray, offsets: np.ndarray) -> DedupReport:
    """Pass 2: every block writes its kept and dropped rows to shards; then the output is published."""
    n = len(labels)
    sizes = np.bincount(labels, minlength=n)[labels]
    clusters = int(np.count_nonzero(labels == np.arange(n)))
    staging = stage_dir(job.out)
    try:
        shared = {"best": ray.put(best), "sizes": ray.put(sizes), "offsets": ray.put(offsets)}
        written = (
            job.read("rows")
            .map_batches(
                write_batch,
                fn_kwargs={"shared": shared, "staging": str(staging), "paths": job.paths()},
                batch_format="numpy",
                batch_size=None,
            )
            .take_all()
        )
        kept = sum(int(w["kept"]) for w in written)
        dropped = sum(int(w["dropped"]) for w in written)
        if kept + dropped != n:  # rows ran short: the second read saw fewer rows than the first
            raise UserError(
                f"wrote {kept + dropped} of the {n} rows read first: an input file changed while it was being "
                "deduplicated; run again"
            )
        engine = {"kind": "ray", "workers": job.workers, "blocks": len(written)}
        report = DedupReport(n, kept, dropped, clusters, job.out, dropped_path_for(job.out), engine)
        publish(staging, job.out, provenance_record(job.inputs, job.settings, job.key, job.keep, report))
    finally:
        discard_staging(staging, job.out)
    return report
