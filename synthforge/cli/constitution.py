"""``synthforge constitution``: check and show constitution files."""

from __future__ import annotations

from pathlib import Path

import click

from synthforge.constitution.parser import load_constitution


@click.group()
def constitution() -> None:
    """Work with constitution files (constitutions/*.txt)."""


@constitution.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def check(files: tuple[Path, ...]) -> None:
    """Parse FILES and report problems as file:line: message (exit 2 on the first bad file)."""
    for path in files:
        parsed = load_constitution(path)
        click.echo(f"{path}: ok, {len(parsed.principles)} principles, {len(parsed.examples)} few-shot examples")


@constitution.command()
@click.argument("file", type=click.Path(path_type=Path))
def show(file: Path) -> None:
    """Print FILE's principles as parsed (name, weight, tags, requests)."""
    parsed = load_constitution(file)
    for principle in parsed.principles:
        tags = f" tags={','.join(principle.tags)}" if principle.tags else ""
        click.echo(f"[{principle.name}] weight={principle.weight:g}{tags}")
        click.echo(f"  critique: {principle.critique}")
        click.echo(f"  revision: {principle.revision}")
        if principle.compare:
            click.echo(f"  compare:  {principle.compare}")
