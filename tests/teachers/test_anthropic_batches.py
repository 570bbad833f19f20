"""Anthropic's Message Batches (`teacher.anthropic.batch: true`) against the stand-in's batch routes
(tests/anthropic_standin.py, written from the documented shapes; the real API can't be reached from here): the
online answers, samples told apart, failed lines as teacher errors; a client stopped at each point of a submission
sends the work once, the run's log and the server's list of batches finding what it made (the API has no batch
metadata, so a batch of another client with the same request count is told apart by its results' custom_ids); and
a pipeline in batch mode writes what online writes, then deletes its ended batches."""

from __future__ import annotations

import json

import pytest

from synthforge.errors import TeacherError
from synthforge.teachers.base import SamplingParams
from tests.anthropic_standin import anthropic_teacher
from tests.conftest import run_cli
from tests.kill_at import once, stopped_then_resumed


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


CONVERSATIONS = [[{"role": "system", "content": "Be brief."}, *_user("hello there")], _user("what is a tide?")]


def _texts(completions) -> list[list[tuple[str, int, int]]]:
    return [[(c.text, c.prompt_tokens, c.completion_tokens) for c in samples] for samples in completions]


def test_message_batches_answer_as_online_with_samples_apart_and_failed_lines_as_errors(standin):
    params = SamplingParams(temperature=0.5, max_new_tokens=20, n=2)
    online, batched = anthropic_teacher(standin), anthropic_teacher(standin, batch=True, batch_poll_s=0.05)
    try:
        expected = _texts(online.generate(CONVERSATIONS, params))
        assert _texts(batched.generate(CONVERSATIONS, params)) == expected
        (batch,) = standin.batches.values()
        requests = standin.requests[batch["id"]]
        assert len(requests) == 4 and len({r["custom_id"] for r in requests}) == 4  # the two samples: two ids
        assert requests[0]["params"]["system"] == "Be brief." and "seed" not in requests[0]["params"]
        with pytest.raises(TeacherError, match="HTTP 400: prompt is too long") as refused:
            batched.generate([_user("TOO LONG to answer")], SamplingParams())
        assert not refused.value.retryable  # an errored line a retry can't help: not sent again
        busy = batched.generate([_user("BUSY now")], SamplingParams())[0][0]
        assert busy.text == "echo: BUSY now"  # a rate-limited line was sent again in a new batch, and answered
        assert len(standin.batches) == 4
    finally:
        online.close()
        batched.close()


class Crash(Exception):
    """Where a killed client would stop."""


POINTS = ["before create", "create unrecorded", "another client's batch too", "polling", "download"]


@pytest.mark.parametrize("point", POINTS)
def test_a_client_stopped_at_any_point_sends_the_work_once(point, standin, tmp_path, monkeypatch):
    """One crash at ``point``, then a new client on the same run log. "another client's batch too": ours was made
    but not recorded, and someone else's with as many requests was made just after it (the newest the list shows)."""
    from synthforge.teachers.anthropic_batches import PATH, AnthropicBatches
    from synthforge.teachers.http import JsonClient

    act, armed = once(Crash)
    real_send, real_submit = JsonClient.send, AnthropicBatches.submit

    async def send(self, method, path, raw=False, **request):
        if (point, method) == ("before create", "POST") and path == PATH:
            act()
        if point == "polling" and method == "GET" and path.startswith(PATH + "/msgbatch_") and "/results" not in path:
            act()
        if point == "download" and method == "GET" and path.endswith("/results"):
            act()
        return await real_send(self, method, path, raw, **request)

    async def submit(self, intent, data, record):
        batch = await real_submit(self, intent, data, record)
        if point == "another client's batch too" and armed[0]:
            foreign = [
                {"custom_id": f"theirs-{i}", "params": r["params"]} for i, r in enumerate(standin.requests[batch])
            ]
            standin.create_batch({"requests": foreign})
        if point in ("create unrecorded", "another client's batch too"):
            act()
        return batch

    monkeypatch.setattr(JsonClient, "send", send)
    monkeypatch.setattr(AnthropicBatches, "submit", submit)
    params = SamplingParams(temperature=0.5, max_new_tokens=20)
    log_path = tmp_path / "run" / "batches.jsonl"
    answers = stopped_then_resumed(
        lambda: anthropic_teacher(standin, batch=True, batch_poll_s=0.05),
        log_path,
        lambda teacher: teacher.generate(CONVERSATIONS, params),
        Crash,
    )
    assert not armed[0]
    online = anthropic_teacher(standin)
    try:
        assert _texts(answers) == _texts(online.generate(CONVERSATIONS, params))
    finally:
        online.close()
    ours = [b for b in standin.batches if not standin.requests[b][0]["custom_id"].startswith("theirs-")]
    assert len(ours) == 1  # the work was sent once
    steps = [json.loads(line)["step"] for line in log_path.read_text().splitlines()]
    assert steps.count("foreign") == (point == "another client's batch too")


def test_a_pipeline_in_batch_mode_writes_what_online_writes_and_deletes_its_batches(standin, project, capsys):
    pipeline = project / "pipelines" / "claude.yaml"
    outputs = {}
    for batch in (False, True):
        settings = json.dumps({"base_url": standin.url, "batch": batch, "batch_poll_s": 0.05})
        pipeline.write_text(
            f"name: claude\nseed: 1\nteacher: {{model: claude-standin, backend: anthropic, anthropic: {settings}}}\n"
            "seeds: {path: seeds/tasks.jsonl}\nstages:\n  - respond: {sampling: {max_new_tokens: 40}}\n"
            "export: {sft: true, dpo: false}\npaths: {prompts: ../prompts, constitutions: ../constitutions}\n"
        )
        out = project / f"out-{batch}"
        code, _, err = run_cli(["generate", pipeline, "--limit", "3", "--out", out, "--no-progress"], capsys)
        assert code == 0, err
        outputs[batch] = (out / "sft.jsonl").read_bytes()
    assert outputs[True] == outputs[False] and outputs[True]
    assert not standin.batches  # ended and released: deleted once the run was saved
    assert "released" in (project / "out-True" / "checkpoints" / "batches.jsonl").read_text()
