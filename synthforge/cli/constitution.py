"""``synthforge constitution``: check and show constitution files."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from synthforge.constitution.importers import import_constitution
from synthforge.constitution.parser import ConstitutionError, load_constitution, parse_constitution
from synthforge.constitution.writer import format_constitution
from synthforge.errors import UserError
from synthforge.files import check_not_input, claim_file, output_lock, write_atomic


@click.group()
def constitution() -> None:
    """Work with constitution files (constitutions/*.txt)."""


@constitution.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def check(files: tuple[Path, ...]) -> None:
    """Parse FILES and report every problem as file:line: message (exit 2 if any file has one)."""
    failed = False
    for path in files:
        try:
            parsed = load_constitution(path)
        except ConstitutionError as exc:
            failed = True
            for problem in exc.problems:
                click.echo(problem, err=True)
            continue
        click.echo(f"{path}: ok, {len(parsed.principles)} principles, {len(parsed.examples)} few-shot examples")
    if failed:
        sys.exit(2)


CONVERTED = "Converted by `synthforge constitution convert`"


def _converted(path: Path) -> bool:
    """A file this command wrote: its first line is the header it writes."""
    try:
        with path.open(encoding="utf-8") as handle:
            return handle.readline().startswith(f"# {CONVERTED}")
    except (OSError, UnicodeDecodeError):
        return False


@constitution.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
def convert(source: Path, out: Path | None) -> None:
    """Convert a JSON constitution (Hugging Face CAI recipe or Anthropic layout) to synthforge's text format."""
    if out is not None:
        check_not_input(out, [source], "-o")
    imported = import_constitution(source)
    header = f"{CONVERTED} from {source.name}.\nEdit freely; check with `synthforge constitution check`."
    text = format_constitution(imported, header=header)
    # Never hand over a file that `constitution check` would reject: parse what we would write.
    target = str(out) if out is not None else f"{source.name} (converted)"
    parse_constitution(text, source=target, name=imported.name)
    if out is None:
        click.echo(text, nl=False)
        return
    if not out.parent.is_dir():
        raise UserError(f"-o {out}: directory {out.parent} does not exist")
    with output_lock(out, "-o", "constitution convert"):
        claim_file(out, _converted, "-o", "constitution convert")
        write_atomic(out, text)
    click.echo(f"wrote {out}: {len(imported.principles)} principles, {len(imported.examples)} few-shot examples")


@constitution.command()
@click.argument("file", type=click.Path(path_type=Path))
def show(file: Path) -> None:
    """Print FILE's principles as parsed (name, weight, tags, requests)."""
    parsed = load_constitution(file)
    for principle in parsed.principles:
        tags = f" tags={','.join(principle.tags)}" if principle.tags else ""
        click.echo(f"[{principle.name}] weight={principle.weight:g}{tags}")
        if principle.can_critique:
            click.echo(f"  critique: {principle.critique}")
            click.echo(f"  revision: {principle.revision}")
        if principle.compare:
            click.echo(f"  compare:  {principle.compare}")
        if principle.rate:
            click.echo(f"  rate:     {principle.rate}")
