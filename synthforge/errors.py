"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


def excerpt(value: object, limit: int = 40, bare: bool = False) -> str:
    """A short quotation of something from a user's file for an error message: its repr, cut at ``limit``
    characters (an error never echoes more of a file than it takes to find the problem). ``bare``: a short name
    of letters, digits, ``_`` and ``-`` is shown without quotes (a key in a key path)."""
    if bare and isinstance(value, str) and len(value) <= limit and value.replace("-", "_").isidentifier():
        return value
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


class UserError(Exception):
    """Bad input from the user (a file, a key, a path). The message names where the problem is."""


class TeacherError(RuntimeError):
    """A teacher failed to produce completions for a batch, for a reason worth retrying (HTTP 429/5xx, a
    timeout, a dropped connection, CUDA out of memory). The engine retries, splits the batch, then ledgers the
    record with this error. ``retryable=False`` (e.g. HTTP 400 for one request): split and ledger at once.
    Any other exception raised inside a stage is a bug and stops the run."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class StageFailed(RuntimeError):
    """A stage raised something other than a teacher error: a bug. The run stops (checkpoints so far are
    kept) with the stage's name, and the original exception chained for its traceback."""


class RunStopped(Exception):
    """A run stopped on purpose (not an error in the input): finished work is checkpointed. The CLI prints the
    message as one line and exits with ``exit_code``."""

    exit_code = 4


class TokenBudgetSpent(RunStopped):
    """The run's ``--max-tokens`` budget is spent; finished batches are checkpointed and a rerun resumes."""

    exit_code = 3


class LabelsUnreliable(RunStopped):
    """A judging stage found its judge unreliable and was set to stop the run (``on_unreliable: stop``)."""

    exit_code = 4
