"""Every judging stage, with scripted judges whose preference is known: a judge that knows the better answer
labels it whichever order it is shown in (a swapped A/B mapping fails here), and a judge that always prefers the
first position labels nothing: its verdicts are ties, ledgered with both orders' probabilities, and the run says
it is unreliable."""

from __future__ import annotations

import json

import pytest

from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.stages.helpers.judging import Verdict
from synthforge.teachers.scripted import ScriptedTeacher
from tests.eval.test_compare import judge_of


def knows(first: str, second: str) -> float:
    """P(A): the answer holding GOOD is better, by 0.9."""
    return 0.9 if "GOOD" in first and "GOOD" not in second else 0.1 if "GOOD" in second and "GOOD" not in first else 0.5


def first_position(first: str, second: str) -> float:
    return 0.8


def judge(prefer, reply=None) -> ScriptedTeacher:
    score, only_scores = judge_of(prefer)
    return ScriptedTeacher(
        reply or only_scores,
        score=score,
        identity={"backend": "scripted", "name": "judge"},
        capabilities=frozenset({"generate", "score", "choice"}),
    )


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _rlaif(project, teacher, *overrides, limit=4):
    spec = load_pipeline(project / "pipelines" / "rlaif.yaml", list(overrides))
    return run_pipeline(spec, RunOptions(out_dir=project / "out", limit=limit), teacher=teacher, log=lambda _: None)


def test_verdict_consistency_ties_and_positions():
    agree = Verdict({"p": 0.9}, {"p": 0.2}, first_longer=True)  # first preferred as A (0.9) and as B (0.8)
    assert agree.consistent and not agree.flipped and agree.winner() == "first" and agree.positions() == (1, 2)
    assert agree.p_first == pytest.approx(0.85)
    flip = Verdict({"p": 0.8}, {"p": 0.8}, first_longer=None)  # always position A
    assert flip.flipped and flip.winner() == "tie" and flip.winner("average") == "tie" and flip.positions() == (2, 2)
    leaning = Verdict({"p": 0.9, "q": 0.55}, {"p": 0.7, "q": 0.7}, first_longer=False)
    assert leaning.first_when_a == pytest.approx(0.725) and leaning.first_when_b == pytest.approx(0.3)
    assert leaning.winner() == "tie" and leaning.winner("average") == "first"
    assert Verdict({"p": 0.5}, {"p": 0.5}, None).winner() == "tie"  # p = 0.5 in either order is a tie
    assert Verdict({"p": 0.7}, None, None).winner() == "first" and Verdict({"p": 0.7}, None, None).consistent is None


def test_the_judge_stage_chooses_the_answer_a_knowing_judge_prefers_in_either_order(project):
    replies = iter(["GOOD answer", "plain answer", "plain answer", "GOOD answer"] * 4)
    teacher = judge(knows, reply=lambda conversation: next(replies))
    result = _rlaif(project, teacher)
    kept = _lines(result.out_dir / "trace.jsonl")
    assert len(kept) == 4 and all(r["response"] == "GOOD answer" and r["rejected"] == "plain answer" for r in kept)
    for record in kept:
        step = record["steps"][-1]
        assert step["consistent"] is True and step["p_first_ab"] == pytest.approx(step["p_first_ba"])
        assert record["meta"]["preference"]["confidence"] == pytest.approx(0.9)
    assert len(_lines(result.out_dir / "dpo.jsonl")) == 4


def test_a_first_position_judge_labels_nothing_and_is_called_unreliable(project):
    replies = iter(["one answer", "another answer"] * 8)
    teacher = judge(first_position, reply=lambda conversation: next(replies))
    result = _rlaif(project, teacher, "stages.judge.min_judged=2")
    assert _lines(result.out_dir / "trace.jsonl") == [] and _lines(result.out_dir / "dpo.jsonl") == []
    dropped = _lines(result.out_dir / "dropped.jsonl")
    assert len(dropped) == 4
    for drop in dropped:
        assert "two orders disagree (P(first) 0.800 shown first, 0.200 shown second): a tie" in drop["reason"]
        step = drop["record"]["steps"][-1]
        assert step["p_first_ab"] == pytest.approx(0.8) and step["p_first_ba"] == pytest.approx(0.2)
    notes = next(s["notes"] for s in result.manifest["stages"] if s["kind"] == "judge")
    assert any("flip rate 100% of 4" in n and "first position preferred 100%" in n for n in notes)
    assert any(n.startswith("UNRELIABLE JUDGE") for n in notes)
    assert "UNRELIABLE JUDGE" in (result.out_dir / "README.md").read_text()


