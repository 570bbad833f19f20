"""`synthforge serve --state-dir` speaks OpenAI's Batch API: driven here by the official `openai` client against a
real server subprocess on the tiny model (files.create, batches.create/retrieve/list/cancel, files.content), killed
and restarted mid-batch, and with a second server refused on the same folder."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.conftest import wait_until
from tests.fault_server import serve_handle
from tests.kill_at import POINTS, once, patches, stopped_then_resumed

openai = pytest.importorskip("openai")


def _args(tiny_model_dir, state, *more: str) -> list[str]:
    base = ["--teacher", str(tiny_model_dir), "--model-name", "tiny", "--threads", "1", "--device", "cpu"]
    return [*base, "--state-dir", str(state), *more]


def _client(url: str):
    return openai.OpenAI(base_url=url, api_key="none", max_retries=0)


def _requests(n: int, model: str = "tiny", first: int = 0) -> bytes:
    rows = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": f"Question {i}: what is a tide?"}],
                "max_tokens": 6,
                "temperature": 1.0,
                "seed": i,
            },
        }
        for i in range(first, first + n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _finished(client, batch_id: str, deadline: float = 120):
    done = {}

    def ended() -> bool:
        done["batch"] = client.batches.retrieve(batch_id)
        return done["batch"].status in ("completed", "failed", "cancelled", "expired")

    wait_until(ended, deadline, f"batch {batch_id} to end", interval=0.1)
    return done["batch"]


def test_the_official_client_runs_a_batch_whose_answers_equal_interactive_ones(tiny_model_dir, tmp_path):
    with serve_handle(_args(tiny_model_dir, tmp_path / "state")) as (url, _):
        client = _client(url)
        uploaded = client.files.create(file=("in.jsonl", _requests(4)), purpose="batch")
        assert uploaded.purpose == "batch" and uploaded.bytes > 0
        batch = client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"run": "r1"},
        )
        assert batch.status == "validating" and batch.metadata == {"run": "r1"}
        batch = _finished(client, batch.id)
        assert batch.status == "completed" and batch.request_counts.completed == 4 and batch.error_file_id is None
        lines = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
        assert [x["custom_id"] for x in lines] == ["req-0", "req-1", "req-2", "req-3"]
        for line in lines:
            body = json.loads(_requests(4).decode().splitlines()[int(line["custom_id"][4:])])["body"]
            alone = client.chat.completions.create(**body)
            assert line["response"]["status_code"] == 200
            assert line["response"]["body"]["choices"][0]["message"]["content"] == alone.choices[0].message.content
        assert [b.id for b in client.batches.list().data] == [batch.id]
        assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"


def test_bad_lines_fail_the_batch_naming_the_line_and_failed_requests_go_to_the_error_file(tiny_model_dir, tmp_path):
    with serve_handle(_args(tiny_model_dir, tmp_path / "state")) as (url, _):
        client = _client(url)
        bad = _requests(1) + b'{"custom_id": "x", "method": "GET", "url": "/v1/chat/completions", "body": {}}\n'
        failed = client.batches.create(
            input_file_id=client.files.create(file=("bad.jsonl", bad), purpose="batch").id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        failed = _finished(client, failed.id)
        assert failed.status == "failed" and failed.errors.data[0].line == 2
        assert failed.errors.data[0].message == "method must be POST"
        mixed = _requests(1) + _requests(1, model="not-served", first=1)
        batch = client.batches.create(
            input_file_id=client.files.create(file=("mixed.jsonl", mixed), purpose="batch").id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        batch = _finished(client, batch.id)
        assert batch.status == "completed" and (batch.request_counts.completed, batch.request_counts.failed) == (1, 1)
        error = json.loads(client.files.content(batch.error_file_id).text)
        assert error["custom_id"] == "req-1" and error["response"]["status_code"] == 404
        with pytest.raises(openai.BadRequestError, match="completion_window must be 24h"):
            client.batches.create(
                input_file_id=batch.output_file_id, endpoint="/v1/chat/completions", completion_window="1h"
            )
        with pytest.raises(openai.NotFoundError):
            client.batches.retrieve("batch_nope")


def test_a_batch_killed_with_the_server_finishes_after_a_restart_without_repeating_work(tiny_model_dir, tmp_path):
    state = tmp_path / "state"
    with serve_handle(_args(tiny_model_dir, state)) as (url, process):
        client = _client(url)
        uploaded = client.files.create(file=("in.jsonl", _requests(24)), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        results = state / "batches" / f"{batch.id}.results.jsonl"
        wait_until(lambda: results.is_file() and len(results.read_text().splitlines()) >= 3, 120, "some results")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=20)
    before = {json.loads(x)["custom_id"] for x in results.read_text().splitlines() if x.strip()}
    assert 3 <= len(before) < 24
    with serve_handle(_args(tiny_model_dir, state)) as (url, _):
        client = _client(url)
        done = _finished(client, batch.id)
        assert done.status == "completed" and done.request_counts.completed == 24
        ids = [json.loads(x)["custom_id"] for x in results.read_text().splitlines() if x.strip()]
        assert len(ids) == len(set(ids)) == 24  # nothing answered twice
        assert client.files.retrieve(uploaded.id).id == uploaded.id  # the upload survived the restart


def test_cancel_keeps_what_finished_and_a_second_server_is_refused_the_folder(tiny_model_dir, tmp_path):
    state = tmp_path / "state"
    with serve_handle(_args(tiny_model_dir, state, "--max-upload-mb", "0.01")) as (url, _):
        client = _client(url)
        with pytest.raises(openai.APIStatusError) as too_big:
            client.files.create(file=("big.jsonl", _requests(200)), purpose="batch")
        assert too_big.value.status_code == 413
        uploaded = client.files.create(file=("in.jsonl", _requests(40)), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        wait_until(lambda: client.batches.retrieve(batch.id).status == "in_progress", 60, "the batch to start")
        assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
        done = _finished(client, batch.id)
        assert done.status == "cancelled" and done.request_counts.completed < 40
        second = subprocess.run(
            [sys.executable, "-m", "synthforge.cli.main", "serve", *_args(tiny_model_dir, state), "--port", "1"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2 and "another synthforge serve keeps its batches there" in second.stderr
        assert "Traceback" not in second.stderr


def test_batch_requests_yield_to_interactive_ones_and_expire_by_the_clock(tmp_path):
    """The runner, with a fake answer and a fake clock: one batch request at a time while interactive requests
    run, its width otherwise; past expires_at the batch ends as expired with what finished."""
    import asyncio

    from synthforge.serve.batches import BatchRunner, BatchSettings, BatchStore

    now = [1000.0]
    store = BatchStore(BatchSettings(tmp_path / "state"), clock=lambda: now[0])
    running, most, busy = [0], {True: 0, False: 0}, [True]

    async def answer(endpoint, body):
        running[0] += 1
        most[busy[0]] = max(most[busy[0]], running[0])
        await asyncio.sleep(0.01)
        running[0] -= 1
        if body["seed"] == 30:
            now[0] += 25 * 3600  # a day and more later: the batch's window is over
        return {"ok": body["seed"]}

    def batch_of(n):
        uploaded = store.create_file(_requests(n), "in.jsonl", "batch")
        return store.create_batch(
            {"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        )

    runner = BatchRunner(store, answer, lambda: busy[0], width=8)
    first = asyncio.run(runner.run(batch_of(12)["id"]))
    busy[0] = False
    second = asyncio.run(runner.run(batch_of(12)["id"]))
    assert first["status"] == second["status"] == "completed" and most == {True: 1, False: 8}
    expired = asyncio.run(runner.run(batch_of(60)["id"]))
    assert expired["status"] == "expired" and 30 <= expired["request_counts"]["completed"] < 60


def test_batch_files_are_split_by_requests_bytes_and_tokens_and_ids_are_the_body_s_hash():
    from synthforge.teachers.batch_api import BatchLimits, custom_id, estimated_tokens, retryable, split

    rows = [(f"id{i}", b"x" * 10) for i in range(7)]
    assert [len(g) for g in split(rows, BatchLimits(max_requests=3))] == [3, 3, 1]
    assert [len(g) for g in split(rows, BatchLimits(max_bytes=25))] == [2, 2, 2, 1]
    assert [len(g) for g in split(rows, BatchLimits(max_tokens=2), tokens=lambda line: 1)] == [2, 2, 2, 1]
    assert len(split(rows, BatchLimits(max_tokens=None), tokens=lambda line: 10**6)) == 1  # no limit: not counted
    line = json.dumps({"custom_id": "a", "body": {"messages": [{"role": "user", "content": "x" * 400}]}}).encode()
    assert estimated_tokens(line, 4.0) == 100  # the stated estimate: message bytes / bytes_per_token
    many = [(f"id{i}", line) for i in range(5)]
    assert [len(g) for g in split(many, BatchLimits(max_tokens=250))] == [2, 2, 1]  # by estimated prompt tokens
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 1}
    assert custom_id(body) == custom_id(dict(reversed(list(body.items())))) != custom_id({**body, "seed": 2})
    assert len(custom_id(body)) <= 64 and retryable(429) and retryable(500) and not retryable(400)


class Crash(Exception):
    """Where a killed client would stop: raised once at one point of batch submission."""


@pytest.mark.parametrize("point", POINTS)
def test_a_client_stopped_at_any_point_of_a_batch_never_sends_the_work_twice(
    point, tiny_model_dir, tmp_path, monkeypatch
):
    """Each point of submission (tests/kill_at.py), simulated in-process: one crash, then a new client on the same
    run log. "unrecorded": the server did it, the log never heard. tests/teachers/test_batch_kill.py kills real
    runs there with SIGKILL."""
    from synthforge.teachers.backends.openai import OpenAISettings, OpenAITeacher
    from synthforge.teachers.base import SamplingParams

    act, armed = once(Crash)
    for owner, name, replacement in patches(point, act):
        monkeypatch.setattr(owner, name, replacement)
    conversations = [[{"role": "user", "content": f"Question {i}?"}] for i in range(6)]
    params = [SamplingParams(temperature=1.0, max_new_tokens=4, seed=i) for i in range(6)]
    state, log_path = tmp_path / "state", tmp_path / "run" / "batches.jsonl"
    with serve_handle(_args(tiny_model_dir, state)) as (url, _):
        settings = OpenAISettings(base_url=url, batch=True, batch_poll_s=0.1)
        answers = stopped_then_resumed(
            lambda: OpenAITeacher("tiny", settings, {"backend": "openai"}),
            log_path,
            lambda teacher: teacher.generate(conversations, params),
            Crash,
        )
        assert not armed[0]  # it crashed where asked
        online = OpenAITeacher("tiny", OpenAISettings(base_url=url), {"backend": "openai"})
        try:
            assert [a[0].text for a in answers] == [a[0].text for a in online.generate(conversations, params)]
        finally:
            online.close()
    batches = [json.loads(p.read_text()) for p in (state / "batches").glob("batch_*.json")]
    assert len(batches) == 1 and batches[0]["request_counts"]["total"] == 6  # the work was sent once
    uploads = [json.loads(p.read_text()) for p in (state / "files").glob("file-*.json")]
    assert len([f for f in uploads if f["purpose"] == "batch"]) == 1  # and uploaded once
    steps = [json.loads(line)["step"] for line in log_path.read_text().splitlines()]
    assert steps[0] == "intent" and "created" in steps and steps.count("intent") == 1 + (point == "before upload")
