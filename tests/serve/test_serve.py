"""`synthforge serve` as a real subprocess on 127.0.0.1, driven by the openai backend and by raw HTTP."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.serve.batcher import Batcher
from synthforge.teachers.backends.openai import OpenAISettings, OpenAITeacher
from synthforge.teachers.base import SamplingParams
from tests.conftest import wait_until, write_pipeline
from tests.fault_server import serve_process

KEY = "serve-test-key"


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    """A `synthforge serve` process on the tiny model (one torch thread: the test process is the other core)."""
    args = ["--teacher", str(tiny_model_dir), "--model-name", "tiny", "--threads", "1", "--device", "cpu"]
    with serve_process(args) as url:
        yield url


def _post(url: str, path: str, body: dict | bytes, key: str | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, headers={"content-type": "application/json"})
    if key:
        request.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _client(url: str, **settings) -> OpenAITeacher:
    return OpenAITeacher("tiny", OpenAISettings(base_url=url, **settings), {"backend": "openai"})


HI = [{"role": "user", "content": "How can I help you today?"}]


def test_chat_completions_seeds_n_and_stop(server):
    client = _client(server)
    try:
        params = SamplingParams(temperature=1.0, max_new_tokens=12, seed=5)
        first = client.generate([HI], params)[0][0]
        again = client.generate([HI], params)[0][0]
        other = client.generate([HI], params.with_seed(6))[0][0]
        assert first.text == again.text and first.text != other.text
        two = client.generate([HI], SamplingParams(temperature=1.0, max_new_tokens=12, seed=5, n=2))[0]
        assert len(two) == 2 and two[0].text != two[1].text
        assert first.finish_reason == "length" and first.completion_tokens == 12 and first.prompt_tokens > 0
        stop = first.text[len(first.text) // 2 :][:2]
        cut = client.generate([HI], SamplingParams(temperature=1.0, max_new_tokens=12, seed=5, stop=(stop,)))[0][0]
        assert cut.finish_reason == "stop" and first.text.startswith(cut.text) and stop not in cut.text
    finally:
        client.close()


def test_scores_through_the_server_equal_in_process_scores(server, tiny_teacher):
    client = _client(server, score="prompt_logprobs")
    candidates = [["(A)", "(B)"], ["The quick brown fox.", "Please rewrite the response."]]
    try:
        remote = client.score([HI, HI], candidates)
    finally:
        client.close()
    local = tiny_teacher.score([HI, HI], candidates)
    assert sum(remote, []) == pytest.approx(sum(local, []), abs=1e-4)


def test_completions_echo_logprobs(server, tiny_teacher):
    status, body = _post(
        server,
        "/completions",
        {"model": "tiny", "prompt": "The quick brown fox", "echo": True, "logprobs": 0, "max_tokens": 0},
    )
    assert status == 200
    choice = body["choices"][0]
    assert choice["text"] == "The quick brown fox"
    _, local = tiny_teacher.continuation_token_logprobs(None, "The quick brown fox")
    assert choice["logprobs"]["tokens"] == [text for _, text, _ in local]
    assert choice["logprobs"]["token_logprobs"][0] is None
    assert choice["logprobs"]["token_logprobs"][1:] == pytest.approx([lp for _, _, lp in local[1:]], abs=1e-4)


def test_the_cai_pipeline_through_the_server_equals_the_in_process_run(server, project, tiny_model_dir, tiny_teacher):
    path = write_pipeline(project, tiny_model_dir)
    local = run_pipeline(
        load_pipeline(path), RunOptions(out_dir=project / "local", limit=6), teacher=tiny_teacher, log=lambda _: None
    )
    overrides = ["teacher.backend=openai", "teacher.model=tiny", f"teacher.openai.base_url={server}"]
    remote = run_pipeline(
        load_pipeline(path, overrides), RunOptions(out_dir=project / "remote", limit=6), log=lambda _: None
    )
    for name in ("sft.jsonl", "dpo.jsonl"):
        assert (local.out_dir / name).read_bytes() == (remote.out_dir / name).read_bytes()
    assert remote.manifest["teacher"]["backend"] == "openai"
    assert remote.manifest["usage"] == local.manifest["usage"]


def test_the_judge_through_the_server_agrees_with_in_process_scores(server, project, tiny_model_dir, tiny_teacher):
    path = write_pipeline(project, tiny_model_dir)
    judge = ["stages=[{judge: {constitution: harmless, margin: 0.0, sampling: {temperature: 0.8, max_new_tokens: 6}}}]"]
    local = run_pipeline(
        load_pipeline(path, judge),
        RunOptions(out_dir=project / "local", limit=4),
        teacher=tiny_teacher,
        log=lambda _: None,
    )
    overrides = [
        *judge,
        "teacher.backend=openai",
        "teacher.model=tiny",
        f"teacher.openai.base_url={server}",
        "teacher.openai.score=prompt_logprobs",
    ]
    remote = run_pipeline(
        load_pipeline(path, overrides), RunOptions(out_dir=project / "remote", limit=4), log=lambda _: None
    )

    def labels(out: Path) -> list[float]:
        rows = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
        rows += [json.loads(line)["record"] for line in (out / "dropped.jsonl").read_text().splitlines()]
        return [r["meta"]["preference"]["p_first"] for r in sorted(rows, key=lambda r: r["id"])]

    assert len(labels(local.out_dir)) == 4
    assert labels(remote.out_dir) == pytest.approx(labels(local.out_dir), abs=1e-4)


def test_magpie_over_http_with_a_local_tokenizer(server, project, tiny_model_dir, tiny_teacher):
    path = write_pipeline(project, tiny_model_dir)
    stages = [
        "stages=[{magpie: {num_prompts: 4, min_words: 1, sampling: {temperature: 1.0, max_new_tokens: 8}}}]",
        "seeds=null",
    ]
    local = run_pipeline(
        load_pipeline(path, stages), RunOptions(out_dir=project / "local"), teacher=tiny_teacher, log=lambda _: None
    )
    overrides = [
        *stages,
        "teacher.backend=openai",
        "teacher.model=tiny",
        f"teacher.openai.base_url={server}",
        f"teacher.openai.tokenizer={tiny_model_dir}",
    ]
    remote = run_pipeline(load_pipeline(path, overrides), RunOptions(out_dir=project / "remote"), log=lambda _: None)
    for name in ("trace.jsonl", "dropped.jsonl"):
        assert (local.out_dir / name).read_text() == (remote.out_dir / name).read_text()


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        ({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, 404, "does not exist"),
        ({"model": "tiny", "messages": {"role": "user"}}, 400, "messages must be a non-empty list"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 0}, 400, "n must be in"),
        ({"model": "tiny", "messages": [{"role": "user", "content": 5}]}, 400, "content is not text (got a number)"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400, "finite"),
        ({"model": "tiny", "messages": HI, "stream": True, "stream_options": "usage"}, 400, "stream"),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_bad_requests_get_openai_error_objects_and_the_server_keeps_serving(server, body, status, fragment):
    code, answer = _post(
        server, "/chat/completions", body if isinstance(body, bytes | dict) else json.dumps(body).encode()
    )
    assert code == status and fragment in answer["error"]["message"] and answer["error"]["type"]
    ok, _ = _post(server, "/chat/completions", {"model": "tiny", "messages": HI, "max_tokens": 2})
    assert ok == 200


def test_api_key_is_enforced(tiny_model_dir):
    args = ["--teacher", str(tiny_model_dir), "--model-name", "tiny", "--threads", "1", "--api-key", KEY]
    with serve_process(args) as url:
        code, answer = _post(url, "/chat/completions", {"model": "tiny", "messages": HI, "max_tokens": 2})
        assert code == 401 and answer["error"]["type"] == "authentication_error"
        code, _ = _post(url, "/chat/completions", {"model": "tiny", "messages": HI, "max_tokens": 2}, key=KEY)
        assert code == 200


def test_requests_that_arrive_together_are_batched_together(tiny_teacher):
    """The batcher in-process: 8 concurrent requests take fewer teacher calls, with unchanged results."""
    batcher = Batcher(tiny_teacher, max_batch=16, wait_ms=500)  # wide enough for a slow machine to gather all 8
    batcher.start()
    params = [SamplingParams(temperature=1.0, max_new_tokens=6, seed=s) for s in range(8)]
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(8)]

    async def together():
        return await asyncio.gather(*(batcher.run("chat", c, p) for c, p in zip(prompts, params, strict=True)))

    try:
        batched = asyncio.run(together())
    finally:
        batcher.stop()
    assert len(batcher.batches) < 8 and sum(batcher.batches) == 8
    alone = [tiny_teacher.generate([c], p)[0] for c, p in zip(prompts, params, strict=True)]
    assert [[c.text for c in r] for r in batched] == [[c.text for c in r] for r in alone]


# -- a server that answers like one should (guarantees) ---------------------------------------------------
LONG = "ignore " * 1500  # past the tiny model's 2048-token context window


class TestServeGuarantees:
    def test_a_prompt_beyond_the_context_window_is_a_400_in_vllms_words(self, server):
        code, answer = _post(
            server, "/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": LONG}]}
        )
        message = answer["error"]["message"]
        assert code == 400 and "maximum context length is 2048 tokens" in message and "input tokens" in message
        code, answer = _post(server, "/completions", {"model": "tiny", "prompt": LONG, "max_tokens": 2})
        assert code == 400 and "maximum context length" in answer["error"]["message"]

    def test_over_http_such_a_record_is_ledgered_as_in_process_without_retrying(
        self, server, project, tiny_model_dir, tiny_teacher
    ):
        seeds = project / "pipelines" / "seeds" / "long.jsonl"
        seeds.write_text(json.dumps({"prompt": LONG}) + "\n" + json.dumps({"prompt": "Say hello."}) + "\n")
        path = write_pipeline(project, tiny_model_dir)
        path.write_text(path.read_text().replace("seeds/red-team.jsonl", "seeds/long.jsonl"))
        local = run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "l"), tiny_teacher, log=lambda _: None)
        overrides = ["teacher.backend=openai", "teacher.model=tiny", f"teacher.openai.base_url={server}"]
        remote = run_pipeline(load_pipeline(path, overrides), RunOptions(out_dir=project / "r"), log=lambda _: None)
        drops = [json.loads((r.out_dir / "dropped.jsonl").read_text())["reason"] for r in (local, remote)]
        assert drops[0] == drops[1] and "does not fit the teacher's context window of 2048" in drops[0]
        assert "1 attempt (not retryable)" in drops[1]

    def test_a_body_beyond_the_limit_is_a_413(self, server):
        huge = {"model": "tiny", "messages": [{"role": "user", "content": "x" * (9 << 20)}]}
        code, answer = _post(server, "/chat/completions", huge)
        assert code == 413 and "larger than" in answer["error"]["message"]
        assert _post(server, "/chat/completions", {"model": "tiny", "messages": HI, "max_tokens": 2})[0] == 200

    @pytest.mark.parametrize(
        ("path", "body", "fragment"),
        [
            ("/completions", {"model": "tiny", "prompt": ""}, "prompt must not be empty"),
            ("/completions", {"model": "tiny", "prompt": ["fine", ""]}, "prompt must not be empty"),
            ("/completions", {"model": "tiny", "prompt": ["p"] * 257}, "at most 256 prompts"),
            ("/chat/completions", b'{"model": "tiny", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested deeper"),
            ("/chat/completions", b'{"model": "tiny", "x": ' + b"[" * 40 + b"]" * 40 + b"}", "nested deeper"),
            (
                "/chat/completions",
                {"model": "tiny", "messages": [{"role": "user", "content": [{"type": "text", "text": {"a": 1}}]}]},
                "its 'text' is not text",
            ),
            (
                "/chat/completions",
                {"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
                "of type 'image_url' is not supported",
            ),
        ],
    )
    def test_malformed_requests_are_400s(self, server, path, body, fragment):
        code, answer = _post(server, path, body)
        assert code == 400 and fragment in answer["error"]["message"], answer

    @pytest.mark.parametrize(
        ("path", "raw", "param"),
        [  # a lone surrogate escape is valid JSON but not Unicode: the tokenizer can't take it (was a 500)
            (
                "/chat/completions",
                b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800x"}]}',
                "messages[0].content",
            ),
            (
                "/chat/completions",
                b'{"model": "tiny", "messages": [{"role": "user", "content": [{"type": "text", '
                b'"text": "a\\udfffb"}]}]}',
                "messages[0].content[0].text",
            ),
            ("/completions", b'{"model": "tiny", "prompt": "\\udc00"}', "prompt"),
            ("/completions", b'{"model": "tiny", "prompt": ["fine", "\\ud800"]}', "prompt[1]"),
            (
                "/chat/completions",
                b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud83d"]}',
                "stop[0]",
            ),
            # an integer of thousands of digits: Python refuses to convert it (was a 500)
            (
                "/chat/completions",
                b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": '
                + b"9" * 5000
                + b"}",
                "max_tokens",
            ),
            ("/completions", b'{"model": "tiny", "prompt": "hi", "seed": -' + b"1" * 200 + b"}", "seed"),
        ],
    )
    def test_values_python_cannot_take_are_400s_naming_the_parameter(self, server, path, raw, param):
        code, answer = _post(server, path, raw)
        assert code == 400, answer
        assert answer["error"]["param"] == param and answer["error"]["message"].startswith(param + ":"), answer

    def test_streaming_gives_the_same_answer_as_one_response(self, server):
        import openai

        client = openai.OpenAI(base_url=server, api_key="x")
        request = {"model": "tiny", "messages": HI, "max_tokens": 10, "seed": 4, "n": 2, "temperature": 1.0}
        whole = client.chat.completions.create(**request)
        chunks = list(client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
        texts = {0: "", 1: ""}
        for chunk in chunks:
            for choice in chunk.choices:
                texts[choice.index] += choice.delta.content or ""
        assert [texts[0], texts[1]] == [c.message.content for c in whole.choices]
        assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
        plain = client.completions.create(model="tiny", prompt="Once", max_tokens=6, seed=2)
        streamed = "".join(
            c.choices[0].text
            for c in client.completions.create(model="tiny", prompt="Once", max_tokens=6, seed=2, stream=True)
        )
        assert streamed == plain.choices[0].text


@pytest.mark.parametrize("continuous", [True, False])
def test_work_whose_client_has_gone_is_not_run(tiny_model_dir, continuous):
    """200 prompts queued by one /v1/completions request; the client leaves: the rest are never generated (by the
    continuous-batching decoder, which drops the cancelled rows, or by the batcher of a teacher without one)."""
    import socket
    import threading
    import time

    import uvicorn

    from synthforge.serve.app import ServeConfig, build_app
    from synthforge.teachers.backends.transformers import load_teacher
    from tests.fault_server import free_port

    teacher = load_teacher(str(tiny_model_dir), batch_size=2, device="cpu")
    if not continuous:
        teacher.decoder = None
        teacher.capabilities = type(teacher).capabilities
    app = build_app(teacher, ServeConfig("tiny", max_batch=2, wait_ms=0))

    def work_done() -> int:
        return teacher.decoder.steps if continuous else sum(app.state.batcher.batches)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 60, "the server to start")
    try:
        body = json.dumps({"model": "tiny", "prompt": [f"p{i}" for i in range(200)], "max_tokens": 32}).encode()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            sock.sendall(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            time.sleep(0.5)  # a few batches start
        time.sleep(1.0)
        done = work_done()
        time.sleep(1.0)
        assert 0 < done < (200 if not continuous else 200 * 32 // 2) and work_done() == done  # nothing more ran
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_two_teacher_pipeline_in_process_and_behind_serve_runs_end_to_end(server, tiny_model_dir, project):
    """The default teacher in this process, a named one behind `synthforge serve`: a pool over both, rated by the
    in-process one (log-probabilities), paired by score."""
    path = project / "pipelines" / "two.yaml"
    path.write_text(
        f"""name: two
