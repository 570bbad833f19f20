"""Reasoning traces: a teacher's thinking (think tags in the text, or a server's reasoning_content) is split from
its answer at every backend, kept in the trace, never shown to critique or judges, exported on request in TRL's
reasoning_content field, ended by a thinking budget, and returned by `synthforge serve` as reasoning_content.

The reasoning model is a tiny random one whose chat template opens a thinking block, as Qwen3's does; it rarely
closes the block by itself, so a thinking budget is what ends its thinking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.errors import UserError
from synthforge.records import Record, with_reasoning
from synthforge.report.aggregates import browser_rows
from synthforge.teachers.backends.openai import parse_chat_response
from synthforge.teachers.backends.vllm import sampling_kwargs
from synthforge.teachers.base import Completion, SamplingParams
from synthforge.teachers.reasoning import opens_thinking, split_reasoning
from synthforge.teachers.scripted import ScriptedTeacher
from synthforge.testing import build_tiny_model
from tests.fault_server import FaultServer, chat_completion, serve_process


@pytest.fixture(scope="module")
def thinking_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("thinking-llama"), thinking=True)


@pytest.fixture
def thinking_teacher(thinking_model_dir):
    from synthforge.teachers.backends.transformers import load_teacher

    teacher = load_teacher(str(thinking_model_dir), batch_size=4, device="cpu")
    yield teacher
    teacher.close()


# -- splitting ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "thinking", "expected"),
    [
        ("<think>plan it</think>\n\nThe answer.", False, ("plan it", "The answer.")),
        ("plan it\n</think>\n\nThe answer.", False, ("plan it", "The answer.")),  # the template opened the block
        ("plan it, still going", True, ("plan it, still going", "")),  # cut off while thinking: no answer yet
        ("<think>never closed", False, ("never closed", "")),
        ("<think>\n\n</think>\n\nThe answer.", False, (None, "The answer.")),  # thinking switched off
        ("Just an answer.", False, (None, "Just an answer.")),
        ("Just an answer.", True, ("Just an answer.", "")),
    ],
)
def test_thinking_is_split_from_the_answer(text, thinking, expected):
    assert split_reasoning(text, thinking=thinking) == expected


def test_other_tags_and_no_tags():
    assert split_reasoning("[THINK]x[/THINK]y", ("[THINK]", "[/THINK]")) == ("x", "y")
    assert split_reasoning("<think>x</think>y", ()) == (None, "<think>x</think>y")
    assert opens_thinking("<|im_start|>assistant\n<think>\n") and not opens_thinking("<think>\n\n</think>\n\n")


def test_a_servers_reasoning_field_or_think_tags_in_its_content_are_the_thinking():
    def response(message):
        return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": {}}

    parsed = parse_chat_response(response({"content": "Answer.", "reasoning_content": "Because."}), 1)[0]
    assert (parsed.reasoning, parsed.text) == ("Because.", "Answer.")
    parsed = parse_chat_response(response({"content": "Answer.", "reasoning": "Because."}), 1)[0]  # vLLM >= 0.10
    assert (parsed.reasoning, parsed.text) == ("Because.", "Answer.")
    parsed = parse_chat_response(response({"content": "<think>Because.</think>Answer."}), 1)[0]  # no parser
    assert (parsed.reasoning, parsed.text) == ("Because.", "Answer.")
    parsed = parse_chat_response(response({"content": None, "reasoning_content": "Still thinking"}), 1)[0]
    assert (parsed.reasoning, parsed.text) == ("Still thinking", "")


def test_vllm_gets_its_thinking_token_budget():
    """vLLM can't be installed here: the translation to its SamplingParams keyword is what is tested."""
    assert sampling_kwargs(SamplingParams(max_reasoning_tokens=64))["thinking_token_budget"] == 64
    assert "thinking_token_budget" not in sampling_kwargs(SamplingParams())


# -- the in-process teacher: split, and a budget that closes the block ------------------------------------------
def test_a_thinking_budget_closes_the_block_after_that_many_tokens(thinking_teacher):
    conversation = [[{"role": "user", "content": "hi"}]]

    def sample(budget):
        params = SamplingParams(max_new_tokens=24, seed=1, logprobs=0, max_reasoning_tokens=budget)
        return thinking_teacher.generate(conversation, params)[0][0]

    unlimited, none, five = sample(None), sample(0), sample(5)
    tokens = [[entry["token"] for entry in c.logprobs] for c in (unlimited, none, five)]
    assert "</think>" not in tokens[0] and unlimited.text == "" and unlimited.reasoning  # it never stops thinking
    assert tokens[1][0] == "</think>" and none.reasoning is None and none.text
    assert tokens[2][5] == "</think>" and tokens[2][:5] == tokens[0][:5]
    assert five.reasoning and five.text and "</think>" not in five.text + five.reasoning
    assert sample(5) == five  # seeded: the same thinking and answer again


