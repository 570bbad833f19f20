"""Crash safety: SIGKILL a real `synthforge generate` mid-run, rerun, and compare with an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import write_pipeline

LIMIT = 16


def _generate(project: Path, out: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "synthforge.cli.main",
        "generate",
        "pipelines/tiny-cai.yaml",
        "--limit",
        str(LIMIT),
        "--out",
        str(out),
        "--no-progress",
    ]
    return subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _checkpoint_lines(out: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in (out / "checkpoints").glob("*.jsonl")) if out.exists() else 0


def test_sigkill_then_rerun_matches_uninterrupted_run(project, tiny_model_dir):
    pipeline = write_pipeline(project, tiny_model_dir, max_new_tokens=24)
    text = pipeline.read_text().replace("batch_size: 4", "batch_size: 2")
    pipeline.write_text(text, encoding="utf-8")

    reference = _generate(project, project / "reference")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    out = project / "killed"
    victim = _generate(project, out)
    deadline = time.time() + 240
    while _checkpoint_lines(out) < 6 and time.time() < deadline and victim.poll() is None:
        time.sleep(0.05)
    assert victim.poll() is None, "run finished before it could be killed; make it longer"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    done_before = _checkpoint_lines(out)
    assert 0 < done_before < 2 * LIMIT
    assert not (out / "sft.jsonl").exists()  # final artefacts appear only when the run completes

    rerun = _generate(project, out)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
    for name in ("sft.jsonl", "dpo.jsonl", "trace.jsonl", "dropped.jsonl"):
        assert (out / name).read_bytes() == (project / "reference" / name).read_bytes(), name
    trace = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in trace}) == len(trace) == LIMIT
    manifest = json.loads((out / "manifest.json").read_text())
    reports = [stage["report"] for stage in manifest["stages"]]
    # No teacher call was repeated: the rerun computed exactly the records that had no checkpoint.
    assert sum(r["reused"] for r in reports) == done_before
    assert sum(r["computed"] for r in reports) == 2 * LIMIT - done_before
