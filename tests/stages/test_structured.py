"""User-defined generation columns and structured output: a `generate` stage over seed columns, JSON Schemas
decoded under a grammar (llguidance) in-process and through `synthforge serve`, `response_format` over HTTP,
validation with retries and a ledger, table exports, and one line for every bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest

from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.schemas import parse_json, validation_errors
from synthforge.settings import config_to_dict
from synthforge.teachers.base import STRUCTURED, SamplingParams
from synthforge.teachers.scripted import ScriptedTeacher
from tests.conftest import run_cli
from tests.fault_server import FaultServer, chat_completion, serve_process

# Bounded everywhere (an enum, a small integer, an array of an enum, a nested boolean): a random tiny model
# finishes it within the token budget.
SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["harmful", "benign"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 1, "maxItems": 2},
        "detail": {
            "type": "object",
            "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"],
            "additionalProperties": False,
        },
    },
    "required": ["label", "score", "tags", "detail"],
    "additionalProperties": False,
}
CONVS = [[{"role": "user", "content": f"Label request {i}."}] for i in range(6)]
LABEL_STAGE = {
    "template": "label",
    "field": "annotation",
    "json_schema": SCHEMA,
    "sampling": {"temperature": 1.0, "max_new_tokens": 80},
}


def _pipeline(root: Path, teacher: str, generate: dict, export: str = "{sft: false, dpo: false}", **seeds) -> Path:
    (root / "prompts").mkdir(exist_ok=True)
    (root / "prompts" / "label.j2").write_text("Label this ({{ kind }}): {{ prompt }}\n")
    rows = [{"prompt": f"How do I do thing {i}?", "kind": "benign" if i % 2 else "adversarial"} for i in range(5)]
    (root / "seeds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    seeds_spec = {"path": "seeds.jsonl", "columns": ["kind"], **seeds}
    path = root / "label.yaml"
    path.write_text(
        f"name: label\nseed: 5\nteacher: {teacher}\nseeds: {json.dumps(seeds_spec)}\n"
        f"stages:\n  - generate: {json.dumps(generate)}\nexport: {export}\n"
        "paths: {prompts: prompts, constitutions: constitutions}\n"
    )
    return path


# -- the protocol: a schema is optional data that changes no cache key unless used ----------------------------
def test_a_schema_is_part_of_a_requests_settings_only_when_set():
    from synthforge.stages.respond import RespondConfig

    assert "json_schema" not in SamplingParams().to_dict()
    assert "json_schema" not in config_to_dict(RespondConfig())["sampling"]  # fingerprints of other stages stay
    assert SamplingParams(json_schema=SCHEMA).to_dict()["json_schema"] == SCHEMA
    hash(SamplingParams(json_schema=SCHEMA))  # still usable as a key (the schema is not hashed)


# -- constrained decoding in-process ---------------------------------------------------------------------------
def test_constrained_answers_follow_the_schema_and_depend_only_on_their_seed(tiny_teacher):
    assert STRUCTURED in tiny_teacher.capabilities
    params = [SamplingParams(temperature=1.0, max_new_tokens=80, seed=i, json_schema=SCHEMA) for i in range(6)]
    together = tiny_teacher.generate(CONVS, params)
    for answer, *_ in together:
        value, problem = parse_json(answer.text)
        assert problem is None and validation_errors(SCHEMA, value) == [], answer.text
        assert answer.finish_reason == "stop"
    alone = tiny_teacher.generate([CONVS[3]], params[3])
    assert alone[0] == together[3]  # a row's grammar and noise are its own: batch neighbours change nothing
    free = tiny_teacher.generate(
        CONVS[:2], [SamplingParams(temperature=1.0, max_new_tokens=40, seed=i) for i in (0, 1)]
    )
    assert all(parse_json(c[0].text)[1] is not None for c in free)  # the tiny model alone writes no JSON


# -- the generate stage ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_generate_column_with_a_schema_becomes_fields_and_a_table_datasets_loads(tmp_path, tiny_model_dir, fmt):
    import datasets

    generate = LABEL_STAGE
    export = f"{{sft: false, dpo: false, table: {{fields: [prompt, kind, label, score, tags, detail], format: {fmt}}}}}"
    path = _pipeline(tmp_path, json.dumps({"model": str(tiny_model_dir), "batch_size": 4}), generate, export)
    result = run_pipeline(load_pipeline(path), RunOptions(out_dir=tmp_path / "out"))
    table = datasets.load_dataset(str(result.out_dir), "table", split="train")
    assert len(table) == 5 and table.column_names == ["id", "prompt", "kind", "label", "score", "tags", "detail"]
    for row in table:
        assert validation_errors(SCHEMA, {k: row[k] for k in ("label", "score", "tags", "detail")}) == []
    assert [r["kind"] for r in table] == ["adversarial", "benign", "adversarial", "benign", "adversarial"]
    manifest = result.manifest
    assert f"table.{fmt}" in manifest["outputs"] and manifest["counts"]["table"] == 5
    counters = manifest["stages"][0]["metrics"]["counters"]
    assert counters["first_tries"] == 5 and counters["valid_first_try"] == 5
    trace = [json.loads(line) for line in (result.out_dir / "trace.jsonl").read_text().splitlines()]
    assert trace[0]["fields"]["annotation"]["label"] == trace[0]["fields"]["label"]  # the object and its fields


def test_invalid_answers_are_asked_again_with_a_new_seed_then_ledgered(tmp_path):
    seeds_seen: list[int] = []
    answers = iter(
        [
            '{"label": "maybe"}',
            "not json at all",
            '{"label": "benign", "score": 3, "tags": ["a"], "detail": {"ok": true}}',
        ]
        + ['```json\n{"label": 1}\n```'] * 20
    )

    class Recording(ScriptedTeacher):
        def generate(self, conversations, params):
            seeds_seen.extend(p.seed for p in params)
            return super().generate(conversations, params)

    teacher = Recording(lambda conv: next(answers), capabilities=frozenset({STRUCTURED}))
    generate = {"template": "label", "field": "annotation", "json_schema": SCHEMA, "retries": 2}
    path = _pipeline(tmp_path, "{model: embedded}", generate)
    result = run_pipeline(load_pipeline(path), RunOptions(out_dir=tmp_path / "out", limit=2), teacher=teacher)
    # Record 1: invalid, invalid, valid. Record 2 (asked with record 1's retries): never valid, ledgered.
    assert result.manifest["counts"]["dropped"] == 1
    dropped = json.loads((result.out_dir / "dropped.jsonl").read_text())
    assert dropped["reason"].startswith("no valid answer in 3 attempt(s): answer does not match the schema: at $: ")
    assert "'score' is a required property" in dropped["reason"]
    assert len(set(seeds_seen)) == len(seeds_seen)  # every retry has a seed of its own
    counters = result.manifest["stages"][0]["metrics"]["counters"]
    assert counters["first_tries"] == 2 and counters["valid_first_try"] == 0
    assert any("0.0% of first answers were valid" in note for note in result.manifest["stages"][0]["notes"])


def test_a_batch_retried_after_a_teacher_error_starts_from_its_own_records(tmp_path):
    """The first answer is invalid, then the teacher fails: the engine retries the batch, whose records must not
    carry the failed attempt's trace (the stage works on copies)."""
    from synthforge.errors import TeacherError

    good = '{"label": "benign", "score": 3, "tags": ["a"], "detail": {"ok": true}}'
    answers = iter(["not json", good])
    failed = []

    def fail(conversations):
        if not failed and teacher.calls == 1:  # the retry of the first attempt: the server is down once
            failed.append(True)
            return TeacherError("server down")
        return None

    teacher = ScriptedTeacher(lambda conv: next(answers) if teacher.calls < 2 else good, fail=fail)
    teacher.capabilities = frozenset({STRUCTURED})
    generate = {"template": "label", "field": "annotation", "json_schema": SCHEMA, "retries": 1}
    path = _pipeline(tmp_path, "{model: embedded}", generate)
    result = run_pipeline(load_pipeline(path), RunOptions(out_dir=tmp_path / "out", limit=1), teacher=teacher)
    record = json.loads((result.out_dir / "trace.jsonl").read_text())
    assert failed and [s["attempt"] for s in record["steps"]] == [0]  # the retried batch, answered at once