seed: 3
teacher: {{model: "{tiny_model_dir}", batch_size: 4, device: cpu}}
teachers:
  remote: {{backend: openai, model: tiny, openai: {{base_url: "{server}"}}}}
seeds: {{path: seeds/tasks.jsonl, field: instruction}}
stages:
  - pool:
      members:
        - {{name: here, sampling: {{temperature: 1.0, max_new_tokens: 8}}}}
        - {{name: there, teacher: remote, sampling: {{temperature: 1.0, max_new_tokens: 8}}}}
  - rate: {{scoring: logprobs}}
  - pair_by_score: {{min_margin: 0.0}}
export: {{sft: true, dpo: true}}
paths: {{prompts: ../prompts, constitutions: ../constitutions}}
""",
        encoding="utf-8",
    )
    result = run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "two", limit=3), log=lambda _: None)
    records = [json.loads(x) for x in (result.out_dir / "trace.jsonl").read_text().splitlines()]
    dropped = [json.loads(x) for x in (result.out_dir / "dropped.jsonl").read_text().splitlines()]
    everything = records + [d["record"] for d in dropped]
    assert len(everything) == 3
    for record in everything:
        assert [(c["member"], c["teacher"]) for c in record["candidates"]] == [("here", "default"), ("there", "remote")]
        assert all(len(c["scores"]) == 4 for c in record["candidates"])
    assert result.manifest["teachers"]["remote"]["identity"]["backend"] == "openai"
    assert result.manifest["teacher"]["backend"] == "transformers"
    assert len(records) == result.manifest["counts"]["dpo"]  # every kept record is a pair


def test_eval_compare_answers_with_a_model_behind_serve_by_reference(server, tiny_model_dir, project):
    """`eval compare --models DIR,openai:tiny@URL`: the answer stage takes any teacher reference, not only a local
    model; the label of a served model is its name."""
    from synthforge.eval.compare import CompareOptions, compare_overrides, labels_for
    from tests.eval.test_compare import DEFAULT_PIPELINE, LengthJudge

    models = [str(tiny_model_dir), f"openai:tiny@{server}"]
    assert labels_for(models) == [tiny_model_dir.name, "tiny"]
    options = CompareOptions(models=models, pipeline=project / DEFAULT_PIPELINE, principles=1, max_new_tokens=8)
    spec = load_pipeline(options.pipeline, compare_overrides(options))
    result = run_pipeline(spec, RunOptions(out_dir=project / "cmp", limit=2), teacher=LengthJudge(), log=lambda _: None)
    records = [json.loads(x) for x in (result.out_dir / "trace.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(set(r["meta"]["answers"]) == {tiny_model_dir.name, "tiny"} for r in records)
    served = next(s for s in result.manifest["stages"] if s["name"] == "answer-tiny")
    assert served["config"]["model"] == f"openai:tiny@{server}"
