"""``synthforge report``: a self-contained HTML report of a run or a training run."""

from __future__ import annotations

from pathlib import Path

import click

from synthforge.errors import UserError


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write here (default: DIRECTORY/report.html)."
)
def report(directory: Path, out: Path | None) -> None:
    """Write DIRECTORY/report.html: for a run directory, the funnel, lengths, per-principle statistics, the
    judge's confidence, a searchable record browser with word diffs and the drop ledger; for a directory
    written by `synthforge train`, its curves, held-out evaluation and data provenance. One HTML file: CSS,
    script and charts inline, it loads nothing from the network. --out never replaces a file that isn't a
    synthforge report."""
    from synthforge.report.html import write_report

    if not directory.is_dir():
        raise UserError(f"{directory}: no such directory")
    target = write_report(directory, out)
    size = target.stat().st_size
    click.echo(f"wrote {target} ({size / 1024:.0f} KiB)")
