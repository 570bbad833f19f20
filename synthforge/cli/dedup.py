"""``synthforge dedup``: MinHash near-duplicate removal on JSONL / parquet files, a directory of them, or a run."""

from __future__ import annotations

from pathlib import Path

import click
from tqdm.auto import tqdm

from synthforge.cli.options import finite
from synthforge.dedup.engines import DEFAULT_RAY_WORKERS, ENGINES, dedup_files_on
from synthforge.dedup.keys import KEYS
from synthforge.dedup.local_files import dropped_path_for, provenance_path_for
from synthforge.dedup.near_duplicates import EDGE_LIMIT, MAX_PERM, MIN_PERM, VERIFY, DedupSettings
from synthforge.engine.rundir import is_run_dir
from synthforge.errors import UserError
from synthforge.files import output_lock, real_path
from synthforge.provenance import unfinished_export
from synthforge.ray_support import import_ray
from synthforge.rows import data_files

RUN_FILES = ("sft.jsonl", "dpo.jsonl", "trace.jsonl", "dropped.jsonl", "manifest.json", "README.md")


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Output: a .jsonl file, or else a directory of JSONL shards.",
)
@click.option(
    "--key",
    type=click.Choice(list(KEYS)),
    default="prompt",
    show_default=True,
    help="Compared text: prompt (the last user turn), response (the final answer), both, or conversation "
    "(every turn and the answer).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    callback=finite,
    default=0.8,
    show_default=True,
    help="Jaccard similarity above which rows are near-duplicates (0 < t < 1).",
)
@click.option(
    "--num-perm",
    type=click.IntRange(MIN_PERM, MAX_PERM),
    default=128,
    show_default=True,
    help=f"MinHash permutations ({MIN_PERM}-{MAX_PERM}; memory is 4 bytes each per row).",
)
@click.option("--ngram", type=click.IntRange(min=1), default=5, show_default=True, help="Shingle length.")
@click.option("--unit", type=click.Choice(["word", "char"]), default="word", show_default=True)
@click.option("--verify", type=click.Choice(list(VERIFY)), default="signature", show_default=True)
@click.option("--keep", type=click.Choice(["first", "longest", "confidence"]), default="first", show_default=True)
@click.option("--file", "name", default="sft.jsonl", show_default=True, help="File to read in a run directory.")
@click.option("--seed", type=int, default=1, show_default=True, help="MinHash permutation seed.")
@click.option(
    "--engine",
    type=click.Choice(list(ENGINES)),
    default="local",
    show_default=True,
    help="ray: rows streamed by Ray Data in blocks, signatures, band shuffle, verification and (past "
    "--edge-limit) components as a Ray job; same result. Joins RAY_ADDRESS when set.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=DEFAULT_RAY_WORKERS,
    show_default=True,
    help="Ray workers (--engine ray).",
)
@click.option(
    "--edge-limit",
    type=click.IntRange(min=0),
    default=EDGE_LIMIT,
    show_default=True,
    help="--engine ray: verified edges joined on the driver; more are joined by distributed label propagation.",
)
def dedup(source, out, key, threshold, num_perm, ngram, unit, verify, keep, name, seed, engine, workers, edge_limit):
    """Remove near-duplicates from SOURCE into --out.

    \b
    SOURCE: a .jsonl or .parquet file, a directory of them (read in sorted order, as one dataset), or a
    run directory (any directory holding --file: that file). Rows are compared by --key text (word or
    character n-gram shingles, MinHash, LSH); clusters are global and transitive; one row per cluster is
    kept (--keep) unchanged.
    --out X.jsonl writes one file and X.dropped.jsonl; any other --out is a directory of JSONL shards
    (part-FILE-ROW.jsonl, in input order by name) and OUT.dropped/. What made the output is recorded in
    X.provenance.json, or OUT/.synthforge-dedup.json.
    \b
    Examples:
      synthforge dedup outputs/cai-harmless --key prompt --threshold 0.8 --out prompts.dedup.jsonl
      synthforge dedup corpus/ --engine ray --workers 8 --out corpus.dedup/
    """
    source = source.expanduser()
    out = real_path(out)  # through a symlink: its target is written, the link stays
    if unfinished_export(source):
        raise UserError(f"{source}: this run's export did not finish (no manifest.json): rerun synthforge generate")
    inputs = [source / name] if _run_like(source, name) else data_files(source)
    check_targets(source, name, inputs, out)
    settings = DedupSettings(threshold=threshold, num_perm=num_perm, ngram=ngram, unit=unit, verify=verify, seed=seed)
    if engine == "ray":
        import_ray()  # one line telling how to install it when missing, before the output is touched
    siblings = [dropped_path_for(out), provenance_path_for(out)]
    with output_lock(out, "--out", "dedup", siblings), tqdm(desc="dedup", unit="row", disable=None) as bar:
        report = dedup_files_on(engine, inputs, out, settings, key, keep, bar.update, workers, edge_limit)
    click.echo(
        f"{report.rows} rows → {report.kept} kept, {report.dropped} near-duplicates dropped "
        f"({report.clusters} clusters); wrote {report.out} and {report.dropped_path}"
    )


def check_targets(source: Path, name: str, inputs: list[Path], out: Path) -> None:
    """Refuse outputs that would write over an input, into the directory being read, or over a run's files."""
    read = {p.resolve() for p in inputs}
    for target in (out, dropped_path_for(out)):
        resolved = target.resolve()
        if resolved in read:
            raise UserError(f"--out {out}: {target} is the input file; write somewhere else")
        if _run_like(source, name):
            if resolved.parent == source.resolve() and target.name in RUN_FILES:
                raise UserError(f"--out {out}: {target} is a file of the run directory being read; write elsewhere")
        elif source.is_dir() and resolved.is_relative_to(source.resolve()):
            raise UserError(f"--out {out}: {target} is inside the directory being read; write elsewhere")
        if any(p.is_relative_to(resolved) for p in read):
            raise UserError(f"--out {out}: the input {inputs[0]} is inside {target}; write elsewhere")


def _run_like(source: Path, name: str) -> bool:
    """SOURCE is read as a run directory (its --file) when it is one, or holds that file."""
    return source.is_dir() and (is_run_dir(source) or (source / name).is_file())