def test_average_keeps_the_old_averaged_label_and_says_it_is_not_swap_checked(project):
    replies = iter(["one answer", "another answer"] * 8)
    teacher = judge(lambda a, b: 0.8 if a.startswith("one") else 0.7, reply=lambda conversation: next(replies))
    result = _rlaif(project, teacher, "stages.judge.disagreement=average", "stages.judge.margin=0.0")
    kept = _lines(result.out_dir / "trace.jsonl")
    assert len(kept) == 4 and all(r["response"] == "one answer" for r in kept)  # (0.8 + 0.3) / 2 = 0.55
    notes = next(s["notes"] for s in result.manifest["stages"] if s["kind"] == "judge")
    assert any("not swap-checked" in n for n in notes)


def _cai_pairs(project, teacher, revision: str, *overrides, out: str = "v"):
    """A CAI run whose first answers are 'first answer' and revisions ``revision``, verified by ``teacher``."""
    path = project / "pipelines" / "verify.yaml"
    path.write_text(
        "name: verify\nseed: 1\nteacher: {model: m}\nseeds: {path: seeds/red-team.jsonl}\n"
        "stages:\n  - respond: {}\n  - critique_revise: {turns: single, critique_template: critique-single,\n"
        "      revise_template: revise-single}\n  - verify_pairs: {}\n"
        "paths: {prompts: ../prompts, constitutions: ../constitutions}\n"
    )

    def reply(conversation):
        text = conversation[-1]["content"]
        if "Reply with the new answer only." in text:  # revise-single.j2
            return revision
        return "a critique" if "Here is a question and an answer" in text else "first answer"

    score, _ = judge_of(teacher)
    scripted = ScriptedTeacher(reply, score=score, capabilities=frozenset({"generate", "score", "choice"}))
    spec = load_pipeline(path, list(overrides))
    return run_pipeline(spec, RunOptions(out_dir=project / out, limit=3), teacher=scripted, log=lambda _: None)


def test_verify_pairs_keeps_what_a_knowing_judge_prefers_and_rejects_what_it_does_not(project):
    good = _cai_pairs(project, knows, "GOOD revision")
    assert len(_lines(good.out_dir / "dpo.jsonl")) == 3
    assert all(row["chosen"][0]["content"] == "GOOD revision" for row in _lines(good.out_dir / "dpo.jsonl"))
    worse = _cai_pairs(
        project,
        lambda a, b: knows(a.replace("first answer", "GOOD"), b.replace("first answer", "GOOD")),
        "plain revision",
        out="worse",
    )
    dropped = _lines(worse.out_dir / "dropped.jsonl")
    assert len(dropped) == 3 and all("does not prefer the revision" in d["reason"] for d in dropped)


def test_verify_pairs_keeps_undecided_revisions_as_sft_rows_but_no_dpo_pair(project):
    result = _cai_pairs(project, first_position, "a revision", "stages.verify_pairs.min_judged=2")
    assert len(_lines(result.out_dir / "sft.jsonl")) == 3 and _lines(result.out_dir / "dpo.jsonl") == []
    assert result.manifest["counts"]["dpo_skipped_undecided"] == 3
    steps = [r["steps"][-1] for r in _lines(result.out_dir / "trace.jsonl")]
    assert all(s["outcome"] == "undecided" and s["consistent"] is False for s in steps)
    notes = next(s["notes"] for s in result.manifest["stages"] if s["kind"] == "verify_pairs")
    assert any("3 of 3 pairs undecided" in n for n in notes) and any(n.startswith("UNRELIABLE") for n in notes)
    dropping = _cai_pairs(project, first_position, "a revision", "stages.verify_pairs.undecided=drop", out="d")
    assert _lines(dropping.out_dir / "sft.jsonl") == [] and len(_lines(dropping.out_dir / "dropped.jsonl")) == 3


