"""The batch client's own rules, on an in-memory provider (no server): a settling of the run's log that failed
is tried again on the next call, and an intent whose batch the server no longer has is sent again."""

from __future__ import annotations

import asyncio

from synthforge.teachers.batch_api import BatchClient, BatchLimits, BatchState, MemoryJournal


class Provider:
    """Batches kept in a dict, answered as soon as they are made; ``find_fails`` times the listing fails."""

    def __init__(self, find_fails: int = 0):
        self.batches: dict[str, list[str]] = {}
        self.find_fails = find_fails

    def line(self, cid, body, endpoint):
        return {"custom_id": cid, "body": body}

    async def submit(self, intent, data, record):
        self.batches[f"b{len(self.batches)}"] = list(intent.ids)
        return f"b{len(self.batches) - 1}"

    async def find(self, intent, claimed):
        if self.find_fails:
            self.find_fails -= 1
            raise ConnectionError("the server is unreachable")
        return None

    async def resubmit(self, intent, record):
        return None

    async def state(self, batch_id):
        from synthforge.teachers.http import StatusError

        if batch_id not in self.batches:
            raise StatusError(404, {"error": {"message": "no such batch"}})
        ids = self.batches[batch_id]
        return BatchState(batch_id, "completed", False, len(ids), len(ids))

    async def results(self, state):
        return {cid: {"status_code": 200, "body": cid} for cid in self.batches[state.id]}

    async def cancel(self, batch_id):
        pass

    async def release(self, intent, state):
        pass


def _client(provider, journal) -> BatchClient:
    client = BatchClient(provider, BatchLimits(wait_s=0, poll_s=0.01))
    client.attach(journal)
    return client


def test_a_failed_settling_is_tried_again_and_a_batch_gone_from_the_server_is_sent_again():
    journal = MemoryJournal()
    journal.record({"step": "intent", "intent": "in-1", "scope": "s", "endpoint": "/e", "ids": ["x"], "at": 0.0})
    provider = Provider(find_fails=1)
    client = _client(provider, journal)

    async def ask():
        return await client.answers("/e", [{"q": 1}], "s")

    try:
        asyncio.run(ask())
        raise AssertionError("the first settling should have failed")
    except ConnectionError:
        pass
    assert [a["status_code"] for a in asyncio.run(ask())] == [200]  # settled again, then sent
    steps = [e["step"] for e in journal.events()]
    assert steps == ["intent", "lost", "intent", "created", "ended"]
    gone = _client(Provider(), journal)  # a new server: the recorded batch is gone
    assert [a["status_code"] for a in asyncio.run(gone.answers("/e", [{"q": 1}], "s"))] == [200]
    assert [e["step"] for e in journal.events()][5:] == ["lost", "intent", "created", "ended"]


def test_each_batch_s_state_is_a_progress_bar_or_a_log_line():
    from synthforge.engine.batch_log import BatchBars

    said: list[str] = []
    bars = BatchBars(False, said.append)
    bars(BatchState("batch_0123456789", "validating", True, 0, 0))
    bars(BatchState("batch_0123456789", "in_progress", True, 3, 24))
    bar = bars.bars["batch_0123456789"]
    assert (bar.n, bar.total) == (3, 24) and bar.desc.startswith("batch …23456789 in_progress") and not said
    bars(BatchState("batch_0123456789", "completed", False, 24, 24))
    assert bar.n == 24 and "completed" in bar.desc and bar.disable  # closed once it ended
    quiet = BatchBars(True, said.append)
    quiet(BatchState("b1", "in_progress", True, 1, 2))
    assert said == ["synthforge: batch b1: in_progress 1/2"]
