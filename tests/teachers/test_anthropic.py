"""The Anthropic teacher against a local stand-in of the Messages API (tests/anthropic_standin.py: written from the
documented request and response shapes; the real API can't be reached from here)."""

from __future__ import annotations

import json

import pytest

from synthforge.errors import TeacherError, UserError
from synthforge.teachers.backends.anthropic import AnthropicSettings
from synthforge.teachers.base import SamplingParams
from tests.anthropic_standin import KEY, anthropic_teacher
from tests.conftest import run_cli

HI = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]


def test_messages_system_prompt_usage_samples_and_stops(standin):
    teacher = anthropic_teacher(standin)
    try:
        (first, second), *_ = teacher.generate([HI], SamplingParams(temperature=0.5, max_new_tokens=20, n=2))
        assert first.text == "echo: hello there" and first.finish_reason == "stop"
        assert first.prompt_tokens == 4 and first.completion_tokens == 3 and first.extra["stop_reason"] == "end_turn"
        assert len(standin.seen) == 2  # no n in the API: one request per sample
        sent = standin.seen[0]
        assert sent["system"] == "Be brief." and sent["messages"] == [{"role": "user", "content": "hello there"}]
        assert sent["temperature"] == 0.5 and "top_p" not in sent and "seed" not in sent
        cut = teacher.generate([HI], SamplingParams(max_new_tokens=2))[0][0]
        assert cut.finish_reason == "length" and cut.extra["stop_reason"] == "max_tokens"
        stopped = teacher.generate([HI], SamplingParams(max_new_tokens=20, stop=("there",)))[0][0]
        assert stopped.text == "echo: hello" and stopped.extra["stop_reason"] == "stop_sequence"
        refused = teacher.generate([[{"role": "user", "content": "REFUSE this"}]], SamplingParams())[0][0]
        assert refused.text == "" and refused.finish_reason == "stop" and refused.extra["stop_reason"] == "refusal"
    finally:
        teacher.close()


def test_extended_thinking_goes_into_the_reasoning_with_the_api_s_rules(standin):
    teacher = anthropic_teacher(standin)
    try:
        params = SamplingParams(temperature=0.2, max_new_tokens=30, max_reasoning_tokens=1024)
        answer = teacher.generate([HI], params)[0][0]
        assert answer.reasoning == "thinking about hello there" and answer.text == "echo: hello there"
        sent = standin.seen[-1]
        assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
        assert sent["temperature"] == 1.0 and sent["max_tokens"] == 1054
        with pytest.raises(UserError, match="extended thinking needs a budget of at least 1024 tokens"):
            teacher.generate([HI], SamplingParams(max_reasoning_tokens=500))
    finally:
        teacher.close()


def test_top_p_only_when_asked_and_the_api_s_refusal_is_one_line(standin):
    teacher = anthropic_teacher(standin, send_top_p=True, retries=0)
    try:
        with pytest.raises(TeacherError, match="cannot both be specified") as refused:
            teacher.generate([HI], SamplingParams(temperature=0.5, top_p=0.9))
        assert refused.value.retryable is False
    finally:
        teacher.close()


def test_rate_limits_and_overload_are_retried_and_errors_are_classified(standin, monkeypatch):
    teacher = anthropic_teacher(standin)
    try:
        for marker in ("BUSY", "OVERLOADED"):  # 429 then 200; 529 then 200
            answer = teacher.generate([[{"role": "user", "content": f"{marker} now"}]], SamplingParams())[0][0]
            assert answer.text == f"echo: {marker} now" and standin.attempts[marker] == 2
        with pytest.raises(TeacherError, match="prompt of 210000 tokens does not fit .* 200000 tokens") as long:
            teacher.generate([[{"role": "user", "content": "TOO LONG"}]], SamplingParams())
        assert long.value.retryable is False
    finally:
        teacher.close()
    monkeypatch.setenv("ANTHROPIC_API_KEY", "wrong")
    wrong = anthropic_teacher(standin)
    try:
        with pytest.raises(UserError, match=r"refused the request \(401\): invalid x-api-key .*api_key_env"):
            wrong.generate([HI], SamplingParams())
    finally:
        wrong.close()
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(UserError, match="environment variable ANTHROPIC_API_KEY is not set"):
        anthropic_teacher(standin)
    with pytest.raises(ValueError, match="without /v1"):
        AnthropicSettings(base_url="https://api.anthropic.com/v1")


def test_a_pipeline_on_the_anthropic_teacher_rates_with_json_and_says_it_is_not_seeded(standin, project, capsys):
    pipeline = project / "pipelines" / "claude.yaml"
    pipeline.write_text(
        "name: claude\nseed: 1\nteacher: {model: m, backend: anthropic}\nseeds: {path: seeds/tasks.jsonl}\n"
        "stages:\n  - respond: {sampling: {max_new_tokens: 40}}\n"
        "  - rate: {answers: response, scoring: auto}\n"
        "export: {sft: true, dpo: false}\npaths: {prompts: ../prompts, constitutions: ../constitutions}\n"
    )
    out = project / "out"
    teacher = f"anthropic:claude-standin@{standin.url}"
    code, _, err = run_cli(["generate", str(pipeline), "--limit", "2", "--out", str(out), "--teacher", teacher], capsys)
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["teacher"] == {"backend": "anthropic", "model": "claude-standin", "seeded": False}
    record = json.loads((out / "trace.jsonl").read_text().splitlines()[0])
    ratings = [s for s in record["steps"] if s["role"] == "rating"]
    assert len(ratings) == 4 and {s["method"] for s in ratings} == {"json"}
    assert any("output_config" in body for body in standin.seen)
    assert KEY not in (out / "manifest.json").read_text() + (out / "trace.jsonl").read_text()  # never written


def test_a_judge_on_the_anthropic_teacher_is_refused_at_validation_naming_what_to_do(standin, project, capsys):
    code, _, err = run_cli(
        ["generate", "rlaif", "--dry-run", "--teacher", f"anthropic:claude-standin@{standin.url}"], capsys
    )
    assert code == 2 and "needs log-probabilities of the judge's answers" in err and "stage rate" in err
    assert not standin.seen  # nothing was sent
