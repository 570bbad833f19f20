"""The README and docs/ are true: every relative link resolves, the README's pipeline example is a valid
pipeline, every quick command of a shell block (checks, dry runs, listings, a new project) runs here, and
every other command line (fenced ``bash example``) names real commands and options."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_the_readme_is_an_entry_page_and_the_manual_has_its_pages():
    assert len((REPO / "README.md").read_text().splitlines()) <= 300
    names = {p.stem for p in PAGES[1:]}
    assert {"pipeline-yaml", "stages", "teachers", "constitutions", "dedup-and-ray", "guarantees"} <= names
    assert {"training-and-evaluation", "performance", "architecture"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    targets = [t for t in LINK.findall(page.read_text()) if not re.match(r"^[a-z]+:|^#", t)]
    missing = [t for t in targets if not (page.parent / t.split("#")[0]).exists()]
    assert missing == [], f"{page.name}: {missing}"


def test_every_manual_page_is_linked_from_the_readme():
    linked = set(LINK.findall((REPO / "README.md").read_text()))
    assert [p.name for p in PAGES[1:] if f"docs/{p.name}" not in linked] == []


@pytest.fixture
def checkout_copy(tmp_path, monkeypatch) -> Path:
    for kind in ("constitutions", "prompts", "pipelines"):
        shutil.copytree(REPO / kind, tmp_path / kind)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readmes_pipeline_example_is_a_valid_pipeline(checkout_copy, capsys):
    example = next(b for b in _blocks((REPO / "README.md").read_text(), "yaml") if "stages:" in b)
    (checkout_copy / "pipelines" / "my-cai.yaml").write_text(example)
    code, out, err = run_cli(["generate", "pipelines/my-cai.yaml", "--dry-run", "--limit", "1"], capsys)
    assert code == 0, err
    assert "=== critique_revise" in out and "=== verify_pairs" in out


FENCE = re.compile(r"^```(?:bash|sh)( example)?\n(.*?)^```", flags=re.S | re.M)
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def _command_lines(page: Path) -> list[tuple[bool, list[list[str]]]]:
    """Every command line of the page's shell blocks in order: (in a block marked ``bash example``, its
    ``&&``-joined commands as argument lists, environment assignments left out); continuation lines joined."""
    lines = []
    for example, body in FENCE.findall(page.read_text()):
        for line in body.replace("\\\n", " ").splitlines():
            commands = [shlex.split(part, comments=True) for part in line.split("&&")]
            commands = [[w for i, w in enumerate(c) if not (ASSIGNMENT.match(w) and i == 0)] for c in commands if c]
            if commands:
                lines.append((bool(example), commands))
    return lines


def _quick(args: list[str]) -> bool:
    """Commands that run here in seconds: checks, listings, dry runs, help, a new project."""
    return (
        args[0] in ("list", "init")
        or args[:2] in (["constitution", "check"], ["constitution", "show"])
        or any(flag in args for flag in ("--dry-run", "--help"))
    )


PAGES_WITH_COMMANDS = [p for p in PAGES if _command_lines(p)]


@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS, ids=lambda p: p.name)
def test_a_docs_shell_block_is_quick_or_marked_as_an_example(page):
    """A block whose commands take longer than seconds (a generation, a training run, an install) is fenced
    ``bash example``; every other block holds only quick synthforge commands (and ``cd``), which are run below."""
    slow = [
        " ".join(c)
        for example, commands in _command_lines(page)
        if not example
        for c in commands
        if c[0] != "cd" and not (c[0] == "synthforge" and _quick(c[1:]))
    ]
    assert slow == [], f"{page.name}: mark these blocks ```bash example: {slow}"


@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS, ids=lambda p: p.name)
def test_every_quick_docs_command_runs(page, checkout_copy, monkeypatch, capsys):
    """The page's quick commands, in order and in a checkout's copy (``cd`` followed), exit 0 — those inside
    example blocks too."""
    ran = 0
    for _, commands in _command_lines(page):
        for args in commands:
            if args[0] == "cd":
                monkeypatch.chdir(Path.cwd() / args[1])
            elif args[0] == "synthforge" and _quick(args[1:]):
                code, _, err = run_cli(args[1:], capsys)
                assert code == 0, f"{page.name}: {' '.join(args)}: {err}"
                ran += 1
    if page.name == "README.md":
        assert ran >= 5  # the constitution checks, the dry run, the new project and the listing


@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS, ids=lambda p: p.name)
def test_every_docs_command_names_real_commands_and_options(page, monkeypatch, capsys):
    """Every synthforge command line in the docs, slow ones too, parses: its command exists, and so do its
    options and their values' types and choices (click parses them; nothing runs)."""
    import click

    from synthforge.cli.main import cli

    monkeypatch.setattr(click.Command, "invoke", lambda self, ctx: None)  # parse, then do nothing
    for _, commands in _command_lines(page):
        for args in (c for c in commands if c[0] == "synthforge"):
            try:
                cli.main(args=args[1:], prog_name="synthforge", standalone_mode=False)
            except click.UsageError as exc:
                pytest.fail(f"{page.name}: {' '.join(args)}: {exc.format_message()}")
    capsys.readouterr()