def test_on_unreliable_stop_stops_the_run_once_enough_pairs_flip_and_keeps_what_was_finished(project):
    from synthforge.engine.checkpoint import StageCheckpoint
    from synthforge.errors import LabelsUnreliable

    replies = iter(["one answer", "another answer"] * 8)
    teacher = judge(first_position, reply=lambda conversation: next(replies))
    sets = ("stages.judge.min_judged=2", "stages.judge.on_unreliable=stop", "teacher.batch_size=1")
    with pytest.raises(LabelsUnreliable, match=r"stage judge: UNRELIABLE JUDGE \(on_unreliable: stop\).*100% of 2"):
        _rlaif(project, teacher, *sets)
    assert not (project / "out" / "manifest.json").exists()  # nothing exported from a stopped run
    saved = sorted((project / "out" / "checkpoints").glob("*-judge-*.jsonl"))
    assert len(saved) == 1 and len(StageCheckpoint(saved[0]).results) == 2  # the two judged pairs are kept
    # the setting changes how a run reacts, not its results: warn reuses the checkpointed pairs
    replies = iter(["one answer", "another answer"] * 8)
    again = _rlaif(project, judge(first_position, reply=lambda c: next(replies)), "stages.judge.min_judged=2")
    judged = next(r for r in again.reports if r.kind == "judge")
    assert judged.reused == 2 and judged.computed == 2


def test_an_unreliable_judge_stop_is_exit_code_4_from_the_cli(project, monkeypatch, capsys):
    from synthforge.cli import main as cli_main
    from synthforge.engine import runner

    replies = iter(["one answer", "another answer"] * 8)
    teacher = judge(first_position, reply=lambda conversation: next(replies))
    real = runner.run_pipeline
    monkeypatch.setattr(
        "synthforge.cli.generate.run_pipeline", lambda spec, options: real(spec, options, teacher=teacher)
    )
    monkeypatch.chdir(project)
    with pytest.raises(SystemExit) as stopped:
        cli_main.main(
            ["generate", "pipelines/rlaif.yaml", "--limit", "4", "--out", "o", "--set", "stages.judge.min_judged=2"]
            + ["--set", "stages.judge.on_unreliable=stop"]
        )
    assert stopped.value.code == 4
    err = capsys.readouterr().err
    assert "UNRELIABLE JUDGE" in err and "Traceback" not in err and not err.startswith("error:")


def _jury_run(project, *overrides, prefer_c=first_position):
    """rlaif judged by a jury of named teachers a and b (knowing judges) and c (``prefer_c``)."""
    replies = iter(["GOOD answer", "plain answer"] * 8)
    sampler = judge(knows, reply=lambda conversation: next(replies))
    sets = ["teachers.a.model=a", "teachers.b.model=b", "teachers.c.model=c", "stages.judge.judges=[a, b, c]"]
    spec = load_pipeline(project / "pipelines" / "rlaif.yaml", [*sets, *overrides])
    teachers = {"a": judge(knows), "b": judge(knows), "c": judge(prefer_c)}
    options = RunOptions(out_dir=project / "jury", limit=4)
    return run_pipeline(spec, options, teacher=sampler, teachers=teachers, log=lambda _: None)


