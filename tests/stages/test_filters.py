"""Filter stages: each one's edge cases, drops with reasons, and decontamination against eval files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthforge.builtin import ROOT as BUILTIN
from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.records import Drop, Record
from synthforge.settings import SpecError
from synthforge.stages import stage_class
from synthforge.stages.base import StageResources
from synthforge.stages.filters.repetition import RepetitionFilterConfig, repetition_reason


def make(kind: str, settings: dict | None = None, base_dir: Path | None = None):
    resources = StageResources(BUILTIN / "prompts", BUILTIN / "constitutions", 0, base_dir)
    return stage_class(kind)(kind, settings or {}, resources)


def verdicts(stage, records: list[Record]) -> list[str | None]:
    """None for a kept record, else the drop reason."""
    return [r.reason if isinstance(r, Drop) else None for r in stage.process(records, None)]


def rec(prompt="Question?", response="An answer.", rejected=None, finish="stop") -> Record:
    steps = [
        {"stage": "respond", "role": "response", "text": response, "finish_reason": finish, "writes": ["response"]}
    ]
    return Record(id="r", prompt=prompt, response=response, rejected=rejected, steps=steps)


def test_empty_filter():
    stage = make("filter_empty")
    got = verdicts(stage, [rec(), rec(response="  \n "), rec(prompt=""), rec(finish="length")])
    assert got == [None, "empty response", "empty prompt", "truncated response (hit max_new_tokens)"]
    assert verdicts(make("filter_empty", {"truncated": False}), [rec(finish="length")]) == [None]


def test_length_filter_chars_words_and_tokens(tiny_model_dir):
    by_words = make("filter_length", {"unit": "words", "response": {"min": 2, "max": 4}})
    got = verdicts(by_words, [rec(response="one"), rec(response="one two three"), rec(response="a b c d e")])
    assert got == [
        "response too short (1 < 2 words)",
        None,
        "response too long (5 > 4 words)",
    ]
    by_chars = make("filter_length", {"prompt": {"max": 5}})
    assert verdicts(by_chars, [rec(prompt="12345"), rec(prompt="123456")]) == [None, "prompt too long (6 > 5 chars)"]
    by_tokens = make("filter_length", {"unit": "tokens", "tokenizer": str(tiny_model_dir), "response": {"max": 3}})
    assert verdicts(by_tokens, [rec(response="ab"), rec(response="a much longer answer")])[0] is None
    assert "tokens" in verdicts(by_tokens, [rec(response="a much longer answer")])[0]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"response": {"min": 5, "max": 2}}, "stages.filter_length.response: min (5) is above max (2)"),
        ({"unit": "tokens"}, "needs 'tokenizer'"),
        ({"unit": "lines"}, "unit must be one of chars, words, tokens"),
        ({"prompt": {"maximum": 3}}, "stages.filter_length.prompt.maximum: unknown setting"),
    ],
)
def test_length_filter_bad_settings_name_the_key(settings, message):
    with pytest.raises(SpecError) as error:
        make("filter_length", settings)
    assert message in str(error.value)


def test_repetition_filter_gopher_rules():
    config = RepetitionFilterConfig()
    normal = (
        "Photosynthesis is how plants turn light into chemical energy. Chlorophyll in the leaves absorbs "
        "sunlight, which splits water and releases oxygen, while carbon dioxide is fixed into sugars."
    )
    assert repetition_reason(normal, config) is None
    lines = "\n".join(["I cannot help with that."] * 4 + ["Please ask something else."])
    assert repetition_reason(lines, config).startswith("duplicate lines 3/5")
    looping = "the cat sat on the mat and " * 6
    assert "gram" in repetition_reason(looping, config)
    assert repetition_reason("yes yes yes", config) is None  # under min_words: n-gram rules skipped
    stage = make("filter_repetition")
    assert verdicts(stage, [rec(response=normal), rec(response=looping)])[1].startswith("repetitive response: ")


def test_refusal_filter_drop_or_keep_only():
    refusal = "I'm sorry, but I can’t help with that."
    long_answer = "I can't help with that part, but " + "here is a long and useful explanation " * 8
    drop = make("filter_refusal")
    assert verdicts(drop, [rec(response=refusal), rec(response=long_answer), rec()]) == [
        'refusal-only response ("i can\'t help with")',
        None,
        None,
    ]
    keep_only = make("filter_refusal", {"action": "keep_only", "phrases": ["i can't help"]})
    assert verdicts(keep_only, [rec(response=refusal), rec()]) == [None, "not a refusal (response)"]


def test_pair_filter():
    stage = make("filter_pairs")
    got = verdicts(stage, [rec(rejected="Other."), rec(rejected=" An  answer.\n"), rec(), rec(rejected="")])
    assert got == [
        None,
        "chosen equals rejected (up to whitespace)",
        "no rejected answer",
        "empty side of a preference pair",
    ]
    assert verdicts(make("filter_pairs", {"require_pair": False}), [rec()]) == [None]


def test_predicate_filter_from_a_file_next_to_the_pipeline(tmp_path):
    (tmp_path / "my_filters.py").write_text(
        "def no_urls(record):\n"
        "    return ('http' not in record.prompt, 'prompt has a URL')\n"
        "def short(record):\n"
        "    return len(record.response) < 20\n"
        "def broken(record):\n"
        "    raise RuntimeError('boom')\n",
        encoding="utf-8",
    )
    urls = make("filter_predicate", {"function": "my_filters:no_urls"}, tmp_path)
    assert verdicts(urls, [rec(), rec(prompt="see http://x")]) == [None, "prompt has a URL"]
    assert urls.fingerprint()["function_source"] and str(tmp_path / "my_filters.py") in urls.files()
    short = make("filter_predicate", {"function": "my_filters:short"}, tmp_path)
    assert verdicts(short, [rec(response="x" * 30)]) == ["rejected by my_filters:short"]
    broken = make("filter_predicate", {"function": "my_filters:broken"}, tmp_path)
    assert verdicts(broken, [rec()]) == ["my_filters:broken raised RuntimeError: boom"]
    with pytest.raises(SpecError, match="has no function 'missing'"):
        make("filter_predicate", {"function": "my_filters:missing"}, tmp_path)
    with pytest.raises(SpecError, match="cannot import 'nowhere_module'"):
        make("filter_predicate", {"function": "nowhere_module:f"}, tmp_path)


QUESTION = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."


def test_decontamination_hits_per_eval_file(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    (tmp_path / "gsm.jsonl").write_text(json.dumps({"question": QUESTION, "answer": "72"}) + "\n", encoding="utf-8")
    (tmp_path / "short.txt").write_text("What is the boiling point of water at sea level?\n", encoding="utf-8")
    pq.write_table(
        pyarrow.table({"text": ["The mitochondria is the powerhouse of the cell and makes ATP for it."]}),
        tmp_path / "bio.parquet",
    )
    stage = make("decontaminate", {"eval_files": ["gsm.jsonl", "short.txt", "bio.parquet"]}, tmp_path)
    records = [
        rec(prompt="Solve: " + QUESTION.upper() + " How many clips?"),  # case and punctuation don't hide it
        rec(prompt="Q: what is the boiling point of water at sea level? Explain."),  # short eval text, whole
        rec(prompt="Tell me: the mitochondria is the powerhouse of the cell and makes ATP for it"),
        rec(prompt="Natalia sold clips to her friends."),  # shares only short n-grams
    ]
    got = verdicts(stage, records)
    assert got[0].startswith("contaminated by gsm.jsonl (prompt shares: 'natalia sold clips")
    assert got[1].startswith("contaminated by short.txt")
    assert got[2].startswith("contaminated by bio.parquet")
    assert got[3] is None


def test_filters_in_a_pipeline_count_drops_by_kind(project):
    (project / "pipelines" / "evals.jsonl").write_text(json.dumps({"q": QUESTION}) + "\n", encoding="utf-8")
    seeds = project / "pipelines" / "seeds" / "mixed.jsonl"
    prompts = [QUESTION, "Hi", "What is a prime number and why do they matter?", "x" * 300]
    seeds.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts), encoding="utf-8")
    (project / "pipelines" / "filters.yaml").write_text(
        "name: filters\nseeds: {path: seeds/mixed.jsonl}\nstages:\n"
        "  - decontaminate: {eval_files: [evals.jsonl]}\n"
        "  - filter_length: {prompt: {min: 3, max: 200}}\n"
        "paths: {prompts: ../prompts, constitutions: ../constitutions}\n",
        encoding="utf-8",
    )
    result = run_pipeline(
        load_pipeline(project / "pipelines" / "filters.yaml"), RunOptions(out_dir=project / "o"), log=lambda _: None
    )
    reports = [s["report"] for s in result.manifest["stages"]]
    assert reports[0]["drop_reasons"] == {"contaminated by evals.jsonl": 1}
    assert reports[1]["drop_reasons"] == {"prompt too short": 1, "prompt too long": 1}
    assert any(path.endswith("evals.jsonl") for path in result.manifest["files"])
    dropped = [json.loads(x) for x in (project / "o" / "dropped.jsonl").read_text().splitlines()]
    assert len(dropped) == 3 and result.manifest["counts"]["sft"] == 0  # no responses: nothing to train on


def test_stages_are_rebuilt_from_plain_data_when_pickled(tmp_path):
    """An executor may run a stage in another process: it travels as the data it was built from, and a user
    predicate module is imported again there, not looked up under a name only this process registered."""
    import pickle

    (tmp_path / "my_rules.py").write_text("def short(record):\n    return len(record.prompt) < 20\n")
    (tmp_path / "evals.txt").write_text(QUESTION + "\n")
    for kind, settings in (
        ("filter_predicate", {"function": "my_rules:short"}),
        ("decontaminate", {"eval_files": ["evals.txt"]}),
    ):
        stage = make(kind, settings, tmp_path)
        copy = pickle.loads(pickle.dumps(stage))
        assert type(copy) is type(stage) and copy.settings == settings and copy.fingerprint() == stage.fingerprint()
        records = [rec(prompt="tiny"), rec(prompt=QUESTION)]
        assert verdicts(copy, records) == verdicts(stage, records)
    assert make("decontaminate", {"eval_files": ["evals.txt"]}, tmp_path)._index is None  # built on first use
