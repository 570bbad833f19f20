"""`teacher.openai.batch: true` against `synthforge serve --state-dir` (our real server for the Batch API): the
same outputs as online, and a client killed with SIGKILL after its batch was created never creates a second one
on the rerun, which finds the batch on the server and takes its results."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.conftest import wait_until
from tests.fault_server import serve_handle

pytestmark = pytest.mark.slow  # two servers' worth of tiny-model generation, and a killed run


def _pipeline(project, url: str, batch: bool, poll: float = 0.2):
    settings = {"base_url": url, "batch": batch, "batch_poll_s": poll, "score": "prompt_logprobs"}
    teacher = json.dumps({"backend": "openai", "model": "tiny", "openai": settings})
    path = project / "pipelines" / f"batch-{batch}.yaml"
    path.write_text(
        f"name: b\nseed: 3\nteacher: {teacher}\nseeds: {{path: seeds/red-team.jsonl}}\n"
        "stages:\n  - respond: {sampling: {temperature: 1.0, max_new_tokens: 6}}\n"
        "export: {sft: true, dpo: false}\npaths: {prompts: ../prompts, constitutions: ../constitutions}\n"
    )
    return path


def _generate(path, out, limit=12):
    command = [sys.executable, "-m", "synthforge.cli.main", "generate", str(path), "--limit", str(limit)]
    return subprocess.Popen([*command, "--out", str(out), "--no-progress"], stderr=subprocess.PIPE, text=True)


def test_batch_mode_makes_what_online_makes_and_a_killed_run_never_sends_twice(project, tiny_model_dir, tmp_path):
    state = tmp_path / "state"
    args = ["--teacher", str(tiny_model_dir), "--model-name", "tiny", "--threads", "1", "--device", "cpu"]
    with serve_handle([*args, "--state-dir", str(state)]) as (url, _):
        online = _generate(_pipeline(project, url, False), project / "online")
        assert online.wait(timeout=300) == 0, online.stderr.read()
        killed = _generate(_pipeline(project, url, True), project / "batched")
        wait_until(lambda: any((state / "batches").glob("batch_*.json")), 120, "the batch to be created")
        killed.send_signal(signal.SIGKILL)
        assert killed.wait(timeout=30) == -signal.SIGKILL
        assert not (project / "batched" / "manifest.json").exists()  # killed while its batch ran
        rerun = _generate(_pipeline(project, url, True), project / "batched")
        assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
        batches = list((state / "batches").glob("batch_*.json"))
        assert len(batches) == 1  # found again on the server, not sent a second time
        counts = json.loads(batches[0].read_text())["request_counts"]
        assert counts["total"] == 12 and counts["completed"] == 12
    online_rows = (project / "online" / "sft.jsonl").read_bytes()
    assert online_rows and (project / "batched" / "sft.jsonl").read_bytes() == online_rows