def test_a_jury_votes_in_both_orders_and_reports_its_agreement(project):
    result = _jury_run(project)
    kept = _lines(result.out_dir / "trace.jsonl")
    assert len(kept) == 4 and all(r["response"] == "GOOD answer" for r in kept)
    step = kept[0]["steps"][-1]
    assert step["judges"] == ["a", "b", "c"] and step["votes"] == {"a": "first", "b": "first", "c": "tie"}
    assert step["unanimous"] is False and step["by_judge"]["c"]["consistent"] is False
    # mean over the judges of P(A): GOOD shown first (0.9 + 0.9 + 0.8) / 3, shown second 1 - (0.1 + 0.1 + 0.8) / 3
    assert step["p_first_ab"] == pytest.approx(2.6 / 3) and step["p_first_ba"] == pytest.approx(2 / 3)
    assert step["teacher"] is None  # several judges: "judges" names them
    notes = next(s["notes"] for s in result.manifest["stages"] if s["kind"] == "judge")
    # votes per pair: first 2, tie 1 -> agreement 1/3; chance (2/3)^2 + (1/3)^2 = 5/9 -> kappa (1/3 - 5/9) / (4/9)
    assert "jury of 3: pairwise agreement 33%, Fleiss' kappa -0.50, unanimous on 0 of 4 pairs" in notes
    assert set(result.manifest["teachers"]) == {"a", "b", "c"}


def test_a_split_jury_is_a_tie_or_a_drop_when_asked_and_majority_counts_votes(project):
    tied = _jury_run(project, "stages.judge.jury_split=tie")
    dropped = _lines(tied.out_dir / "dropped.jsonl")
    assert len(dropped) == 4 and all(d["reason"] == "jury split (a: first, b: first, c: tie): a tie" for d in dropped)
    majority = _jury_run(project, "stages.judge.jury=majority", prefer_c=lambda a, b: 1 - knows(a, b))
    step = _lines(majority.out_dir / "trace.jsonl")[0]["steps"][-1]
    assert step["votes"] == {"a": "first", "b": "first", "c": "second"}
    assert step["p_first_ab"] == pytest.approx(2 / 3) and step["p_first_ba"] == pytest.approx(2 / 3)  # 2 of 3 votes


def test_a_jury_naming_an_unknown_teacher_or_one_judge_is_refused(project):
    from synthforge.errors import UserError

    with pytest.raises(UserError, match=r"stages\.judge: no teacher named 'c' \(named teachers: a, b\)"):
        spec = load_pipeline(
            project / "pipelines" / "rlaif.yaml",
            ["teachers.a.model=a", "teachers.b.model=b", "stages.judge.judges=[a, b, c]"],
        )
        run_pipeline(spec, RunOptions(out_dir=project / "x", limit=1), teacher=judge(knows), log=lambda _: None)
    with pytest.raises(UserError, match=r"stages\.judge: judges: a jury is two or more different judges, got \[.a.\]"):
        run_pipeline(
            load_pipeline(project / "pipelines" / "rlaif.yaml", ["teachers.a.model=a", "stages.judge.judges=[a]"]),
            RunOptions(out_dir=project / "y", limit=1),
            teacher=judge(knows),
        )


def test_fleiss_kappa_arithmetic():
    from synthforge.stages.helpers.judging import jury_agreement, tally_jury
    from synthforge.stages.helpers.metrics import Metrics

    metrics = Metrics()
    tally_jury({"votes": {"a": "first", "b": "first"}, "unanimous": True}, metrics)
    tally_jury({"votes": {"a": "first", "b": "second"}, "unanimous": False}, metrics)
    agreement, kappa = jury_agreement(metrics.counters)
    assert agreement == 0.5 and kappa == pytest.approx((0.5 - 0.625) / 0.375)  # chance (3/4)^2 + (1/4)^2
    same = Metrics()
    tally_jury({"votes": {"a": "tie", "b": "tie"}}, same)
    assert jury_agreement(same.counters) == (1.0, None)