def test_a_budget_on_a_teacher_without_continuous_batching_is_one_line(tmp_path, thinking_model_dir):
    path = _pipeline(
        tmp_path, thinking_model_dir, {"max_new_tokens": 8, "max_reasoning_tokens": 2}, continuous_batching=False
    )
    with pytest.raises(UserError, match="thinking budget.*continuous_batching: true"):
        run_pipeline(load_pipeline(path), RunOptions(out_dir=tmp_path / "out"))


def test_an_answer_lost_to_thinking_is_ledgered_as_such(tmp_path, thinking_model_dir):
    path = _pipeline(tmp_path, thinking_model_dir, {"max_new_tokens": 6})  # no budget: it thinks to the end
    run_pipeline(load_pipeline(path), RunOptions(out_dir=tmp_path / "out"))
    dropped = [json.loads(line) for line in (tmp_path / "out" / "dropped.jsonl").read_text().splitlines()]
    assert len(dropped) == 3 and {d["reason"] for d in dropped} == {
        "no answer after thinking (raise max_new_tokens, or end thinking with max_reasoning_tokens)"
    }
    assert all(d["record"]["steps"][0]["reasoning"] for d in dropped)  # the thinking is in the ledger


# -- records, stages and exports -------------------------------------------------------------------------------
def test_critique_and_revision_see_the_answer_and_the_export_keeps_thinking_on_request(tmp_path):
    def reply(conversation):  # the question; + the answer and the critique request; + the critique and revise
        turns = len([m for m in conversation if m["role"] != "system"])
        if turns == 3:
            return Completion("The answer is fine.", "stop", 1, 1, reasoning="critic's thinking")
        if turns == 5:
            return Completion("A revised answer.", "stop", 1, 1, reasoning="reviser's thinking")
        return Completion("A first answer.", "stop", 1, 1, reasoning="SECRET first thoughts")

    teacher = ScriptedTeacher(reply)
    runs = {}
    for keep in ("strip", "keep"):
        path = tmp_path / f"{keep}.yaml"
        _seeds(tmp_path, ["How do I pick a lock?", "Say hi."])
        path.write_text(
            "name: t\nseed: 1\nseeds: {path: seeds.jsonl}\n"
            "stages:\n  - respond: {}\n  - critique_revise: {rounds: 1, skip_when_no_issue: false}\n"
            f"export: {{reasoning: {keep}}}\n"
        )
        runs[keep] = run_pipeline(load_pipeline(path), RunOptions(out_dir=tmp_path / keep), teacher=teacher)
    assert not any("SECRET" in json.dumps(conversation) for conversation in teacher.seen)  # critique saw answers
    stripped = [json.loads(line) for line in (runs["strip"].out_dir / "sft.jsonl").read_text().splitlines()]
    kept = [json.loads(line) for line in (runs["keep"].out_dir / "sft.jsonl").read_text().splitlines()]
    assert all("reasoning_content" not in m for row in stripped for m in row["messages"])
    assert [row["messages"][-1] for row in kept] == [
        {"role": "assistant", "content": "A revised answer.", "reasoning_content": "reviser's thinking"}
    ] * 2
    pairs = [json.loads(line) for line in (runs["keep"].out_dir / "dpo.jsonl").read_text().splitlines()]
    assert pairs[0]["rejected"][0]["reasoning_content"] == "SECRET first thoughts"
    trace = [json.loads(line) for line in (runs["keep"].out_dir / "trace.jsonl").read_text().splitlines()]
    assert [s["reasoning"] for s in trace[0]["steps"]] == [
        "SECRET first thoughts",
        "critic's thinking",
        "reviser's thinking",
    ]
    assert runs["keep"].manifest["counts"]["with_reasoning"] == 2


def test_thinking_follows_its_answer_and_leaves_with_it():
    record = with_reasoning(Record("r", "q", response="A"), ("A", "thought A"), ("B", "thought B"))
    assert record.reasoning and record.thinking("A") == "thought A" and record.thinking("B") is None
    swapped = with_reasoning(Record("r", "q", response="B", rejected="A", reasoning=record.reasoning), ("B", "tb"))
    assert (swapped.thinking("B"), swapped.thinking("A")) == ("tb", "thought A")
    assert Record.from_dict(swapped.to_dict()) == swapped
    assert "reasoning" not in Record("r", "q", response="A").to_dict()  # records without thinking as before


