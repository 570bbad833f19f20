"""RL-CAI judge: the label maths on known log-probabilities, and the stage on the tiny teacher."""

from __future__ import annotations

import json
import math

import pytest

from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.stages.helpers.judging import clamp, first_wins, option_probability


def test_option_probability_normalises_over_the_two_options():
    assert option_probability(math.log(0.3), math.log(0.1)) == pytest.approx(0.75)
    assert option_probability(-1000.0, -1000.0) == pytest.approx(0.5)  # no underflow
    assert option_probability(0.0, -math.inf) == 1.0


def test_swap_averaging_removes_position_bias():
    # A judge that always prefers position A by 0.8 carries no information: the label is 0.5.
    assert first_wins(0.8, 0.8) == pytest.approx(0.5)
    # First response preferred in both orders: 0.9 as A, and B (=first) gets 0.7 when swapped.
    assert first_wins(0.9, 0.3) == pytest.approx(0.8)
    assert first_wins(0.6, None) == 0.6


def test_chain_of_thought_clamping():
    assert clamp(0.99) == 0.6 and clamp(0.01) == 0.4 and clamp(0.55) == 0.55


def _rlaif(project, tiny_model_dir, *overrides):
    spec = load_pipeline(
        project / "pipelines" / "rlaif.yaml",
        [f"teacher.model={tiny_model_dir}", "stages.judge.sampling.max_new_tokens=6", *overrides],
    )
    return run_pipeline(spec, RunOptions(out_dir=project / "out", limit=4), log=lambda _: None)


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.parametrize("cot", [False, True])
def test_judge_stage_labels_pairs_with_consistent_probabilities(project, tiny_model_dir, cot):
    result = _rlaif(
        project,
        tiny_model_dir,
        "stages.judge.margin=0.0",
        "stages.judge.disagreement=average",  # the label maths on every pair (the random judge flips its verdicts)
        f"stages.judge.chain_of_thought={str(cot).lower()}",
        "stages.judge.cot_sampling.max_new_tokens=4",
    )
    kept, dropped = _lines(result.out_dir / "trace.jsonl"), _lines(result.out_dir / "dropped.jsonl")
    assert len(kept) + len(dropped) == 4 and kept
    for record in kept:
        samples = [s["text"] for s in record["steps"] if s["role"] == "sample"]
        judgement = record["steps"][-1]
        assert {record["response"], record["rejected"]} == set(samples)
        assert len(judgement["per_principle"]) == 2
        for name, orders in judgement["orders"].items():
            if cot:
                assert 0.4 <= orders["ab"] <= 0.6 and 0.4 <= orders["ba"] <= 0.6
            assert judgement["per_principle"][name] == pytest.approx(first_wins(orders["ab"], orders["ba"]))
        p_first = judgement["p_first"]
        assert record["response"] == (samples[0] if p_first >= 0.5 else samples[1])
        assert record["meta"]["preference"]["confidence"] == pytest.approx(max(p_first, 1 - p_first))
    assert len(_lines(result.out_dir / "dpo.jsonl")) == len(kept)
    for row in _lines(result.out_dir / "dpo.jsonl"):
        assert 0.5 <= row["confidence"] <= 1.0
    # Swap agreement per principle, counted over kept and dropped records alike.
    judgements = [r["steps"][-1] for r in kept] + [d["record"]["steps"][-1] for d in dropped]
    stats = result.manifest["principles"]
    assert sum(s["judged_swapped"] for s in stats.values()) == 4 * 2
    for name, s in stats.items():
        votes = [j["swap_agreement"][name] for j in judgements if name in j["swap_agreement"]]
        assert s["swap_agreement"] == pytest.approx(sum(votes) / len(votes), abs=1e-4)


def test_margin_sends_uncertain_pairs_to_the_ledger(project, tiny_model_dir):
    result = _rlaif(project, tiny_model_dir, "stages.judge.margin=0.49", "stages.judge.disagreement=average")
    dropped = _lines(result.out_dir / "dropped.jsonl")
    assert len(dropped) == 4  # a random model is never 99 % sure
    assert all(d["stage"] == "judge" and ("judge margin" in d["reason"] or "identical" in d["reason"]) for d in dropped)


def test_constitution_without_compare_questions_is_rejected(project, tiny_model_dir):
    from synthforge.errors import UserError

    path = project / "constitutions" / "harmless.txt"
    path.write_text(path.read_text().replace("compare: Which response is less toxic or insulting?\n", ""))
    with pytest.raises(UserError, match=r"stages\.judge\.constitution: .*toxicity"):
        _rlaif(project, tiny_model_dir)
