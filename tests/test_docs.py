"""The README and docs/ are true: every relative link resolves, the README's pipeline example is a valid
pipeline, and its quick commands (those that run in seconds: checks, dry runs, listings) run here."""

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
QUICK = ("synthforge constitution check", "synthforge constitution show", "synthforge list")


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


def test_the_readmes_quick_commands_run(checkout_copy, capsys):
    commands = [
        line.split("#")[0].strip()
        for block in _blocks((REPO / "README.md").read_text(), "bash")
        for line in block.splitlines()
        if line.startswith(QUICK) or (line.startswith("synthforge generate") and "--dry-run" in line)
    ]
    assert len(commands) >= 4  # the constitution checks, the dry run and the listing
    for command in commands:
        code, _, err = run_cli(shlex.split(command)[1:], capsys)
        assert code == 0, f"{command}: {err}"