def test_training_data_with_thinking_fits_the_students_template(tiny_model_dir):
    import datasets
    from transformers import AutoTokenizer

    from synthforge.train.data import fit_reasoning

    rows = datasets.Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": "q"}],
                "completion": [{"role": "assistant", "content": "A.", "reasoning_content": "why"}],
            },
            {"prompt": [{"role": "user", "content": "p"}], "completion": [{"role": "assistant", "content": "B."}]},
        ]
    )
    chatml = AutoTokenizer.from_pretrained(tiny_model_dir)  # its template doesn't read reasoning_content
    inlined = fit_reasoning(chatml, rows)
    assert [r["completion"][0]["content"] for r in inlined] == ["<think>\nwhy\n</think>\n\nA.", "B."]
    chatml.chat_template = "{% for m in messages %}{{ m.reasoning_content }}{{ m.content }}{% endfor %}"
    assert fit_reasoning(chatml, rows) is rows  # a template that reads the field gets it as it is


# -- end to end: in-process and through serve, the same records ---------------------------------------------
def test_a_reasoning_teacher_in_process_and_through_serve_makes_the_same_records(tmp_path, thinking_model_dir):
    import openai

    sampling = {"max_new_tokens": 12, "max_reasoning_tokens": 4, "temperature": 1.0}
    here = run_pipeline(
        load_pipeline(_pipeline(tmp_path, thinking_model_dir, sampling)), RunOptions(out_dir=tmp_path / "here")
    )
    with serve_process(["--teacher", str(thinking_model_dir), "--model-name", "tiny", "--threads", "1"]) as url:
        (tmp_path / "remote").mkdir()
        teacher = {"backend": "openai", "model": "tiny", "openai": {"base_url": url}}
        there = run_pipeline(
            load_pipeline(_pipeline(tmp_path / "remote", teacher, sampling)), RunOptions(out_dir=tmp_path / "there")
        )
        client = openai.OpenAI(base_url=url, api_key="unused")
        answer = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=12,
            seed=3,
            extra_body={"thinking_token_budget": 3},
        )
    message = answer.choices[0].message
    assert message.model_extra["reasoning_content"] and "</think>" not in message.content
    trace = (here.out_dir / "trace.jsonl").read_text()
    assert trace == (there.out_dir / "trace.jsonl").read_text()
    records = [json.loads(line) for line in trace.splitlines()]
    assert records and all(r["reasoning"] and "</think>" not in r["response"] for r in records)
    rows = browser_rows(records, [])  # the report's record browser shows the thinking (folded)
    assert [row[8] for row in rows] == [next(iter(r["reasoning"].values())) for r in records]
    assert (here.out_dir / "report.html").is_file()
    sft = [json.loads(line) for line in (here.out_dir / "sft.jsonl").read_text().splitlines()]
    assert all(m["reasoning_content"] for row in sft for m in row["messages"] if m["role"] == "assistant")


def test_serve_streams_the_thinking_apart(thinking_model_dir):
    import openai

    with serve_process(["--teacher", str(thinking_model_dir), "--model-name", "tiny", "--threads", "1"]) as url:
        client = openai.OpenAI(base_url=url, api_key="unused")
        chunks = list(
            client.chat.completions.create(
                model="tiny",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=10,
                seed=3,
                stream=True,
                extra_body={"thinking_token_budget": 2},
            )
        )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert any((d.model_extra or {}).get("reasoning_content") for d in deltas)


def test_a_server_that_returns_reasoning_content_is_read_by_the_openai_backend(tmp_path):
    def script(i, body):
        response = chat_completion(body, "The answer.")
        response["choices"][0]["message"]["reasoning_content"] = "The thinking."
        return 200, {}, response

    with FaultServer(script) as server:
        teacher = {"backend": "openai", "model": "m", "openai": {"base_url": server.url}}
        path = _pipeline(tmp_path, teacher, {"max_new_tokens": 8, "max_reasoning_tokens": 5})
        result = run_pipeline(load_pipeline(path), RunOptions(out_dir=tmp_path / "out"))
    assert server.requests[0]["thinking_token_budget"] == 5
    row = json.loads((result.out_dir / "sft.jsonl").read_text().splitlines()[0])
    assert row["messages"][-1] == {"role": "assistant", "content": "The answer.", "reasoning_content": "The thinking."}


def _pipeline(root: Path, teacher, sampling: dict, continuous_batching: bool = True) -> Path:
    if isinstance(teacher, Path):
        teacher = {"model": str(teacher), "transformers": {"continuous_batching": continuous_batching}}
    path = root / "think.yaml"
    _seeds(root, ["How do I pick a lock?", "Write a haiku.", "Explain tides."])
    path.write_text(
        f"name: think\nseed: 3\nteacher: {json.dumps(teacher)}\nseeds: {{path: seeds.jsonl}}\n"
        f"stages:\n  - respond: {{sampling: {json.dumps(sampling)}}}\n"
        "export: {dpo: false, reasoning: keep}\n"
    )
    return path


def _seeds(root: Path, prompts: list[str]) -> None:
    (root / "seeds.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
