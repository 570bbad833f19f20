"""`synthforge eval judge`: a judge measured against human-labelled pairs, with scripted judges whose behaviour is
known (one that knows the answer, one that answers at random, one that always prefers the first position)."""

from __future__ import annotations

import json
import random

import pytest

from synthforge.eval.judge import JudgeEvalConfig, JudgeRun, measure, read_pairs, run_judge_eval
from synthforge.stages.helpers.judging import Verdict
from tests.conftest import run_cli
from tests.stages.test_judges import first_position, judge, knows


def _pairs(path, n: int = 40):
    """TRL rows (text and conversational) and HH-RLHF transcripts; the human's choice holds GOOD; half the time it
    is the shorter answer; two rows whose answers are the same text."""
    rows = []
    for i in range(n):
        good, bad = (
            (f"GOOD {i}", f"a much longer bad answer {i}") if i % 2 else (f"GOOD and long answer {i}", f"bad {i}")
        )
        if i % 3 == 0:
            rows.append({"prompt": f"question {i}?", "chosen": good, "rejected": bad})
        elif i % 3 == 1:
            prompt = [{"role": "user", "content": f"question {i}?"}]
            rows.append(
                {
                    "prompt": prompt,
                    "chosen": [{"role": "assistant", "content": good}],
                    "rejected": [{"role": "assistant", "content": bad}],
                }
            )
        else:
            shared = f"\n\nHuman: hi\n\nAssistant: hello\n\nHuman: question {i}?\n\nAssistant: "
            rows.append({"chosen": shared + good, "rejected": shared + bad})
    rows += [{"prompt": "same?", "chosen": "same answer", "rejected": "same answer  "}] * 2
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(tmp_path, teacher, n=40, **settings):
    return run_judge_eval(JudgeRun(_pairs(tmp_path / "pairs.jsonl", n), **settings), teacher=teacher)


def test_pairs_are_read_in_every_layout_and_identical_answers_are_skipped(tmp_path):
    pairs, identical = read_pairs(_pairs(tmp_path / "pairs.jsonl", 6))
    assert len(pairs) == 6 and identical == 2
    hh = pairs[2]
    assert hh.record.prompt == "question 2?" and hh.record.history == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    assert all(p.chosen.startswith("GOOD") for p in pairs)


def test_a_judge_that_knows_the_answer_measures_one_and_is_reliable(tmp_path):
    report = _run(tmp_path, judge(knows))
    assert report["n"] == 40 and report["pairs"]["skipped_identical"] == 2
    assert report["accuracy"] == 1.0 and report["accuracy_interval"] == [1.0, 1.0]
    assert report["flip_rate"] == 0.0 and report["first_position_rate"] == 0.5 and report["tie_rate"] == 0.0
    assert report["longer_rate"] == 0.5 and report["baselines"] == {"longer": 0.5, "first": 0.5}
    assert report["calibration_error"] == pytest.approx(0.1)  # 90% sure, always right
    assert report["reliable"] is True


def test_a_judge_answering_at_random_measures_about_a_half_with_an_interval_around_it(tmp_path):
    rng = random.Random(7)
    report = _run(tmp_path, judge(lambda a, b: rng.random()), n=300)
    low, high = report["accuracy_interval"]
    assert abs(report["accuracy"] - 0.5) < 0.06 and low < 0.5 < high
    assert report["reliable"] is False and "interval" in report["reason"]


def test_a_first_position_judge_flips_every_verdict_and_is_unreliable(tmp_path):
    report = _run(tmp_path, judge(first_position))
    assert report["accuracy"] == 0.5 and report["flip_rate"] == 1.0 and report["first_position_rate"] == 1.0
    assert report["tie_rate"] == 1.0 and report["reliable"] is False and "flips with the order" in report["reason"]


def test_each_order_is_one_vote_and_a_flipped_verdict_counts_half():
    config = JudgeEvalConfig(bootstrap=50)
    right = Verdict({"p": 0.9}, {"p": 0.1}, True)  # the human's choice preferred in both orders
    flipped = Verdict({"p": 0.9}, {"p": 0.9}, True)
    wrong = Verdict({"p": 0.2}, {"p": 0.7}, False)
    tie = Verdict({"p": 0.5}, {"p": 0.5}, None)
    report = measure([right, flipped, wrong, tie], config)
    assert report["accuracy"] == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    assert report["flip_rate"] == 0.25 and report["tie_rate"] == 0.5


def test_the_cli_writes_a_report_with_provenance_and_never_over_a_file_it_did_not_write(
    tmp_path, capsys, tiny_model_dir
):
    pairs = _pairs(tmp_path / "pairs.jsonl", 4)
    out = tmp_path / "report.json"
    args = ["eval", "judge", pairs, "--judge", tiny_model_dir, "--out", out, "--principles", "2"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    report = json.loads(out.read_text())
    expected = {"n", "accuracy", "accuracy_interval", "flip_rate", "first_position_rate", "longer_rate", "tie_rate"}
    assert expected | {"calibration_error", "baselines", "reliable", "reason", "judge", "pairs", "thresholds"} <= set(
        report
    )
    assert report["pairs"]["file"] == "pairs.jsonl" and len(report["pairs"]["sha256"]) == 64
    assert report["judge"]["backend"] == "transformers" and report["asked"]["principles"] == 2
    assert report["thresholds"]["max_flip_rate"] == 0.4
    assert "RELIABLE" in stdout and f"wrote {out}" in stdout
    assert run_cli(args, capsys)[0] == 0  # its own report: replaced
    mine = tmp_path / "mine.json"
    mine.write_text("{}")
    code, _, err = run_cli([*args[:-4], "--out", mine], capsys)
    assert code == 2 and "not written by synthforge eval judge" in err and mine.read_text() == "{}"


def test_without_pairs_or_with_bad_rows_it_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(["eval", "judge"], capsys)
    assert code == 2 and "give PAIRS" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "chosen": "a"}) + "\n")
    code, _, err = run_cli(["eval", "judge", bad], capsys)
    assert code == 2 and f"{bad}:1" in err and "preference pair" in err


def test_a_jury_is_measured_with_each_judge_beside_it(tmp_path):
    teachers = {"a": judge(knows), "b": judge(knows), "c": judge(first_position)}
    run = JudgeRun(_pairs(tmp_path / "pairs.jsonl", 30), jury=("a", "b", "c"), jury_rule="majority")
    report = run_judge_eval(run, teachers=teachers)
    assert report["accuracy"] == 1.0 and report["flip_rate"] == 0.0  # two knowing judges outvote the biased one
    jury = report["jury"]
    assert jury["by_judge"]["a"]["accuracy"] == 1.0 and jury["by_judge"]["c"]["flip_rate"] == 1.0
    assert jury["unanimous_rate"] == 0.0 and jury["pairwise_agreement"] == pytest.approx(1 / 3)
    assert report["judge"]["backend"] == "jury" and set(report["judge"]["judges"]) == {"a", "b", "c"}


def test_the_cli_refuses_a_jury_of_one(tmp_path, capsys):
    code, _, err = run_cli(["eval", "judge", str(_pairs(tmp_path / "p.jsonl", 4)), "--jury", "embedded"], capsys)
    assert code == 2 and "--jury: a jury is two or more different judges, got ['embedded']" in err
