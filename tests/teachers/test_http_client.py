"""The teachers' JSON-over-HTTP client against the fault-injecting server: the OpenAI SDK's retry rules."""

from __future__ import annotations

import asyncio
import email.utils
import time

import pytest

from synthforge.teachers.http import ConnectionFailed, JsonClient, StatusError, TimedOut, retry_delay
from tests.fault_server import FaultServer, free_port

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _post(url: str, retries: int = 2, timeout: float = 2.0, seen: list[int] | None = None):
    async def observe(response) -> None:
        if seen is not None:
            seen.append(response.status_code)

    async def go():
        client = JsonClient(url, {"authorization": "Bearer k"}, timeout, retries, observe)
        try:
            return await client.post("/chat/completions", BODY)
        finally:
            await client.close()

    return asyncio.run(go())


def test_a_good_answer_is_its_json_and_the_body_goes_as_built():
    with FaultServer() as server:
        answer = _post(server.url)
    assert answer["choices"][0]["message"]["content"].startswith("answer")
    headers = {k.lower(): v for k, v in server.headers[0].items()}
    assert server.requests == [BODY] and headers["authorization"] == "Bearer k"


@pytest.mark.parametrize("status", [408, 409, 429, 500, 503])
def test_retryable_statuses_are_retried_then_answered(status):
    seen: list[int] = []
    with FaultServer(
        lambda i, b: (status, {"retry-after": "0.01"}, {"error": {"message": "busy"}}) if i < 2 else None
    ) as server:
        answer = _post(server.url, retries=2, seen=seen)
    assert seen == [status, status, 200] and "choices" in answer


def test_statuses_that_wont_change_are_not_retried_and_keep_the_servers_message():
    with (
        FaultServer(lambda i, b: (400, {}, {"error": {"message": "bad request"}})) as server,
        pytest.raises(StatusError) as info,
    ):
        _post(server.url, retries=3)
    assert len(server.requests) == 1 and info.value.status_code == 400
    assert info.value.body == {"error": {"message": "bad request"}}


def test_x_should_retry_overrides_the_status():
    refuse = FaultServer(lambda i, b: (500, {"x-should-retry": "false"}, {}) if i == 0 else None)
    with refuse as server, pytest.raises(StatusError):
        _post(server.url, retries=3)
    assert len(server.requests) == 1
    with FaultServer(
        lambda i, b: (400, {"x-should-retry": "true", "retry-after": "0.01"}, {}) if i == 0 else None
    ) as server:
        _post(server.url, retries=3)
    assert len(server.requests) == 2


def test_retries_run_out_with_the_last_status():
    busy = FaultServer(lambda i, b: (503, {"retry-after": "0.01"}, {"error": {"message": "no replicas"}}))
    with busy as server, pytest.raises(StatusError) as info:
        _post(server.url, retries=2)
    assert len(server.requests) == 3 and info.value.status_code == 503


def test_timeouts_and_dropped_connections_are_retried_then_reported():
    with FaultServer(lambda i, b: "sleep" if i == 0 else None) as server:
        assert "choices" in _post(server.url, retries=1, timeout=0.5)
    with FaultServer(lambda i, b: "sleep") as server, pytest.raises(TimedOut):
        _post(server.url, retries=0, timeout=0.5)
    with FaultServer(lambda i, b: "drop" if i == 0 else None) as server:
        assert "choices" in _post(server.url, retries=1)
    with pytest.raises(ConnectionFailed):
        _post(f"http://127.0.0.1:{free_port()}/v1", retries=0)


def test_retry_delay_follows_the_server_then_backs_off():
    assert retry_delay({"retry-after-ms": "250"}, 0) == pytest.approx(0.25)
    assert retry_delay({"retry-after": "2"}, 3) == pytest.approx(2.0)
    in_three = email.utils.formatdate(time.time() + 3, usegmt=True)
    assert 1.5 < retry_delay({"retry-after": in_three}, 0) <= 3.5
    for attempt, top in [(0, 0.5), (1, 1.0), (2, 2.0), (6, 8.0)]:  # no (or an absurd) Retry-After: back-off
        for headers in ({}, {"retry-after": "3600"}, {"retry-after": "soon"}):
            assert 0.75 * top <= retry_delay(headers, attempt) <= top
