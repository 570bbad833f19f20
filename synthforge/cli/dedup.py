"""``synthforge dedup``: MinHash near-duplicate removal on any JSONL file or run directory."""

from __future__ import annotations

from pathlib import Path

import click
from tqdm.auto import tqdm

from synthforge.dedup.files import dedup_file, dropped_path_for, resolve_input
from synthforge.dedup.near_duplicates import VERIFY, DedupSettings
from synthforge.errors import UserError

RUN_FILES = ("sft.jsonl", "dpo.jsonl", "trace.jsonl", "dropped.jsonl", "manifest.json", "README.md")


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output JSONL.")
@click.option("--key", type=click.Choice(["prompt", "response", "both"]), default="prompt", show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.8, show_default=True)
@click.option("--num-perm", type=click.IntRange(min=2), default=128, show_default=True)
@click.option("--ngram", type=click.IntRange(min=1), default=5, show_default=True, help="Shingle length.")
@click.option("--unit", type=click.Choice(["word", "char"]), default="word", show_default=True)
@click.option("--verify", type=click.Choice(list(VERIFY)), default="signature", show_default=True)
@click.option("--keep", type=click.Choice(["first", "longest", "confidence"]), default="first", show_default=True)
@click.option("--file", "name", default="sft.jsonl", show_default=True, help="File to read in a run directory.")
@click.option("--seed", type=int, default=1, show_default=True, help="MinHash permutation seed.")
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: signatures, band shuffle and bucket edges as a Ray job (same result).",
)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Ray workers (--engine ray).")
def dedup(source, out, key, threshold, num_perm, ngram, unit, verify, keep, name, seed, engine, workers) -> None:
    """Remove near-duplicates from SOURCE (a JSONL file, or a run directory's --file) into --out.

    \b
    Rows are compared by --key text (word or character n-gram shingles, MinHash, LSH); clusters are
    global and transitive; one row per cluster is kept (--keep) unchanged, the others are written with
    the row they duplicate to <out>.dropped.jsonl.
    \b
    Example:
      synthforge dedup outputs/cai-harmless --key prompt --threshold 0.8 --out prompts.dedup.jsonl
    """
    path = resolve_input(source, name)
    out = out.expanduser()
    for target in (out, dropped_path_for(out)):
        if target.resolve() == path.resolve():
            raise UserError(f"--out {out}: {target} is the input file; write somewhere else")
        if source.is_dir() and target.resolve().parent == source.resolve() and target.name in RUN_FILES:
            raise UserError(f"--out {out}: {target} is a file of the run directory being read; write elsewhere")
    settings = DedupSettings(threshold=threshold, num_perm=num_perm, ngram=ngram, unit=unit, verify=verify, seed=seed)
    with tqdm(desc="dedup", unit="row", disable=None) as bar:
        if engine == "ray":
            from synthforge.engine.ray_executor import import_ray

            import_ray()  # one line telling how to install it when missing
        report = dedup_file(path, out, settings, key, keep, bar.update, workers if engine == "ray" else 0)
    click.echo(
        f"{report.rows} rows → {report.kept} kept, {report.dropped} near-duplicates dropped "
        f"({report.clusters} clusters); wrote {report.out} and {report.dropped_path}"
    )
