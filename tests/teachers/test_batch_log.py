"""The run's batch log (checkpoints/batches.jsonl) against `synthforge serve`'s Batch API, run in this process with
a scripted teacher held at a gate, so a batch is still running exactly when the test looks: a killed run's batch
is listed and cancelled by `synthforge batches`, taken back by the rerun without sending the work again, and its
uploads and results are deleted once the run is saved; an edited stage's batch is cancelled by the next run; a
fresh run reuses nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

from tests.batch_server import gated_server
from tests.conftest import run_cli, wait_until


def _pipeline(project, url: str, max_new_tokens: int = 4):
    settings = json.dumps({"base_url": url, "batch": True, "batch_poll_s": 0.1})
    path = project / "pipelines" / "batched.yaml"
    path.write_text(
        f"name: batched\nseed: 1\nteacher: {{backend: openai, model: tiny, openai: {settings}}}\n"
        "seeds: {path: seeds/red-team.jsonl}\n"
        f"stages:\n  - respond: {{sampling: {{max_new_tokens: {max_new_tokens}}}}}\n"
        "export: {sft: true, dpo: false}\npaths: {prompts: ../prompts, constitutions: ../constitutions}\n"
    )
    return path


def _batches(state) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((state / "batches").glob("batch_*.json"))]


def _killed_while_its_batch_runs(path, out, state) -> dict:
    """A `generate` process killed with SIGKILL once its batch is on the server (held at the gate)."""
    command = [sys.executable, "-m", "synthforge.cli.main", "generate", str(path), "--limit", "4", "--out", str(out)]
    process = subprocess.Popen([*command, "--no-progress"], stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _batches(state) and _batches(state)[0]["status"] == "in_progress", 120, "a running batch")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    return _batches(state)[0]


def _run(path, out, fresh: bool = False) -> list[str]:
    from synthforge.engine.runner import RunOptions, run_pipeline
    from synthforge.engine.spec import load_pipeline

    said: list[str] = []
    run_pipeline(load_pipeline(path), RunOptions(out_dir=out, limit=4, fresh=fresh, progress=False), log=said.append)
    return said


def _steps(out) -> list[str]:
    return [json.loads(line)["step"] for line in (out / "checkpoints" / "batches.jsonl").read_text().splitlines()]


def test_a_killed_run_s_batch_is_listed_cancelled_taken_back_and_released(project, tmp_path, capsys):
    state, out = tmp_path / "state", project / "o"
    with gated_server(state) as (url, gate):
        path = _pipeline(project, url)
        running = _killed_while_its_batch_runs(path, out, state)
        code, shown, err = run_cli(["batches", path, "--out", out], capsys)
        assert code == 0, err
        assert "teacher default (tiny): 1 batch(es) running" in shown and running["id"] in shown
        code, shown, _ = run_cli(["batches", path, "--out", out, "--cancel"], capsys)
        assert code == 0 and "1 batch(es) cancelled" in shown
        gate.set()  # the requests it had started finish; then it ends cancelled, keeping them
        wait_until(lambda: _batches(state)[0]["status"] == "cancelled", 60, "the batch to end cancelled")
        said = _run(path, out)
        assert len(_batches(state)) == 1  # its finished answers were taken back: nothing was sent again
        rows = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
        assert len(rows) == 4 and all(r["messages"][-1]["content"].startswith("ok: ") for r in rows)
        assert any("1 batch submission(s) released" in line for line in said)
        assert not list((state / "files").glob("file-*.json"))  # its upload and its result file: deleted
        assert _steps(out)[-1] == "released"
        _run(path, out, fresh=True)
        assert len(_batches(state)) == 2  # a fresh run reuses nothing: the work went out again
    said = _run(path, out)  # the server is gone: a rerun with every batch released needs none
    assert any("reused 4, computed 0" in line for line in said)


def test_a_batch_of_a_stage_since_edited_is_cancelled_by_the_next_run(project, tmp_path):
    state, out = tmp_path / "state", project / "o"
    with gated_server(state) as (url, gate):
        old = _killed_while_its_batch_runs(_pipeline(project, url, max_new_tokens=4), out, state)
        edited = _pipeline(project, url, max_new_tokens=5)  # the stage's settings changed: its old requests are moot
        said: list[str] = []
        rerun = threading.Thread(target=lambda: said.extend(_run(edited, out)))
        rerun.start()
        try:
            wait_until(lambda: _batches(state)[0]["status"] == "cancelling", 60, "the old batch to be cancelled")
        finally:
            gate.set()
            rerun.join(timeout=120)
        assert not rerun.is_alive()
        statuses = {b["id"]: b["status"] for b in _batches(state)}
        assert statuses[old["id"]] == "cancelled" and len(statuses) == 2
        assert "1 running batch(es) of stage settings no longer in the pipeline cancelled" in said
        new = next(b["id"] for b in _batches(state) if b["id"] != old["id"])
        assert f"synthforge: batch {new}: completed 4/4" in said  # its states, in the run's log (no bars here)
        assert f"synthforge: batch {new}: 4 requests sent (/v1/chat/completions)" in said  # and its news
        assert _steps(out).count("discarded") == 1 and (out / "manifest.json").is_file()


def test_a_recorded_batch_gone_from_the_server_is_sent_again(project, tmp_path):
    """The log names a batch the server no longer has (past its retention, or a new server): the rerun says so,
    closes it as lost and sends its requests again."""
    out = project / "o"
    with gated_server(tmp_path / "first") as (url, _):
        _killed_while_its_batch_runs(_pipeline(project, url), out, tmp_path / "first")
    with gated_server(tmp_path / "second") as (url, gate):
        gate.set()
        _run(_pipeline(project, url), out)
        assert len(_batches(tmp_path / "second")) == 1
    assert "lost" in _steps(out) and len((out / "sft.jsonl").read_text().splitlines()) == 4


def test_a_batch_server_that_can_t_be_reached_is_one_line_and_the_log_keeps_its_batches(tmp_path):
    """Settling the run's log (here: a stage edited since, whose batch must be cancelled) against a server that is
    down: one line naming the setting, and the log unchanged for the next try."""
    import pytest

    from synthforge.engine.batch_log import BatchLog
    from synthforge.errors import UserError
    from synthforge.teachers.backends.openai import OpenAISettings, OpenAITeacher
    from tests.fault_server import free_port

    log = BatchLog(tmp_path / "batches.jsonl")
    intent = {"step": "intent", "intent": "in-1", "scope": "respond-old", "endpoint": "/v1/chat/completions"}
    log.view("default").record({**intent, "ids": ["sf-1"], "at": 0.0})
    log.view("default").record({"step": "created", "intent": "in-1", "batch": "batch_1"})
    settings = OpenAISettings(base_url=f"http://127.0.0.1:{free_port()}/v1", batch=True, retries=0)
    teacher = OpenAITeacher("tiny", settings, {"backend": "openai"})
    try:
        with pytest.raises(UserError, match=r"teacher.openai.batch: the batch API at .* failed .*carries on"):
            teacher.keep_log(log.view("default"), frozenset({"respond-new"}))
    finally:
        teacher.close()
    assert [e["step"] for e in BatchLog(tmp_path / "batches.jsonl").events_of("default")] == ["intent", "created"]
