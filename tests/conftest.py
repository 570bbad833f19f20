"""Shared fixtures: a tiny random Llama with a ChatML tokenizer, built from a config (no hub, seconds)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from synthforge.builtin import ROOT as BUILTIN
from synthforge.testing import build_tiny_model

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def tiny_teacher(tiny_model_dir):
    from synthforge.teachers.backends.transformers import load_teacher

    return load_teacher(str(tiny_model_dir), batch_size=4, device="cpu")


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the repo's prompts/, constitutions/ and pipelines/ in a temp dir (tests may edit it)."""
    for name in ("prompts", "constitutions", "pipelines"):
        shutil.copytree(BUILTIN / name, tmp_path / name)
    return tmp_path


def write_pipeline(project: Path, teacher: Path | str, max_new_tokens: int = 6, **extra: str) -> Path:
    """A small CAI pipeline over the project's seeds, fast on the tiny model."""
    text = f"""
name: tiny-cai
seed: 7
teacher: {{model: "{teacher}", batch_size: 4}}
seeds: {{path: seeds/red-team.jsonl}}
stages:
  - respond:
      sampling: {{temperature: 0.8, max_new_tokens: {max_new_tokens}}}
  - critique_revise:
      constitution: harmless
      rounds: {extra.get("rounds", 1)}
      sampling: {{temperature: 0.8, max_new_tokens: {max_new_tokens}}}
export: {{license: apache-2.0}}
"""
    path = project / "pipelines" / "tiny-cai.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(args: list, capsys) -> tuple[int, str, str]:
    """``synthforge ARGS`` in this process: (exit code, stdout, stderr)."""
    from synthforge.cli.main import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code or 0
    else:
        code = 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def wait_until(condition, timeout: float, what: str, interval: float = 0.01) -> None:
    """Poll ``condition`` until it holds; past ``timeout`` seconds, fail saying what never happened (every wait
    in the suite has a deadline: a slow machine fails with a reason instead of hanging)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g} s for {what}")
        time.sleep(interval)
