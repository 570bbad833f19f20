"""A remote teacher's missing abilities are found before any stage's work is sent: one tiny request per need
(against a stand-in that, like `transformers serve`, accepts `logprobs` and `n` and ignores them), a line for each
fallback taken, and nothing at all sent by a fully cached rerun."""

from __future__ import annotations

import json

from tests.conftest import run_cli
from tests.fault_server import FaultServer


def _generate(pipeline, server, out, capsys, *extra):
    args = ["generate", pipeline, "--teacher", f"openai:m@{server.url}", "--out", out, "--limit", "2", "--no-progress"]
    return run_cli([*args, *extra], capsys)


def test_a_judge_without_logprobs_stops_before_any_stage_sends_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with FaultServer() as server:  # answers every request, ignoring logprobs
        code, _, err = _generate("cai-harmless", server, tmp_path / "run", capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "returned no logprobs" in errors[0], err
    assert len(server.requests) == 1 and server.requests[0]["logprobs"] is True  # the probe, and nothing else
    assert server.requests[0]["max_tokens"] <= 8
    written = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.jsonl"))
    assert written and all(name.startswith("00-minhash_dedup-") for name in written)  # the one stage with no teacher


def test_a_fully_cached_rerun_opens_no_connection(tmp_path, monkeypatch, capsys, project):
    monkeypatch.chdir(project)
    pipeline = project / "pipelines" / "answer.yaml"
    pipeline.write_text(
        "name: answer\nseed: 1\nteacher: {model: m}\nseeds: {path: seeds/red-team.jsonl}\n"
        "stages:\n  - respond: {sampling: {max_new_tokens: 8}}\n"
    )
    with FaultServer(models=["m"]) as server:
        assert _generate(pipeline, server, tmp_path / "run", capsys)[0] == 0
        sent = len(server.requests)
        assert sent == 2
        server.gets.clear()
        code, _, err = _generate(pipeline, server, tmp_path / "run", capsys)
        assert code == 0, err
        assert len(server.requests) == sent and server.gets == []  # no request, not even GET /models


def test_a_server_that_ignores_a_schema_is_said_at_the_start_and_answers_are_validated(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "label.j2").write_text("Label: {{ prompt }}\n")
    (tmp_path / "seeds.jsonl").write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(2)))
    schema = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}}, "required": ["label"]}
    pipeline = tmp_path / "label.yaml"
    pipeline.write_text(
        "name: label\nteacher: {model: m}\nseeds: {path: seeds.jsonl}\n"
        f"stages:\n  - generate: {json.dumps({'template': 'label', 'field': 'x', 'json_schema': schema})}\n"
        "export: {sft: false, dpo: false}\npaths: {prompts: prompts}\n"
    )
    answer = {"label": "a"}
    with FaultServer(lambda i, body: (200, {}, _completion(body, json.dumps(answer) if i else "not json"))) as server:
        code, _, err = _generate(pipeline, server, tmp_path / "run", capsys)
    assert code == 0, err
    assert "doesn't constrain answers to a schema" in err and "validated" in err
    assert "response_format" in server.requests[0] and server.requests[0]["max_tokens"] <= 16  # the probe first
    assert len(server.requests) == 3  # the probe, then one request per record
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["counts"]["dropped"] == 0


def _completion(body, text):
    from tests.fault_server import chat_completion

    return chat_completion(body, text)
