"""Fixtures of the teacher tests."""

from __future__ import annotations

import pytest

from tests.anthropic_standin import KEY, anthropic_standin


@pytest.fixture
def standin(monkeypatch):
    """The Anthropic stand-in, with its key in ANTHROPIC_API_KEY."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with anthropic_standin() as running:
        yield running
