"""A real `synthforge generate` in batch mode killed with SIGKILL at each point of a batch submission
(tests/kill_at.py), against `synthforge serve`'s Batch API: the rerun sends the work in one batch, leaves no upload
behind, and writes what an online run writes, byte for byte."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.batch_server import gated_server
from tests.kill_at import POINTS

pytestmark = pytest.mark.slow  # a killed process and a rerun per point


def _pipeline(project, url: str, batch: bool):
    settings = json.dumps({"base_url": url, "batch": batch, "batch_poll_s": 0.1})
    path = project / "pipelines" / f"batch-{batch}.yaml"
    path.write_text(
        f"name: b\nseed: 1\nteacher: {{backend: openai, model: tiny, openai: {settings}}}\n"
        "seeds: {path: seeds/red-team.jsonl}\nstages:\n  - respond: {sampling: {max_new_tokens: 8}}\n"
        "export: {sft: true, dpo: false}\npaths: {prompts: ../prompts, constitutions: ../constitutions}\n"
    )
    return path


def _generate(path, out, *wrapper: str) -> subprocess.CompletedProcess:
    args = ["generate", str(path), "--limit", "6", "--out", str(out), "--no-progress"]
    command = [sys.executable, "-m", *(wrapper or ("synthforge.cli.main",)), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("point", POINTS)
def test_a_run_killed_at_any_point_of_a_submission_sends_the_work_once(point, project, tmp_path):
    state = tmp_path / "state"
    with gated_server(state) as (url, gate):
        gate.set()
        online = _generate(_pipeline(project, url, False), project / "online")
        assert online.returncode == 0, online.stderr
        killed = _generate(_pipeline(project, url, True), project / "batched", "tests.kill_at", point)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        rerun = _generate(_pipeline(project, url, True), project / "batched")
        assert rerun.returncode == 0, rerun.stderr
    batches = [json.loads(p.read_text()) for p in (state / "batches").glob("batch_*.json")]
    assert len(batches) == 1 and batches[0]["request_counts"]["total"] == 6  # the work went out once
    assert not list((state / "files").glob("file-*.json"))  # its upload and results deleted: no orphan left
    assert (project / "batched" / "sft.jsonl").read_bytes() == (project / "online" / "sft.jsonl").read_bytes()
