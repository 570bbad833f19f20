"""The :class:`~synthforge.teachers.base.Batched` protocol for a remote teacher whose requests go through a batch
API (a :class:`~synthforge.teachers.batch_api.BatchClient` on the teacher's event loop): one mixin for every
provider, so OpenAI's and Anthropic's backends list, cancel, release and answer the same way."""

from __future__ import annotations

import asyncio
from typing import Any

from synthforge.errors import TeacherError, UserError
from synthforge.teachers.base import BatchJournal, current_scope
from synthforge.teachers.batch_api import BatchClient, BatchEnded, BatchState, retryable
from synthforge.teachers.http import ConnectionFailed, StatusError, TimedOut


class BatchMode:
    """Mixed into a :class:`~synthforge.teachers.remote.RemoteTeacher`; ``batches`` is None when batch mode is off,
    ``batch_setting`` names the setting (``teacher.openai.batch``) in messages."""

    batches: BatchClient | None
    batch_setting: str
    settings: Any
    _loop: asyncio.AbstractEventLoop
    _classify_status: Any  # the backend's: what an error status becomes

    def _in_loop(self, make: Any) -> Any:
        """Run a batch-management call (settle, list, cancel, release: no record's work) on the teacher's loop;
        a server that fails it is one line, the run's log keeping what it recorded."""
        if self.batches is None:
            raise UserError(f"{self.batch_setting} is false: this teacher sends no batches")
        try:
            return asyncio.run_coroutine_threadsafe(make(self.batches), self._loop).result()
        except StatusError as exc:
            error = self._classify_status(exc)
        except (TimedOut, ConnectionFailed) as exc:
            error = TeacherError(str(exc))
        if isinstance(error, UserError):
            raise error from None
        raise UserError(
            f"{self.batch_setting}: the batch API at {self.settings.base_url} failed ({error}); the run's log keeps "
            "its batches, so the same command carries on once the server answers"
        ) from None

    def keep_log(self, journal: BatchJournal, live: frozenset[str]) -> int:
        assert self.batches is not None
        self.batches.attach(journal)
        dead = frozenset(i.scope for i in self.batches.open_intents()) - live
        return self._in_loop(lambda b: b.discard(dead)) if dead else 0

    def outstanding(self) -> list[dict[str, Any]]:
        return [state_object(s) for s in self._in_loop(lambda b: b.running())]

    def cancel_outstanding(self) -> list[dict[str, Any]]:
        return [state_object(s) for s in self._in_loop(lambda b: b.cancel_running())]

    def forget_batches(self) -> int:
        return self._in_loop(lambda b: b.forget())

    def release_batches(self) -> int:
        return self._in_loop(lambda b: b.release())

    def close_batches(self) -> None:
        """Stop following batches (they go on on the server: the run's log finds them again)."""
        if self.batches is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self.batches.aclose(), self._loop).result(timeout=10)

    def _batch_answers(self, endpoint: str, requests: list[dict[str, Any]], keys: list[Any] | None = None) -> list[Any]:
        """The answer bodies of ``requests`` sent as batch lines of the current request scope (found through the
        run's log, or sent); a failed line is a teacher error, retryable as its status says."""
        assert self.batches is not None
        try:
            answers = self.batches.answers(endpoint, requests, current_scope(), keys)
            found = asyncio.run_coroutine_threadsafe(answers, self._loop).result()
        except StatusError as exc:
            if exc.status_code in (404, 405):
                raise UserError(
                    f"{self.batch_setting}: the server at {self.settings.base_url} has no batch API (it answered "
                    f"{exc.status_code}); set it to false{self.no_batch_api_hint()}"
                ) from None
            raise self._classify_status(exc) from None
        except (TimedOut, ConnectionFailed) as exc:
            raise TeacherError(f"batch API at {self.settings.base_url}: {exc}") from None
        except BatchEnded as exc:
            raise TeacherError(str(exc), retryable=False) from None
        bodies = []
        for response in found:
            status = response.get("status_code")
            if status != 200:
                error = (response.get("body") or {}).get("error") or {}
                message = error.get("message", "") if isinstance(error, dict) else str(error)
                raise TeacherError(f"batch request failed: HTTP {status}: {message}", retryable=retryable(status))
            bodies.append(response["body"])
        return bodies

    def no_batch_api_hint(self) -> str:
        """What to add to the message about a server without a batch API."""
        return ""


def state_object(state: BatchState) -> dict[str, Any]:
    """A batch as ``synthforge batches`` shows it: the server's object with the common reading beside it."""
    return {**state.raw, "id": state.id, "status": state.status, "done": state.done, "total": state.total}