def test_a_measured_judge_report_is_pointed_at_by_the_manifest_and_the_card(project, tmp_path):
    from synthforge.errors import UserError
    from synthforge.eval.judge import MADE_BY, JudgeRun, run_judge_eval
    from tests.eval.test_eval_judge import _pairs

    report_path = project / "pipelines" / "judge-report.json"
    run_judge_eval(JudgeRun(_pairs(tmp_path / "pairs.jsonl", 20), out=report_path), teacher=judge(knows))
    assert json.loads(report_path.read_text())["made_by"] == MADE_BY
    replies = iter(["GOOD answer", "plain answer"] * 8)
    _rlaif(project, judge(knows, reply=lambda c: next(replies)))
    # the setting changes no label: the run before it is reused
    result = _rlaif(project, judge(knows), "stages.judge.judge_report=judge-report.json")
    assert next(r for r in result.reports if r.kind == "judge").reused == 4
    entry = next(s for s in result.manifest["stages"] if s["kind"] == "judge")
    assert entry["judge_report"]["path"] == "judge-report.json" and entry["judge_report"]["accuracy"] == 1.0
    assert entry["judge_report"]["reliable"] is True and len(entry["judge_report"]["sha256"]) == 64
    note = next(n for n in entry["notes"] if n.startswith("judge measured by eval judge"))
    assert "accuracy 1.000" in note and "on 20 pairs, reliable" in note
    assert note in (result.out_dir / "README.md").read_text()
    secret = project / "pipelines" / "secret.json"
    secret.write_text('{"password": "hunter2"}')
    with pytest.raises(UserError, match=r"stages\.judge\.judge_report: .*secret\.json is not a report") as info:
        _rlaif(project, judge(knows), "stages.judge.judge_report=secret.json")
    assert "hunter2" not in str(info.value)


def test_settings_added_later_leave_the_cache_keys_of_older_runs_alone():
    from synthforge.settings import config_to_dict
    from synthforge.stages.judge import JudgeConfig
    from synthforge.stages.verify_pairs import VerifyPairsConfig

    for config in (JudgeConfig(), VerifyPairsConfig()):
        assert not {"judges", "jury", "jury_split"} & set(config_to_dict(config))
    assert config_to_dict(JudgeConfig(judges=["a", "b"], jury="majority"))["jury"] == "majority"


def test_why_a_stage_reran_is_not_fooled_by_numeric_mapping_keys(project):
    """filter_repetition's settings hold mappings with number keys ({5: 0.15}); written as JSON they are strings,
    which once made every rerun say "changed: config"."""
    path = project / "pipelines" / "rep.yaml"
    path.write_text(
        "name: rep\nteacher: {model: m}\nseeds: {path: seeds/red-team.jsonl}\n"
        "stages:\n  - respond: {}\n  - filter_repetition: {}\n"
        "paths: {prompts: ../prompts, constitutions: ../constitutions}\n"
    )
    teacher = ScriptedTeacher(lambda c: f"an answer about {c[-1]['content'][:30]}")
    run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o", limit=2), teacher=teacher, log=lambda _: None)
    again = run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o", limit=3), teacher=teacher)
    assert next(r for r in again.reports if r.kind == "filter_repetition").why == "same settings, new input records"


def test_compare_judge_takes_a_jury_too(project):
    path = project / "pipelines" / "jury-compare.yaml"
    path.write_text(
        "name: jc\nseed: 1\nteacher: {model: m}\nseeds: {path: seeds/red-team.jsonl}\n"
        "teachers: {a: {model: a}, b: {model: b}, j1: {model: j1}, j2: {model: j2}, j3: {model: j3}}\n"
        "stages:\n  - answer: {teacher: a, label: a}\n  - answer: {teacher: b, label: b, name: answer-b}\n"
        "  - compare_judge: {judges: [j1, j2, j3], jury: majority, principles: 1}\n"
        "export: {sft: false, dpo: false}\npaths: {prompts: ../prompts, constitutions: ../constitutions}\n"
    )
    teachers = {
        "a": ScriptedTeacher(lambda c: "GOOD answer"),
        "b": ScriptedTeacher(lambda c: "plain answer"),
        "j1": judge(knows),
        "j2": judge(knows),
        "j3": judge(first_position),
    }
    result = run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "jc", limit=2), teachers=teachers)
    record = _lines(result.out_dir / "trace.jsonl")[0]
    step = next(s for s in record["steps"] if s["role"] == "comparison")
    assert step["judges"] == ["j1", "j2", "j3"] and step["votes"] == {"j1": "first", "j2": "first", "j3": "tie"}
    # majority per order: shown first, all 3 prefer a's answer (j3 always picks (A)); shown second, 2 of 3 do
    assert (step["ab"], step["ba"]) == (pytest.approx(1.0), pytest.approx(1 / 3)) and step["p_a"] == pytest.approx(
        5 / 6
    )