def test_without_a_schema_the_column_is_the_answers_text(tmp_path):
    teacher = ScriptedTeacher(lambda conv: "  a short label  ")
    path = _pipeline(
        tmp_path,
        "{model: embedded}",
        {"template": "label", "field": "difficulty"},
        "{sft: false, dpo: false, table: {fields: [prompt, difficulty]}}",
    )
    result = run_pipeline(load_pipeline(path), RunOptions(out_dir=tmp_path / "out", limit=2), teacher=teacher)
    rows = [json.loads(line) for line in (result.out_dir / "table.jsonl").read_text().splitlines()]
    assert [r["difficulty"] for r in rows] == ["a short label", "a short label"]
    assert teacher.seen[0][-1]["content"].startswith("Label this (adversarial): How do I do thing 0?")


# -- bad input: one line, exit 2, before any model loads -------------------------------------------------------
@pytest.mark.parametrize(
    ("generate", "export", "message"),
    [
        ({"template": "label", "field": "x", "json_schema": {"type": "objekt"}}, None, "not a valid JSON Schema"),
        (
            {"template": "label", "field": "x", "json_schema": {"type": "string", "pattern": "(?<=a)b"}},
            None,
            "the grammar engine can't compile this schema",
        ),
        ({"template": "label", "field": "x", "json_schema": "schemas/missing.json"}, None, "schema file"),
        ({"template": "uses-missing", "field": "x"}, None, "reads 'difficulty', which nothing before it writes"),
        ({"template": "label", "field": "prompt"}, None, "is a built-in field"),
        ({"template": "label", "field": "x"}, "{table: {fields: [nope]}}", "'nope' is written by no stage"),
        # $ref loops that never match a value: refused (llguidance compiles them into a grammar matching nothing)
        *[
            ({"template": "label", "field": "x", "json_schema": loop}, None, "a $ref loop that never matches a value")
            for loop in (
                {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}},
                {"$ref": "#"},
                {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}}},
                {"type": "object", "properties": {"p": {"$ref": "#/$defs/x"}}, "$defs": {"x": {"$ref": "#/$defs/x"}}},
            )
        ],
        # a schema's properties become fields: none may replace a column the record already has
        *[
            (
                {"template": "label", "field": "x", "json_schema": {"type": "object", "properties": {name: {}}}},
                None,
                f"property '{name}' would replace the record's own '{name}' column",
            )
            for name in ("id", "prompt", "response", "meta", "rejected", "system")
        ],
        ({"template": "label", "field": "kind"}, None, "writes 'kind', which the seeds (seeds.columns) already"),
        (
            {"template": "label", "field": "x", "json_schema": {"type": "object", "properties": {"kind": {}}}},
            None,
            "writes 'kind', which the seeds",
        ),
    ],
)
def test_bad_schemas_templates_and_columns_are_one_line_before_any_model_loads(
    tmp_path, monkeypatch, capsys, generate, export, message
):
    monkeypatch.chdir(tmp_path)
    path = _pipeline(tmp_path, "{model: ./no-such-model}", generate, export or "{sft: false, dpo: false}")
    (tmp_path / "prompts" / "uses-missing.j2").write_text("Rate {{ prompt }} given {{ difficulty }}\n")
    code, _, err = run_cli(["generate", str(path), "--dry-run"], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


# -- over HTTP ---------------------------------------------------------------------------------------------------
def test_recursive_schemas_that_consume_input_stay_valid_and_flatten_false_keeps_any_property_name(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    tree = {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}, "maxItems": 2}}}
    escape = {"anyOf": [{"$ref": "#"}, {"type": "string", "maxLength": 4}]}
    unused = {"type": "string", "maxLength": 3, "$defs": {"never": {"$ref": "#/$defs/never"}}}
    for schema in (tree, escape, unused):
        path = _pipeline(
            tmp_path, "{model: ./no-such-model}", {"template": "label", "field": "x", "json_schema": schema}
        )
        assert run_cli(["generate", str(path), "--dry-run"], capsys)[0] == 0
    inner = {"type": "object", "properties": {"id": {"type": "string"}}}
    path = _pipeline(
        tmp_path,
        "{model: ./no-such-model}",
        {"template": "label", "field": "x", "json_schema": inner, "flatten": False},
    )
    assert run_cli(["generate", str(path), "--dry-run"], capsys)[0] == 0


