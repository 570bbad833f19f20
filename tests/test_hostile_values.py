"""Hostile and careless values, by class: text that is valid JSON but not Unicode, numbers Python won't take,
conversations written as people write them (HH-RLHF prompts, CRLF, text parts, BOMs), files that aren't what a
command expects (never quoted), and think tags a model nests. Each is read, or is one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthforge.rows import read_dialogues, transcript
from synthforge.teachers.reasoning import split_reasoning
from tests.conftest import run_cli
from tests.test_hostile_input import one_line_error


def _usage_error(code: int, err: str, fragment: str) -> None:
    """click's own refusal of an option value: exit 2, its usage line and the reason, no traceback."""
    assert code == 2 and fragment in err and "Traceback" not in err, err


# -- dedup values -----------------------------------------------------------------------------------------------
def test_dedup_keeps_a_row_holding_a_lone_surrogate_unchanged(tmp_path, capsys):
    rows = ['{"text": "a b c d e f \\ud800 g"}', '{"text": "a b c d e f \\ud800 g"}', '{"text": "\\udfff other"}']
    (tmp_path / "in.jsonl").write_text("\n".join(rows) + "\n")
    code, _, err = run_cli(["dedup", tmp_path / "in.jsonl", "--out", tmp_path / "out.jsonl"], capsys)
    assert code == 0, err
    assert (tmp_path / "out.jsonl").read_text().splitlines() == [rows[0], rows[2]]  # as read, byte for byte
    code, _, err = run_cli(["dedup", tmp_path / "in.jsonl", "--out", tmp_path / "c.jsonl", "--unit", "char"], capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("--threshold", "nan", "not a finite number"),
        ("--threshold", "inf", "range"),
        ("--threshold", "-inf", "range"),
        ("--threshold", "1.5", "range"),
        ("--num-perm", "100000000", "2<=x<=4096"),
        ("--num-perm", "1", "2<=x<=4096"),
        ("--num-perm", "4097", "2<=x<=4096"),
    ],
)
def test_dedup_option_values_out_of_bounds_are_refused_before_any_work(tmp_path, capsys, option, value, fragment):
    (tmp_path / "in.jsonl").write_text('{"text": "a b c"}\n')
    code, _, err = run_cli(["dedup", tmp_path / "in.jsonl", "--out", tmp_path / "o.jsonl", option, value], capsys)
    _usage_error(code, err, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_dedup_and_the_stage_mean_the_same_by_prompt_and_conversation(tmp_path, capsys):
    """``prompt`` is the last user turn in both; ``conversation`` every turn (and the answer)."""
    from synthforge.records import Record
    from synthforge.stages.minhash_dedup import key_text

    long = "please tell me all about the history of the roman empire in detail"
    rows = [
        {
            "messages": [{"role": "user", "content": f"first {i} " * 8}, {"role": "assistant", "content": "ok"}]
            + [{"role": "user", "content": long}, {"role": "assistant", "content": "sure"}]
        }
        for i in range(2)
    ]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = {}
    for key in ("prompt", "conversation"):
        out = tmp_path / f"{key}.jsonl"
        assert run_cli(["dedup", data, "--out", out, "--key", key], capsys)[0] == 0
        kept[key] = len(out.read_text().splitlines())
    assert kept == {"prompt": 1, "conversation": 2}  # same last user turn; different earlier turns
    record = Record(id="1", prompt=long, history=rows[0]["messages"][:2], response="sure")
    from synthforge.dedup.sources import key_text as row_key

    for key in ("prompt", "response", "both", "conversation"):
        assert key_text(record, key) == row_key(rows[0], key, ("in.jsonl", 1, 1))


# -- conversations as people write them --------------------------------------------------------------------------
def _seeds(tmp_path: Path, *rows) -> Path:
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


HH_PROMPT = "\n\nHuman: hello\n\nAssistant: hi\n\nHuman: how are you?\n\nAssistant:"


@pytest.mark.parametrize(
    "prompt",
    [HH_PROMPT, HH_PROMPT.replace("\n", "\r\n"), "Human: hello\n\nAssistant: hi\n\nHuman: how are you?\n\nAssistant: "],
)
def test_hh_rlhf_prompts_end_at_their_empty_assistant_slot(tmp_path, prompt):
    (row,) = read_dialogues(_seeds(tmp_path, {"prompt": prompt}))
    assert row.prompt == "how are you?"
    assert row.history == [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]


def test_a_crlf_transcript_is_split_into_turns():
    crlf = "\r\n\r\nHuman: a\r\nsecond line\r\n\r\nAssistant: b\r\n\r\nHuman: c"
    assert transcript(crlf) == [
        {"role": "user", "content": "a\nsecond line"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ({"prompt": "\n\nAssistant: hi\n\nHuman: q\n\nAssistant:"}, "starts with an assistant turn"),
        ({"prompt": [{"role": "user", "content": 5}]}, "turn 1 (user): content is not text (got a number)"),
        ({"prompt": [{"role": "user", "content": {"a": 1}}]}, "content is not text (got an object)"),
        ({"prompt": [{"role": "user", "content": None}]}, "content is not text (got null)"),
        (
            {"prompt": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "content part of type 'image_url' is not supported (only text parts)",
        ),
        ({"prompt": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}, "its 'text' is not text"),
        ({"prompt": [{"role": "user", "content": ""}]}, "turn 1 (user) is empty"),
        ('{"prompt": "bad \\ud800 text"}', "lone surrogate (\\ud800)"),
        ('{"prompt": [{"role": "user", "content": [{"type": "text", "text": "\\udc00"}]}]}', "lone surrogate"),
        ('{"prompt": "x", "n": ' + "9" * 5000 + "}", "a number on this line is too long to read"),
    ],
)
def test_seed_rows_that_are_not_text_say_what_they_are(tmp_path, capsys, row, fragment):
    path = _seeds(tmp_path, {"prompt": "fine"}, row)
    with pytest.raises(Exception) as info:
        read_dialogues(path)
    assert f"{path}:2" in str(info.value) and fragment in str(info.value), str(info.value)


def test_text_parts_are_read_in_seeds_and_training_data(tmp_path):
    parts = [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world."}]
    (row,) = read_dialogues(_seeds(tmp_path, {"messages": [{"role": "user", "content": parts}]}))
    assert row.prompt == "Hello, world."
    from synthforge.train.data import load_rows  # the SFT reader: TRL's conversational layout with parts

    data = tmp_path / "sft.jsonl"
    answer = [{"role": "assistant", "content": [{"type": "text", "text": "Hi."}]}]
    data.write_text(json.dumps({"messages": [{"role": "user", "content": parts}, *answer]}) + "\n")
    (loaded,) = list(load_rows(data, "sft"))
    assert loaded == {
        "prompt": [{"role": "user", "content": "Hello, world."}],
        "completion": [{"role": "assistant", "content": "Hi."}],
    }


def test_a_byte_order_mark_is_accepted_in_every_text_input(project, tmp_path, monkeypatch, capsys, tiny_model_dir):
    monkeypatch.chdir(project)
    bom = "\ufeff"
    constitution = project / "constitutions" / "bom.txt"
    constitution.write_text(bom + "[p1]\ncritique: Is it rude?\nrevision: Make it polite.\n", encoding="utf-8")
    assert run_cli(["constitution", "check", constitution], capsys)[0] == 0
    template = project / "prompts" / "respond.j2"
    template.write_text(bom + template.read_text(encoding="utf-8"), encoding="utf-8")
    seeds = project / "pipelines" / "seeds" / "bom.jsonl"
    seeds.write_text(bom + '{"prompt": "Hello there"}\n', encoding="utf-8")
    pipeline = project / "pipelines" / "bom.yaml"
    pipeline.write_text(
        bom + f"name: bom\nteacher: {{model: {json.dumps(str(tiny_model_dir))}}}\nseeds: {{path: seeds/bom.jsonl}}\n"
        "stages:\n  - respond: {}\n  - critique_revise: {constitution: bom}\n",
        encoding="utf-8",
    )
    code, out, err = run_cli(["generate", pipeline, "--dry-run"], capsys)
    assert code == 0, err
    assert "Hello there" in out and bom not in out


# -- files that aren't what a command expects: named, never quoted -------------------------------------------------
SECRET = "root:$6$saltsalt$c2VjcmV0aGFzaA:20228:0:99999:7:::"


@pytest.mark.parametrize(
    "content",
    [
        f"{SECRET}\nbin:*:20228:0:99999:7:::\n",  # /etc/shadow's shape
        f"{SECRET}: x\nother: y\n",  # a YAML mapping, but not a pipeline's
        "- just\n- a list\n",
        f"password: {SECRET}\n",
    ],
)
def test_a_file_that_is_not_a_pipeline_is_named_never_quoted(tmp_path, capsys, content):
    path = tmp_path / "shadow"
    path.write_text(content)
    code, _, err = run_cli(["generate", path, "--dry-run"], capsys)
    one_line_error(code, err, str(path))
    assert "not a pipeline file" in err or "invalid YAML" in err
    assert "saltsalt" not in err and "20228" not in err and "just" not in err


def test_an_unknown_key_of_a_pipeline_is_quoted_short(tmp_path, capsys, tiny_model_dir):
    path = tmp_path / "p.yaml"
    path.write_text(f"name: p\nstages: [respond: {{}}]\n{'k' * 300}: 1\n")
    code, _, err = run_cli(["generate", path, "--dry-run"], capsys)
    one_line_error(code, err, "unknown key")
    assert "k" * 60 not in err


@pytest.mark.parametrize("content", [f"{SECRET}\n", f"no colon but secret {SECRET[:20]}\n"])
def test_a_file_that_is_not_a_constitution_is_not_quoted(tmp_path, capsys, content):
    path = tmp_path / "c.txt"
    path.write_text(content)
    code, _, err = run_cli(["constitution", "check", path], capsys)
    assert code == 2 and "not a constitution" in err and "saltsalt" not in err and "Traceback" not in err


# -- reasoning ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>a<think>b</think>c</think>the answer", ("a<think>b</think>c", "the answer")),
        ("<think>a</think>the answer", ("a", "the answer")),
        ("<think>x<think>y</think>the answer", ("x<think>y", "the answer")),  # unbalanced: the last closing tag
        ("<think>never closed", ("never closed", "")),
        ("plain", (None, "plain")),
    ],
)
def test_a_thinking_block_ends_at_the_closing_tag_that_balances_it(text, expected):
    assert split_reasoning(text) == expected


def test_dry_run_names_the_out_it_was_given(project, monkeypatch, capsys, tiny_model_dir, tmp_path):
    from tests.conftest import write_pipeline

    monkeypatch.chdir(project)
    pipeline = write_pipeline(project, tiny_model_dir)
    code, out, _ = run_cli(["generate", pipeline, "--dry-run", "--out", tmp_path / "zz"], capsys)
    assert code == 0 and f"output {tmp_path / 'zz'}/" in out and "outputs/" not in out
