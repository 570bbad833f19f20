"""Teacher backends: the factory, the OpenAI-compatible client against scripted faults, classified failures."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from synthforge.cli.main import main
from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.errors import StageFailed, TokenBudgetSpent, UserError
from synthforge.settings import SpecError
from synthforge.teachers.backends.openai import OpenAISettings, OpenAITeacher
from synthforge.teachers.base import SamplingParams
from synthforge.teachers.factory import LazyTeacher, teacher_identity, teacher_overrides
from tests.fault_server import FaultServer, chat_completion, free_port


def _pipeline(project: Path, teacher: str, stages: str | None = None, seeds: bool = True) -> Path:
    text = f"""
name: backend-test
seed: 3
teacher: {teacher}
{"seeds: {path: seeds/red-team.jsonl}" if seeds else ""}
stages:
{stages or "  - respond: {sampling: {temperature: 0.7, max_new_tokens: 8}}"}
"""
    path = project / "pipelines" / "backend-test.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _openai(url: str, **settings) -> str:
    base = {"base_url": url, "retries": 1, "timeout": 1.0, **settings}
    return json.dumps({"backend": "openai", "model": "m", "batch_size": 4, "max_retries": 1, "openai": base})


def _run(path: Path, out: Path, limit: int = 4, **options):
    return run_pipeline(load_pipeline(path), RunOptions(out_dir=out, limit=limit, **options), log=lambda _: None)


def _cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


# -- the factory --------------------------------------------------------------------------------------
def test_teacher_reference_syntax():
    assert teacher_overrides("embedded")[0] == "teacher.backend=transformers"
    sets = teacher_overrides("openai:Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1")
    assert 'teacher.model="Qwen/Qwen2.5-7B-Instruct"' in sets
    assert 'teacher.openai.base_url="http://127.0.0.1:8000/v1"' in sets and "teacher.vllm=null" in sets
    assert 'teacher.model="/models/llama"' in teacher_overrides("vllm:/models/llama")
    with pytest.raises(UserError):
        teacher_overrides("openai:")


def test_identity_is_known_before_loading_and_equals_the_loaded_teachers(project, tiny_model_dir):
    spec = load_pipeline(_pipeline(project, json.dumps({"model": str(tiny_model_dir), "device": "cpu"})))
    lazy = LazyTeacher(spec.teacher)
    assert not lazy.loaded and lazy.identity["backend"] == "transformers"
    from synthforge.teachers.backends.transformers import load_teacher

    assert lazy.identity == load_teacher(str(tiny_model_dir), device="cpu").identity
    http = load_pipeline(_pipeline(project, _openai("http://127.0.0.1:9/v1", revision="abc"))).teacher
    assert teacher_identity(http) == {
        "backend": "openai",
        "model": "m",
        "revision": "abc",
        "score": "top_logprobs",
        "top_logprobs": 20,
        "native_n": True,
    }


@pytest.mark.parametrize(
    ("teacher", "fragment"),
    [
        ('{"model": "embedded", "batch_size": -1}', "teacher: batch_size must be >= 1"),
        ('{"model": "embedded", "batch_size": 0}', "teacher: batch_size must be >= 1"),
        ('{"model": "embedded", "max_retries": -3}', "teacher: max_retries must be >= 0"),
        ('{"model": "embedded", "backend": "tgi"}', "backend must be one of"),
        ('{"backend": "openai", "model": "m", "openai": {"base_ur": "x"}}', "teacher.openai.base_ur: unknown setting"),
        ('{"backend": "openai", "model": "m", "openai": {"max_concurrency": 0}}', "max_concurrency must be >= 1"),
        (
            '{"backend": "openai", "model": "m", "openai": {"timeout": .nan}}',
            "teacher.openai.timeout: expected a finite number",
        ),
        ('{"backend": "openai", "model": "m", "vllm": {}}', "settings for backend 'vllm' given"),
    ],
)
def test_bad_teacher_settings_name_the_key(project, teacher, fragment):
    with pytest.raises(SpecError) as info:
        load_pipeline(_pipeline(project, teacher))
    assert fragment in str(info.value)


@pytest.mark.parametrize("device", ["cuda", "tpu:99"])
def test_a_device_this_machine_lacks_is_a_one_line_error(project, monkeypatch, capsys, device):
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("this machine has a GPU")
    monkeypatch.chdir(project)
    path = _pipeline(project, json.dumps({"model": "embedded", "device": device}))
    code, _, err = _cli(["generate", str(path), "--out", str(project / "out")], capsys)
    assert code == 2 and "teacher.device" in err and "Traceback" not in err
    assert not (project / "out").exists()


def test_a_stage_needing_what_the_backend_lacks_fails_before_any_request(project):
    judge = "  - judge: {constitution: harmless}"
    with FaultServer() as server:
        path = _pipeline(project, _openai(server.url, score="none"), judge)
        with pytest.raises(SpecError, match="stages.judge: stage judge needs log-probabilities"):
            _run(path, project / "out")
        magpie = "  - magpie: {num_prompts: 2}"
        path = _pipeline(project, _openai(server.url), magpie, seeds=False)
        with pytest.raises(SpecError, match="teacher.openai.tokenizer"):
            _run(path, project / "out")
        assert server.requests == []


# -- the OpenAI-compatible client under faults --------------------------------------------------------
def test_requests_carry_model_sampling_and_seed(project):
    with FaultServer() as server:
        result = _run(_pipeline(project, _openai(server.url)), project / "out")
    assert len(server.requests) == 4
    request = server.requests[0]
    assert request["model"] == "m" and request["max_tokens"] == 8 and request["temperature"] == 0.7
    assert isinstance(request["seed"], int) and len({r["seed"] for r in server.requests}) == 4
    assert result.manifest["usage"]["prompt_tokens"] == 40 and result.manifest["usage"]["completion_tokens"] == 12
    assert result.manifest["teacher"]["backend"] == "openai"


def test_429_with_retry_after_and_500_are_retried(project):
    def script(i, body):
        if i == 0:
            return (429, {"retry-after": "0.05"}, {"error": {"message": "slow down"}})
        if i == 1:
            return (500, {}, {"error": {"message": "boom"}})
        return None

    with FaultServer(script) as server:
        result = _run(_pipeline(project, _openai(server.url)), project / "out")
    assert result.manifest["counts"]["dropped"] == 0 and len(_lines(result.out_dir / "sft.jsonl")) == 4
    assert len(server.requests) == 6  # two faults, each retried by the SDK


def test_a_record_whose_requests_keep_failing_is_ledgered_with_the_error(project):
    victim = "hotwire"

    def script(i, body):
        return (500, {}, {"error": {"message": "kaput"}}) if victim in body["messages"][-1]["content"] else None

    with FaultServer(script) as server:
        result = _run(_pipeline(project, _openai(server.url)), project / "out", limit=6)
    dropped = _lines(result.out_dir / "dropped.jsonl")
    assert len(dropped) == 1 and victim in dropped[0]["record"]["prompt"]
    assert "teacher error after 2 attempt(s) alone: HTTP 500: kaput" in dropped[0]["reason"]
    assert len(_lines(result.out_dir / "sft.jsonl")) == 5
    # The other records of the failed batch were not asked again: their answers were kept for the retry.
    others = [r for r in server.requests if victim not in r["messages"][-1]["content"]]
    assert len(others) == 5


def test_timeouts_and_dropped_connections_are_retried_then_ledgered(project):
    def script(i, body):
        content = body["messages"][-1]["content"]
        if "hotwire" in content:
            return "sleep"  # slower than the 1 s timeout, every time
        if "bomb" in content and i < 3:
            return "drop"  # connection closed without an answer, twice
        return None

    with FaultServer(script) as server:
        result = _run(_pipeline(project, _openai(server.url)), project / "out", limit=6)
    dropped = _lines(result.out_dir / "dropped.jsonl")
    reason = "teacher error after 2 attempt(s) alone: request timed out after 1 s (and retries)"
    assert [d["reason"] for d in dropped] == [reason]
    assert len(_lines(result.out_dir / "sft.jsonl")) == 5


def test_an_empty_or_malformed_answer_is_never_a_success(project):
    def script(i, body):
        if "hotwire" in body["messages"][-1]["content"]:
            broken = chat_completion(body)
            broken["choices"][0]["message"]["content"] = None
            return (200, {}, broken)
        return None

    with FaultServer(script) as server:
        result = _run(_pipeline(project, _openai(server.url)), project / "out", limit=6)
    dropped = _lines(result.out_dir / "dropped.jsonl")
    assert len(dropped) == 1 and "without message content" in dropped[0]["reason"]
    assert all(row["messages"][1]["content"] for row in _lines(result.out_dir / "sft.jsonl"))


def test_an_always_401_endpoint_stops_the_run_with_one_line(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    with FaultServer(lambda i, b: (401, {}, {"error": {"message": "Incorrect API key provided"}})) as server:
        path = _pipeline(project, _openai(server.url))
        code, _, err = _cli(["generate", str(path), "--out", str(project / "out"), "--limit", "4"], capsys)
    assert code == 2 and "refused the request (401): Incorrect API key provided" in err and "Traceback" not in err
    assert len(server.requests) == 4  # 4 records of the first batch, no retries of a 401
    assert _lines(project / "out" / "dropped.jsonl") == []


def test_when_every_request_of_the_first_batch_fails_the_run_stops(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    with FaultServer(lambda i, b: (503, {}, {"error": {"message": "no replicas"}})) as server:
        path = _pipeline(project, _openai(server.url))
        code, _, err = _cli(["generate", str(path), "--out", str(project / "out"), "--limit", "8"], capsys)
    assert code == 2 and "every request of the first batch failed (4 records)" in err and "no replicas" in err
    assert len(server.requests) < 40  # the second batch was never sent
    # Nothing was checkpointed: the same run against a working server computes every record.
    with FaultServer() as server:
        path = _pipeline(project, _openai(server.url))
        result = _run(path, project / "out", limit=8)
    assert len(server.requests) == 8 and result.manifest["counts"]["dropped"] == 0


def test_a_server_that_lists_the_model_gets_a_full_window_from_the_start(project):
    # A server that says (GET /models) it is up and serves the model isn't probed with a first batch alone: while
    # the first request is held, the other batches' requests arrive too.
    arrived_while_held = []

    def hold_the_first(i: int, body: dict) -> None:
        deadline = time.monotonic() + 10
        while i == 0 and len(server.requests) < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        if i == 0:
            arrived_while_held.append(len(server.requests))

    with FaultServer(hold_the_first, models=["other", "m"]) as server:
        result = _run(_pipeline(project, _openai(server.url, timeout=20.0)), project / "out", limit=12)
    assert arrived_while_held == [12] and result.manifest["counts"]["sft"] == 12


def test_ready_asks_the_server_whether_it_serves_the_model():
    def ready(url: str) -> bool:
        teacher = OpenAITeacher("m", OpenAISettings(base_url=url, retries=0, timeout=2.0), {})
        try:
            return teacher.ready()
        finally:
            teacher.close()

    with FaultServer(models=["m"]) as listed, FaultServer(models=["other"]) as other, FaultServer() as silent:
        assert [ready(listed.url), ready(other.url), ready(silent.url)] == [True, False, False]
    assert ready(f"http://127.0.0.1:{free_port()}/v1") is False  # nobody there: the engine's probe will say why


def test_api_key_comes_from_the_environment_and_is_written_nowhere(project, monkeypatch):
    secret = "sk-test-7d1f0c2a9b"
    monkeypatch.setenv("SYNTHFORGE_TEST_KEY", secret)
    with FaultServer() as server:
        result = _run(_pipeline(project, _openai(server.url, api_key_env="SYNTHFORGE_TEST_KEY")), project / "out")
    assert all(h.get("Authorization", h.get("authorization")) == f"Bearer {secret}" for h in server.headers)
    for path in result.out_dir.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(encoding="utf-8", errors="replace"), path
    monkeypatch.delenv("SYNTHFORGE_TEST_KEY")
    with pytest.raises(UserError, match="environment variable SYNTHFORGE_TEST_KEY is not set"):
        _run(_pipeline(project, _openai(server.url, api_key_env="SYNTHFORGE_TEST_KEY")), project / "out2")


def test_n_is_native_or_fanned_out_with_distinct_seeds(project):
    from synthforge.teachers.backends.openai import OpenAISettings, OpenAITeacher
    from synthforge.teachers.base import SamplingParams

    with FaultServer() as server:
        for native in (True, False):
            teacher = OpenAITeacher("m", OpenAISettings(base_url=server.url, native_n=native), {})
            out = teacher.generate([[{"role": "user", "content": "hi"}]], SamplingParams(n=3, seed=11))
            teacher.close()
            assert len(out[0]) == 3
    native_request, *fanned = server.requests
    assert native_request["n"] == 3 and native_request["seed"] == 11
    assert [r["n"] for r in fanned] == [1, 1, 1] and len({r["seed"] for r in fanned}) == 3


def test_adaptive_window_halves_on_congestion_and_grows_back():
    from synthforge.teachers.flow import AdaptiveWindow

    window = AdaptiveWindow(limit=32)
    window.on_congestion()
    window.on_congestion()
    assert window.size == 8
    for _ in range(200):
        window.on_success()
    assert 20 < window.size <= 32
    for _ in range(10):
        window.on_congestion()
    assert window.size == 1


def test_adaptive_window_grants_slots_in_arrival_order_and_passes_on_a_cancelled_one():
    import asyncio

    from synthforge.teachers.flow import AdaptiveWindow

    async def scenario() -> tuple[list[int], int, int]:
        window = AdaptiveWindow(limit=2)
        order: list[int] = []
        peak = 0

        async def request(k: int, hold: float) -> None:
            nonlocal peak
            await window.acquire()
            order.append(k)
            peak = max(peak, window.in_flight)
            await asyncio.sleep(hold)
            await window.release()

        tasks = [asyncio.create_task(request(k, 0.02)) for k in range(6)]
        await asyncio.sleep(0)  # 0 and 1 hold the window; 2..5 wait in order
        tasks[3].cancel()  # a waiter that goes away gives up its place, not a slot
        await asyncio.gather(*tasks, return_exceptions=True)
        return order, peak, window.in_flight

    order, peak, left = asyncio.run(scenario())
    assert order == [0, 1, 2, 4, 5] and peak == 2 and left == 0


def test_429s_shrink_the_window(project):
    from synthforge.teachers.backends.openai import OpenAISettings, OpenAITeacher
    from synthforge.teachers.base import SamplingParams

    with FaultServer(lambda i, b: (429, {"retry-after": "0.01"}, {}) if i < 3 else None) as server:
        teacher = OpenAITeacher("m", OpenAISettings(base_url=server.url, max_concurrency=16, retries=5), {})
        teacher.generate([[{"role": "user", "content": f"q{i}"}] for i in range(8)], SamplingParams())
        teacher.close()
    assert teacher.window.congestion_events == 3 and teacher.window.size < 16


def test_rate_limit_spaces_requests():
    """On a fake clock: a full bucket goes at once, then each unit waits its share of a minute."""
    import asyncio

    from synthforge.teachers.flow import RateLimiter

    now, waits = [100.0], []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    async def take_all() -> list[float]:
        limiter = RateLimiter(per_minute=600, clock=lambda: now[0], sleep=sleep)  # 10 a second, a bucket of 600
        taken = []
        await limiter.take(600)
        taken.append(now[0])
        await limiter.take(5)  # the bucket is empty: 5 more take half a second
        taken.append(now[0])
        now[0] += 60.0  # a minute later the bucket is full again: 600 go at once
        await limiter.take(600)
        taken.append(now[0])
        return taken

    assert asyncio.run(take_all()) == [100.0, pytest.approx(100.5), pytest.approx(160.5)]
    assert waits == [pytest.approx(0.5)]


# -- failures that are ours --------------------------------------------------------------------------
def test_a_stage_that_raises_a_bug_stops_the_run_instead_of_dropping(project, tiny_teacher, monkeypatch):
    from synthforge.stages.respond import Respond

    def broken(self, batch, teacher):
        raise KeyError("response_text")

    monkeypatch.setattr(Respond, "process", broken)
    path = _pipeline(project, json.dumps({"model": "embedded"}))
    with pytest.raises(StageFailed, match="stage respond raised KeyError") as info:
        run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "out", limit=4), teacher=tiny_teacher)
    assert isinstance(info.value.__cause__, KeyError)
    assert _lines(project / "out" / "dropped.jsonl") == []


def test_max_tokens_stops_cleanly_and_the_same_command_resumes(project):
    with FaultServer() as server:
        path = _pipeline(project, _openai(server.url))
        with pytest.raises(TokenBudgetSpent, match="rerun the same command"):
            _run(path, project / "out", limit=12, max_tokens=20)  # one batch of 4 uses 52 tokens
        assert len(server.requests) == 4
        resumed = _run(path, project / "out", limit=12)
        assert len(server.requests) == 12  # the first batch was not asked again
        _run(path, project / "fresh", limit=12)
    assert (resumed.out_dir / "sft.jsonl").read_bytes() == (project / "fresh" / "sft.jsonl").read_bytes()


# -- servers that misbehave (guarantees) -----------------------------------------------------------------
class TestMisbehavingServers:
    @pytest.mark.parametrize(
        "answer",
        [
            b"<html>502 Bad Gateway</html>",
            {
                "choices": [{"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": "x"},
            },
            {"choices": "none"},
        ],
    )
    def test_a_malformed_200_answer_is_retried_then_ledgered_never_a_crash(self, project, answer):
        def script(i, body):
            return (200, {}, answer) if "hotwire" in body["messages"][-1]["content"] else None

        with FaultServer(script) as server:
            result = _run(_pipeline(project, _openai(server.url)), project / "out", limit=6)
        dropped = _lines(result.out_dir / "dropped.jsonl")
        assert len(dropped) == 1 and "malformed answer from the server" in dropped[0]["reason"]
        assert "2 attempt(s)" in dropped[0]["reason"] and len(_lines(result.out_dir / "sft.jsonl")) == 5

    @pytest.mark.parametrize(
        ("ref", "fragment"),
        [
            ("openai:m@http://127.0.0.1:99999/v1", "Port out of range"),
            ("openai:m@localhost:8000/v1", "must be a URL starting with http:// or https://"),
            ("openai:m@http:///v1", "names no host"),
        ],
    )
    def test_a_bad_server_url_is_one_line_before_any_request(self, project, capsys, ref, fragment):
        path = _pipeline(project, _openai("http://127.0.0.1:9/v1"))
        code, _, err = _cli(["generate", str(path), "--teacher", ref, "--out", str(project / "o")], capsys)
        assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
        assert not (project / "o").exists()

    def test_a_server_that_ignores_n_gets_one_request_per_sample(self, project, capsys):
        def script(i, body):
            return (200, {}, chat_completion({**body, "n": 1}))  # whatever n was asked

        with FaultServer(script) as server:
            teacher = OpenAITeacher("m", OpenAISettings(base_url=server.url, retries=0), {"backend": "openai"})
            try:
                params = SamplingParams(temperature=1.0, max_new_tokens=4, n=3, seed=11)
                samples = teacher.generate([[{"role": "user", "content": "hi"}]] * 2, params)
                again = teacher.generate([[{"role": "user", "content": "hi"}]], params)
            finally:
                teacher.close()
        assert [len(s) for s in samples] == [3, 3] and len({c.text for c in samples[0]}) == 3
        assert [c.text for c in again[0]] == [c.text for c in samples[0]]  # the fallback is deterministic
        assert "ignores 'n'" in capsys.readouterr().err
        assert all(r["n"] == 1 for r in server.requests[2:])


def test_the_judge_probe_asks_only_that_the_server_sends_log_probabilities_not_what_the_model_answers():
    """Before a judging stage's work, a server that ignores ``logprobs`` is one line; one that sends them passes
    whatever its model answers to the probe's question (a judge model may well answer "(A)" to "Say yes.")."""
    from synthforge.teachers.base import CHOICE

    def with_logprobs(i, body):
        answer = chat_completion(body, text="(A)")
        top = [["(", -0.1], ["A", -2.0]]
        tokens = [{"token": "(", "logprob": -0.1, "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top]}]
        answer["choices"][0]["logprobs"] = {"content": tokens}
        return 200, {}, answer

    settings = OpenAISettings(score="top_logprobs", retries=0)
    with FaultServer(with_logprobs) as server:
        teacher = OpenAITeacher("m", OpenAISettings(**{**vars(settings), "base_url": server.url}), {})
        try:
            assert teacher.probe(frozenset({CHOICE})) == []
        finally:
            teacher.close()
    with FaultServer() as server:  # answers without log-probabilities, as transformers serve does
        teacher = OpenAITeacher("m", OpenAISettings(**{**vars(settings), "base_url": server.url}), {})
        try:
            with pytest.raises(UserError, match="returned no logprobs for the judge's answer"):
                teacher.probe(frozenset({CHOICE}))
        finally:
            teacher.close()