def test_a_table_column_is_the_records_own_even_where_a_field_has_its_name():
    from synthforge.engine.exporters import table_rows
    from synthforge.records import Record

    record = Record(id="r1", prompt="the seed prompt", response="an answer", fields={"prompt": "As a", "x": 1})
    assert table_rows([record], ["prompt", "response", "x"]) == [
        {"id": "r1", "prompt": "the seed prompt", "response": "an answer", "x": 1}
    ]


def test_the_openai_backend_asks_for_the_schema_and_validates_a_server_that_ignores_it(tmp_path):
    good = '{"label": "benign", "score": 2, "tags": ["b"], "detail": {"ok": false}}'

    asked: dict[str, int] = {}

    def script(i, body):
        prompt = body["messages"][-1]["content"]
        asked[prompt] = asked.get(prompt, 0) + 1
        text = good if asked[prompt] > 1 else "Sure! Here is my answer."  # the first answer ignores response_format
        return 200, {}, chat_completion(body, text)

    generate = {"template": "label", "field": "annotation", "json_schema": SCHEMA, "retries": 1}
    with FaultServer(script) as server:
        teacher = json.dumps({"backend": "openai", "model": "m", "openai": {"base_url": server.url}})
        path = _pipeline(tmp_path, teacher, generate, "{sft: false, dpo: false, table: {fields: [label]}}")
        result = run_pipeline(load_pipeline(path), RunOptions(out_dir=tmp_path / "out", limit=2))
    probe, *requests = server.requests  # first, one tiny request: does the server constrain to a schema?
    assert probe["max_tokens"] <= 16 and probe["response_format"]["type"] == "json_schema"
    formats = [r["response_format"] for r in requests]
    assert formats[0] == {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}
    assert len(requests) == 4  # each record: an answer that wasn't JSON, then a valid one
    assert result.manifest["counts"]["table"] == 2


def test_serve_constrains_to_response_format_and_matches_in_process(tmp_path, tiny_model_dir, tiny_teacher):
    import openai
    import pydantic

    generate = LABEL_STAGE
    export = "{sft: false, dpo: false, table: {fields: [label, score, tags, detail]}}"
    local = _pipeline(tmp_path, json.dumps({"model": str(tiny_model_dir)}), generate, export)
    here = run_pipeline(load_pipeline(local), RunOptions(out_dir=tmp_path / "here"), teacher=tiny_teacher)

    class Label(pydantic.BaseModel):
        label: Literal["harmful", "benign"]
        confident: bool

    with serve_process(["--teacher", str(tiny_model_dir), "--model-name", "tiny", "--threads", "1"]) as url:
        teacher = json.dumps({"backend": "openai", "model": "tiny", "openai": {"base_url": url}})
        (tmp_path / "remote").mkdir()
        path = _pipeline(tmp_path / "remote", teacher, generate, export)
        there = run_pipeline(load_pipeline(path), RunOptions(out_dir=tmp_path / "there"))
        client = openai.OpenAI(base_url=url, api_key="unused")
        parsed = client.chat.completions.parse(
            model="tiny",
            messages=[{"role": "user", "content": "Label: hi"}],
            response_format=Label,
            max_tokens=60,
            seed=3,
        )
        bad = client.with_options(max_retries=0).chat.completions.create
        for schema, match in (
            ({"type": "string", "pattern": "(?<=a)b"}, "grammar engine|response_format"),
            ({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}, "a \\$ref loop"),  # was 200 with ""
        ):
            with pytest.raises(openai.BadRequestError, match=match):
                bad(
                    model="tiny",
                    messages=[{"role": "user", "content": "x"}],
                    response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
                )
    assert (here.out_dir / "table.jsonl").read_bytes() == (there.out_dir / "table.jsonl").read_bytes()
    assert isinstance(parsed.choices[0].message.parsed, Label)


def test_vllm_gets_its_structured_outputs_parameter():
    """vLLM can't be installed here: the translation to its SamplingParams keyword is what is tested."""
    from synthforge.teachers.backends.vllm import sampling_kwargs

    assert sampling_kwargs(SamplingParams(json_schema=SCHEMA))["structured_outputs"] == {"json": SCHEMA}
    assert "structured_outputs" not in sampling_kwargs(SamplingParams())


def test_completion_text_of_a_fenced_answer_parses():
    assert parse_json('Here:\n```json\n{"a": [1, 2]}\n```')[0] == {"a": [1, 2]}
    value, problem = parse_json("no braces here")
    assert value is None and problem.startswith("answer is not JSON")
