"""Named teachers, pools and rubric ratings (UltraFeedback): scripted teachers whose answers and scores are known,
so each candidate's teacher and member, each score's method, and each pair's best and worst can be checked."""

from __future__ import annotations

import json
import math
import re

import pytest

from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.errors import UserError
from synthforge.records import Candidate, Record
from synthforge.stages.rate import expected_score, parse_json_score, parse_text_score
from synthforge.teachers.scripted import ScriptedTeacher

ASPECT = re.compile(r"Assistant: (.*?)\n\n(How [a-z]+)", re.S)


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _pipeline(project, body: str, name: str = "pool") -> object:
    path = project / "pipelines" / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nseed: 7\nteacher: {{model: m}}\nseeds: {{path: seeds/red-team.jsonl}}\n{body}"
        "paths: {prompts: ../prompts, constitutions: ../constitutions}\n"
    )
    return path


def _writer(label: str) -> ScriptedTeacher:
    """A teacher that answers '<label> answer (<system prompt or none>)'."""

    def reply(conversation):
        system = conversation[0]["content"] if conversation[0]["role"] == "system" else "none"
        return f"{label} answer ({system})"

    return ScriptedTeacher(reply, identity={"backend": "scripted", "name": label})


def _digit_rater(score_of) -> ScriptedTeacher:
    """A rater whose log-probability of answering digit d is log P(d), with the expected score ``score_of(answer)``
    put on the two nearest digits."""

    def score(conversation, digit: str) -> float:
        answer = ASPECT.search(conversation[-1]["content"]).group(1)
        target = score_of(answer)
        low = math.floor(target)
        weights = {str(low): 1 - (target - low), str(low + 1): target - low}
        return math.log(max(weights.get(digit, 0.0), 1e-12))

    return ScriptedTeacher(
        lambda c: "3",
        score=score,
        identity={"backend": "scripted", "name": "rater"},
        capabilities=frozenset({"generate", "score", "choice"}),
    )


POOL = """teachers:
  a: {model: model-a}
  b: {model: model-b}
stages:
  - pool:
      members:
        - {name: first, teacher: a}
        - {name: second, teacher: b, system: "Be brief."}
        - {name: third, teacher: a, sampling: {temperature: 1.0, max_new_tokens: 64}}
"""


def test_a_pool_over_named_teachers_records_each_answer_s_teacher_and_member(project):
    a, b = _writer("A"), _writer("B")
    spec = load_pipeline(_pipeline(project, POOL + "export: {sft: false, dpo: false}\n"))
    options = RunOptions(out_dir=project / "o", limit=3)
    result = run_pipeline(spec, options, log=lambda _: None, teachers={"a": a, "b": b})
    records = _lines(result.out_dir / "trace.jsonl")
    assert len(records) == 3
    for record in records:
        assert [(c["member"], c["teacher"], c["text"]) for c in record["candidates"]] == [
            ("first", "a", "A answer (none)"),
            ("second", "b", "B answer (Be brief.)"),
            ("third", "a", "A answer (none)"),
        ]
        steps = [s for s in record["steps"] if s["role"] == "candidate"]
        assert [(s["member"], s["teacher"]) for s in steps] == [("first", "a"), ("second", "b"), ("third", "a")]
    assert a.calls == 6 and b.calls == 3
    assert set(result.manifest["teachers"]) == {"a", "b"}
    assert result.manifest["teachers"]["b"]["settings"]["model"] == "model-b"
    groups = result.manifest["groups"]["member"]["members"]
    assert groups["second"]["answered"] == 3


def test_changing_one_named_teacher_recomputes_only_the_stages_that_call_it(project):
    body = """teachers:
  a: {model: model-a}
  b: {model: model-b}
stages:
  - respond: {teacher: a}
  - pool:
      members: [{name: x, teacher: b}, {name: y, teacher: b, system: "Be brief."}]
export: {sft: false, dpo: false}
"""
    path = _pipeline(project, body)
    run = lambda teachers: run_pipeline(  # noqa: E731
        load_pipeline(path), RunOptions(out_dir=project / "o", limit=2), log=lambda _: None, teachers=teachers
    )
    run({"a": _writer("A"), "b": _writer("B")})
    again = run({"a": _writer("A"), "b": _writer("B2")})  # another identity for b only
    by_kind = {r.kind: r for r in again.reports}
    assert by_kind["respond"].reused == 2 and by_kind["pool"].computed == 2
    assert "teacher" in by_kind["pool"].why
    respond_steps = [s for s in _lines(again.out_dir / "trace.jsonl")[0]["steps"] if s["stage"] == "respond"]
    assert respond_steps[0]["teacher"] == "a"  # every step that called a teacher names it


def test_a_stage_naming_an_unknown_teacher_is_one_line_naming_the_key(project):
    path = _pipeline(project, "teachers:\n  a: {model: m}\nstages:\n  - respond: {teacher: nobody}\n")
    with pytest.raises(UserError, match=r"stages\.respond\.teacher: no teacher named 'nobody' \(named teachers: a\)"):
        run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o", limit=1), log=lambda _: None)
    bad = _pipeline(project, "teachers:\n  default: {model: m}\nstages:\n  - respond: {}\n", name="bad")
    with pytest.raises(UserError, match=r"teachers\.default: the name 'default' is the pipeline's teacher"):
        load_pipeline(bad)
    assert not (project / "o").exists()


def test_named_teachers_are_set_from_the_command_line_and_loaded_only_when_called(project):
    from synthforge.teachers.factory import teacher_identity

    body = "teachers:\n  a: {backend: openai, model: m, openai: {base_url: 'http://127.0.0.1:9/v1'}}\n"
    path = _pipeline(project, body + "stages:\n  - respond: {teacher: a}\n")
    spec = load_pipeline(path, ["teachers.a.model=other", "teachers.a.batch_size=4"])
    assert spec.teachers["a"].model == "other" and spec.teachers["a"].batch_size == 4
    same = ScriptedTeacher(lambda c: "an answer", identity=teacher_identity(spec.teachers["a"]))
    run_pipeline(spec, RunOptions(out_dir=project / "o", limit=1), log=lambda _: None, teachers={"a": same})
    # every stage cached: teacher a (nothing listens at its URL) is never connected
    cached = run_pipeline(spec, RunOptions(out_dir=project / "o", limit=1), log=lambda _: None)
    assert cached.reports[0].reused == 1 and cached.manifest["teachers"]["a"]["settings"]["model"] == "other"


def test_per_record_draws_members_by_weight_reproducibly(project):
    body = """stages:
  - pool:
      per_record: 2
      members: [{name: x}, {name: y, weight: 100.0}, {name: z, system: "z"}]
export: {sft: false, dpo: false}
"""
    path = _pipeline(project, body)
    first = run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o", limit=6), teacher=_writer("T"))
    drawn = [[c["member"] for c in r["candidates"]] for r in _lines(first.out_dir / "trace.jsonl")]
    assert all(len(d) == 2 and "y" in d for d in drawn)  # weight 100 of 102: drawn every time (seeded)
    again = run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "p", limit=6), teacher=_writer("T"))
    assert [[c["member"] for c in r["candidates"]] for r in _lines(again.out_dir / "trace.jsonl")] == drawn


def _ultrafeedback(project, rater, *overrides, out="u", limit=3):
    spec = load_pipeline(project / "pipelines" / "ultrafeedback.yaml", ["seeds.path=seeds/red-team.jsonl", *overrides])
    return run_pipeline(spec, RunOptions(out_dir=project / out, limit=limit), teacher=rater, log=lambda _: None)


def _pool_and_rater(scores: dict[str, float]) -> ScriptedTeacher:
    """The built-in pipeline's three members answer '<member> answer' (told apart by their system prompts); the
    rater scores each answer ``scores[answer]`` in expectation."""
    rater = _digit_rater(lambda answer: scores[answer])

    def reply(conversation):
        system = conversation[0]["content"] if conversation[0]["role"] == "system" else ""
        if "carefully" in system:
            return "careful answer"
        return "loose answer" if "one or two" in system else "plain answer"

    rater.reply = reply
    return rater


def test_ultrafeedback_pairs_the_best_and_worst_rated_answers_by_log_probability_scores(project):
    teacher = _pool_and_rater({"plain answer": 4.5, "careful answer": 3.0, "loose answer": 1.5})
    result = _ultrafeedback(project, teacher, "stages.rate.scoring=logprobs")
    rows = _lines(result.out_dir / "dpo.jsonl")
    assert len(rows) == 3
    assert all(r["chosen"][-1]["content"] == "plain answer" for r in rows)
    assert all(r["rejected"][-1]["content"] == "loose answer" for r in rows)
    record = _lines(result.out_dir / "trace.jsonl")[0]
    plain = next(c for c in record["candidates"] if c["member"] == "plain")
    assert set(plain["scores"]) == {"helpfulness", "honesty", "instruction-following", "truthfulness"}
    assert all(s == pytest.approx(4.5) for s in plain["scores"].values())
    ratings = [s for s in record["steps"] if s["role"] == "rating"]
    assert len(ratings) == 12 and all(s["method"] == "logprobs" and "probabilities" in s for s in ratings)
    assert record["meta"]["rating"]["margin"] == pytest.approx(3.0)
    assert rows[0]["score_chosen"] == pytest.approx(4.5) and rows[0]["score_rejected"] == pytest.approx(1.5)
    assert (rows[0]["chosen_member"], rows[0]["rejected_member"], rows[0]["chosen_teacher"]) == (
        "plain",
        "loose",
        "default",
    )
    pairing = next(s for s in record["steps"] if s["role"] == "pairing")
    assert pairing["chosen"]["member"] == "plain" and pairing["chosen"]["teacher"] == "default"
    aspects = result.manifest["groups"]["aspect"]["members"]
    assert aspects["honesty"]["rated"] == 9 and aspects["honesty"]["mean_score"] == pytest.approx(3.0)


def test_a_score_tie_goes_to_the_ledger_with_the_scores(project):
    teacher = _pool_and_rater({"plain answer": 3.2, "careful answer": 3.0, "loose answer": 2.9})
    result = _ultrafeedback(project, teacher, "stages.rate.scoring=logprobs", limit=2)
    assert _lines(result.out_dir / "dpo.jsonl") == []
    dropped = _lines(result.out_dir / "dropped.jsonl")
    assert len(dropped) == 2 and all(d["reason"].startswith("score tie: margin 0.30 below 0.5") for d in dropped)
    assert "plain: 3.20" in dropped[0]["reason"]


def test_json_scores_keep_the_rater_s_reasoning_and_text_scores_say_they_were_parsed(project):
    def reply(conversation):
        text = conversation[-1]["content"]
        if "Consider the following conversation" not in text:
            return "an answer" if conversation[0]["role"] == "user" else "another answer"
        score = 5 if "Assistant: an answer" in text else 2
        return json.dumps({"reasoning": "because", "score": score}) if "JSON object" in text else f"Score: {score}/5"

    structured = ScriptedTeacher(reply, capabilities=frozenset({"generate", "structured"}))
    result = _ultrafeedback(project, structured, limit=1)  # auto: json, the teacher constrains output
    record = _lines(result.out_dir / "trace.jsonl")[0]
    ratings = [s for s in record["steps"] if s["role"] == "rating"]
    assert {s["method"] for s in ratings} == {"json"} and all(s["rationale"] == "because" for s in ratings)
    assert record["response"] == "an answer"
    cut = ScriptedTeacher(  # JSON cut at max_new_tokens for the second answer: no score, not its reasoning's digits
        lambda c: '{"reasoning": "3 of 5 steps' if "another answer" in c[-1]["content"] else reply(c),
        capabilities=frozenset({"generate", "structured"}),
    )
    truncated = _ultrafeedback(project, cut, out="c", limit=1)
    assert _lines(truncated.out_dir / "dpo.jsonl") == []  # one rated candidate left: no pair
    aspects = truncated.manifest["groups"]["aspect"]["members"]
    assert aspects["honesty"]["unscored"] == 2 and aspects["honesty"]["mean_score"] == 5.0  # 2 members cut
    notes = next(s["notes"] for s in truncated.manifest["stages"] if s["kind"] == "rate")
    assert any(n.startswith("8 ratings had no readable score") for n in notes)
    plain = ScriptedTeacher(reply, capabilities=frozenset({"generate"}))
    text = _ultrafeedback(project, plain, out="t", limit=1)  # auto: text, the teacher has neither
    ratings = [s for s in _lines(text.out_dir / "trace.jsonl")[0]["steps"] if s["role"] == "rating"]
    assert {s["method"] for s in ratings} == {"text"} and {s["score"] for s in ratings} == {5.0, 2.0}
    notes = next(s["notes"] for s in text.manifest["stages"] if s["kind"] == "rate")
    assert any("parsed from the rater's text" in n for n in notes)


def test_a_rubric_judge_without_log_probabilities_is_refused_at_validation(project):
    plain = ScriptedTeacher(lambda c: "x", capabilities=frozenset({"generate"}))
    with pytest.raises(UserError, match=r"stages\.rate: stage rate needs log-probabilities"):
        _ultrafeedback(project, plain, "stages.rate.scoring=logprobs")


def test_score_readers():
    assert expected_score([math.log(0.5), math.log(0.5), -50.0]).score == pytest.approx(1.5)
    assert parse_json_score('{"reasoning": "ok", "score": 4}', 5) == (4, "ok")
    assert parse_json_score('{"score": 9}', 5) == (None, None) and parse_json_score("4", 5)[0] is None
    assert parse_text_score("Score: 4/5", 5) == 4.0 and parse_text_score("I'd say 3.", 5) == 3.0
    assert parse_text_score("4.5 out of 5", 5) == 5.0 and parse_text_score("none", 5) is None
    assert parse_text_score("10 of them: 2", 5) == 2.0


def test_a_candidate_round_trips_and_records_without_candidates_serialise_as_before():
    record = Record(id="r", prompt="p", candidates=[Candidate("t", "a", "m", {"x": 4.0}, "stop")])
    assert Record.from_dict(record.to_dict()) == record
    assert "candidates" not in Record(id="r", prompt="p").to_dict()
    assert Candidate("t", scores={"x": 4.0, "y": 2.0}).rating == 3.0 and Candidate("t").rating is None


def test_a_member_s_sampling_goes_over_the_pool_s_and_bad_settings_name_the_member(project):
    seen = []
    teacher = ScriptedTeacher(lambda c: "an answer")
    teacher.generate = lambda convs, params: (seen.extend(params), ScriptedTeacher.generate(teacher, convs, params))[1]
    body = """stages:
  - pool:
      sampling: {temperature: 0.5, max_new_tokens: 40}
      members: [{name: x}, {name: y, sampling: {temperature: 1.5}}]
export: {sft: false, dpo: false}
"""
    run_pipeline(load_pipeline(_pipeline(project, body)), RunOptions(out_dir=project / "o", limit=1), teacher=teacher)
    assert [(p.temperature, p.max_new_tokens) for p in seen] == [(0.5, 40), (1.5, 40)]
    for wrong, message in (
        ("{seed: 3}", r"sampling\.seed: not a sampling setting"),
        ("{temperature: -1}", "temperature"),
    ):
        bad = body.replace("{temperature: 1.5}", wrong)
        with pytest.raises(UserError, match=rf"stages\.pool.*{message}"):
            run_pipeline(load_pipeline(_pipeline(project, bad, name="bad")), RunOptions(out_dir=project / "b", limit=1))


def test_the_answer_stage_takes_a_named_teacher_or_a_reference_but_not_both(project):
    body = """teachers:
  student: {model: s}
stages:
  - answer: {teacher: student, label: student}
export: {sft: false, dpo: false}
"""
    result = run_pipeline(
        load_pipeline(_pipeline(project, body)),
        RunOptions(out_dir=project / "o", limit=2),
        log=lambda _: None,
        teachers={"student": _writer("S")},
    )
    records = _lines(result.out_dir / "trace.jsonl")
    assert [r["meta"]["answers"]["student"] for r in records] == ["S answer (none)"] * 2
    assert records[0]["steps"][-1]["teacher"] == "student"
    both = body.replace("{teacher: student, label: student}", "{teacher: student, model: embedded, label: x}")
    with pytest.raises(UserError, match=r"stages\.answer: give model .* or teacher .*, one of them"):
        run_pipeline(load_pipeline(_pipeline(project, both, name="both")), RunOptions(out_dir=project / "b", limit=1))


def test_named_teachers_with_the_same_settings_share_one_teacher_loaded_once(project):
    from synthforge.engine.prepare import prepare
    from synthforge.engine.runner import _lazy_teachers

    body = """teachers:
  a: {backend: openai, model: m, openai: {base_url: 'http://127.0.0.1:9/v1'}}
  b: {backend: openai, model: m, openai: {base_url: 'http://127.0.0.1:9/v1'}}
  c: {backend: openai, model: other, openai: {base_url: 'http://127.0.0.1:9/v1'}}
stages:
  - pool:
      members: [{name: x, teacher: a}, {name: y, teacher: b}, {name: z, teacher: c}]
"""
    prepared = prepare(load_pipeline(_pipeline(project, body)), 1)
    teachers = _lazy_teachers(prepared, ["a", "b", "c"], lambda _: None)
    assert teachers["a"] is teachers["b"] and teachers["c"] is not teachers["a"]


def test_a_pool_over_two_in_process_models(project, tiny_model_dir):
    """Two local models in one pool, first called at once from the pool's threads."""
    body = f"""teachers:
  a: {{model: "{tiny_model_dir}", batch_size: 2, device: cpu}}
  b: {{model: "{tiny_model_dir}", batch_size: 4, device: cpu}}
stages:
  - pool:
      sampling: {{max_new_tokens: 4}}
      members: [{{name: x, teacher: a}}, {{name: y, teacher: b}}]
export: {{sft: false, dpo: false}}
"""
    result = run_pipeline(load_pipeline(_pipeline(project, body)), RunOptions(out_dir=project / "o", limit=2))
    records = _lines(result.out_dir / "trace.jsonl") + [d["record"] for d in _lines(result.out_dir / "dropped.jsonl")]
    assert len(records) == 2 and all(len(r["steps"]) == 2 for r in records)
    assert result.manifest["teachers"]["a"]["identity"]["backend"] == "transformers"


def test_in_process_teachers_load_one_at_a_time(monkeypatch):
    """transformers' loading is not thread-safe (two embedded models loaded at once from a pool's threads failed
    with 'Cannot copy out of meta tensor'): LazyTeacher builds local backends one at a time."""
    import threading
    import time

    from synthforge.teachers import factory
    from synthforge.teachers.config import TeacherSpec

    running, most = [0], [0]
    guard = threading.Lock()

    def build(spec, identity=None):
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with guard:
            running[0] -= 1
        return ScriptedTeacher(lambda c: "x")

    monkeypatch.setattr(factory, "build_teacher", build)
    monkeypatch.setattr(factory, "teacher_identity", lambda spec: {"model": spec.model})
    monkeypatch.setattr(factory, "teacher_capabilities", lambda spec: frozenset({"generate"}))
    monkeypatch.setattr(factory, "requests_in_flight", lambda spec: 1)
    lazy = [factory.LazyTeacher(TeacherSpec(model=f"m{i}")) for i in range(3)]
    threads = [threading.Thread(target=lambda t=t: t.generate) for t in lazy]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(t.loaded for t in lazy) and most[0] == 1


def test_a_jury_of_raters_scores_each_answer_by_their_mean(project):
    low = _digit_rater(lambda answer: 2.0)
    high = _digit_rater(lambda answer: 4.0 if answer == "plain answer" else 3.0)
    sampler = _pool_and_rater({})
    sets = ["teachers.low.model=l", "teachers.high.model=h", "stages.rate.judges=[low, high]"]
    spec = load_pipeline(project / "pipelines" / "ultrafeedback.yaml", ["seeds.path=seeds/red-team.jsonl", *sets])
    options = RunOptions(out_dir=project / "j", limit=1)
    result = run_pipeline(spec, options, teacher=sampler, teachers={"low": low, "high": high}, log=lambda _: None)
    dropped = [d["record"] for d in _lines(result.out_dir / "dropped.jsonl")]
    record = (_lines(result.out_dir / "trace.jsonl") + dropped)[0]
    plain = next(c for c in record["candidates"] if c["member"] == "plain")
    assert all(score == pytest.approx(3.0) for score in plain["scores"].values())  # (2 + 4) / 2
    ratings = [s for s in record["steps"] if s["role"] == "rating"]
    assert len(ratings) == 24 and {s["teacher"] for s in ratings} == {"low", "high"}
    assert {s["method"] for s in ratings} == {"logprobs"}  # auto: what both raters can do


def test_the_cost_of_a_run_by_stage_and_teacher_from_a_price_table(project, capsys):
    """Prices per model; each step's usage priced by the teacher it names; batch mode takes the discount off;
    a model without a price is counted as unpriced tokens; --dry-run estimates before anything runs."""
    from synthforge.teachers.base import Completion

    body = """teachers:
  cheap: {backend: openai, model: small, openai: {base_url: 'http://127.0.0.1:9/v1', batch: true}}
  free: {backend: openai, model: unpriced, openai: {base_url: 'http://127.0.0.1:9/v1'}}
prices:
  m: {input: 2.0, output: 10.0}
  small: {input: 1.0, output: 4.0, batch_discount: 0.5}
stages:
  - respond: {}
  - pool:
      members: [{name: x, teacher: cheap}, {name: y, teacher: free}]
export: {sft: false, dpo: false}
"""
    used = lambda c: Completion("an answer", "stop", 1000, 100)  # noqa: E731
    path = _pipeline(project, body)
    teachers = {"cheap": ScriptedTeacher(used), "free": ScriptedTeacher(used)}
    result = run_pipeline(
        load_pipeline(path),
        RunOptions(out_dir=project / "o", limit=2),
        teacher=ScriptedTeacher(used),
        teachers=teachers,
        log=lambda _: None,
    )
    cost = result.manifest["cost"]
    # respond: 2 x (1000 x 2 + 100 x 10) / 1e6; pool: cheap 2 x (1000 x 1 + 100 x 4) / 1e6 x 0.5, free unpriced
    assert cost["by_stage"]["respond"]["usd"] == pytest.approx(0.006)
    assert cost["by_stage"]["pool"]["usd"] == pytest.approx(0.0014) and cost["unpriced_tokens"] == 2200
    assert cost["total_usd"] == pytest.approx(0.0074)
    assert "Cost of the teacher calls: $0.0074" in (result.out_dir / "README.md").read_text()
    report = (result.out_dir / "report.html").read_text()
    assert "<th>cost</th><td>$0.0074</td><th>unpriced tokens</th><td>2200</td>" in report
    assert "<td>0.0060</td>" in report and "<td>0.0014</td>" in report  # the stage table's cost column
    from tests.conftest import run_cli

    code, out, _ = run_cli(["generate", str(path), "--dry-run", "--limit", "4"], capsys)
    assert code == 0 and "estimated cost: at most about $" in out
    with pytest.raises(UserError, match=r"prices\.m: .*batch_discount must be in \[0, 1\)"):
        load_pipeline(path, ["prices.m.batch_discount=1.5"])


def test_the_dry_run_s_cost_bound_counts_every_answer_a_stage_may_ask_for(project):
    """Calls by role as each stage declares them (samples, rounds, both orders, members, aspects, jurors), answers
    at max_new_tokens, upstream model text at the largest max_new_tokens so far; the bound's arithmetic checked
    by hand on a respond + pool pipeline."""
    from synthforge.engine.costs import estimate
    from synthforge.engine.prepare import prepare, stage_calls

    body = """teachers:
  cheap: {backend: openai, model: small, openai: {base_url: 'http://127.0.0.1:9/v1', batch: true}}
prices:
  m: {input: 2.0, output: 10.0}
  small: {input: 1.0, output: 4.0, batch_discount: 0.5}
stages:
  - respond: {sampling: {max_new_tokens: 100, n: 2}}
  - pool:
      members: [{name: x, teacher: cheap}, {name: y, teacher: cheap, sampling: {n: 3}}]
      sampling: {max_new_tokens: 50}
  - rate: {rubric: ultrafeedback, scoring: json, sampling: {max_new_tokens: 20}}
  - critique_revise: {rounds: 2, sampling: {max_new_tokens: 200}}
  - judge: {principles: 2, sampling: {max_new_tokens: 30}}
export: {sft: false, dpo: false}
"""
    spec = load_pipeline(_pipeline(project, body))
    prepared = prepare(spec, 4)
    respond, pool, rate, revise, judge = calls = stage_calls(prepared)
    assert respond.calls == {"response": 8} and pool.calls == {"candidate · x": 4 * 2 * 3}  # 2 members, n up to 3
    aspects = prepared.stages[2].aspects
    assert list(rate.calls.values()) == [4 * 6 * len(aspects)] and len(aspects) > 1  # each aspect of 6 candidates
    assert revise.calls == {"critique": 8, "revision": 8} and revise.placeholders["revision"] >= 2
    assert judge.calls == {"samples": 8, "judgement": 4 * 2 * 2, "answer": 0}  # two principles, both orders
    cost, unpriced = estimate(spec, calls[:2])
    tokens = {s.stage: {r: s.prompt_tokens[r] + s.placeholders[r] * 100 for r in s.calls} for s in calls[:2]}
    assert cost == pytest.approx(
        (tokens["respond"]["response"] * 8 * 2.0 + 100 * 8 * 10.0) / 1e6
        + (tokens["pool"]["candidate · x"] * 24 * 1.0 + 50 * 24 * 4.0) / 1e6 * 0.5  # batch mode: half
    )
    assert unpriced == 0 and respond.placeholders["response"] == 0
    first = prepared.records[0]  # without a tokenizer, 4 characters a token; with one, as the teacher counts
    shown = [conv for role, conv in prepared.stages[0].preview(first)]
    assert stage_calls(prepare(spec, 1))[0].prompt_tokens["response"] == sum(len(m["content"]) for m in shown[0]) / 4
    counted = stage_calls(prepare(spec, 1), count=lambda conv: 7.0)[0]
    assert counted.prompt_tokens == {"response": 7.0}


def test_a_spent_budget_and_a_fresh_run_cancel_a_batch_mode_teacher_s_running_batches(project):
    from synthforge.errors import TokenBudgetSpent
    from synthforge.teachers.base import Completion

    class BatchTeacher(ScriptedTeacher):
        def __init__(self):
            super().__init__(
                lambda c: Completion("an answer", "stop", 10, 10), capabilities=frozenset({"generate", "batch"})
            )
            self.cancelled = self.forgotten = self.released = 0
            self.journals = []

        def keep_log(self, journal, live):
            self.journals.append((journal, live))
            return 0

        def release_batches(self):
            self.released += 1
            return 0

        def outstanding(self):
            return []

        def cancel_outstanding(self):
            self.cancelled += 1
            return [{"id": "batch_1"}]

        def forget_batches(self):
            self.forgotten += 1
            return 1

    path = _pipeline(project, "stages:\n  - respond: {}\nexport: {sft: true, dpo: false}\n")
    teacher = BatchTeacher()
    with pytest.raises(TokenBudgetSpent):
        run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o", limit=3, max_tokens=5), teacher=teacher)
    assert teacher.cancelled == 1 and teacher.forgotten == teacher.released == 0  # unfinished: nothing released
    ((journal, live),) = teacher.journals  # the run's log, and the scope of its one stage's requests
    assert journal.events() == [] and [s.split("-")[0] for s in live] == ["respond"]
    run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o", limit=3, fresh=True), teacher=teacher)
    assert teacher.forgotten == 1 and teacher.released == 1  # saved: what its batches left is released
    assert len(teacher.journals) == 3  # the run's log, then a new one after --fresh removed the checkpoints


def test_the_dry_run_counts_prompts_with_the_teacher_s_own_tokenizer_where_it_has_one(project, tiny_model_dir):
    from synthforge.engine.costs import prompt_counter
    from synthforge.models import load_tokenizer

    spec = load_pipeline(_pipeline(project, "stages:\n  - respond: {}\nexport: {sft: true, dpo: false}\n"))
    count, counted = prompt_counter(spec)  # model "m": no tokenizer to be had here
    assert count is None and "4 characters a token" in counted
    local = load_pipeline(_pipeline(project, "stages:\n  - respond: {}\n"), [f"teacher.model={tiny_model_dir}"])
    count, counted = prompt_counter(local)
    conversation = [{"role": "user", "content": "How do tides work?"}]
    tokenizer = load_tokenizer(str(tiny_model_dir))
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert count(conversation) == len(tokenizer(text, add_special_tokens=False)["input_ids"]) > 18 / 4
    assert "tokenizer and chat template" in counted


def test_the_cost_bound_counts_a_grown_dialogue_s_last_turn_for_every_turn(project):
    from synthforge.engine.prepare import prepare, stage_calls

    body = "stages:\n  - respond: {}\n  - grow_dialogue: {turns: TURNS}\nexport: {sft: true, dpo: false}\n"
    shown = {}
    for turns in (1, 3):
        spec = load_pipeline(_pipeline(project, body.replace("TURNS", str(turns))))
        shown[turns] = stage_calls(prepare(spec, 2))[1]
    assert shown[3].calls == {"user turn": 6, "response": 6} and shown[1].calls == {"user turn": 2, "response": 2}
    for role in ("user turn", "response"):  # each call of 3 turns carries 2 earlier user turns and 2 answers more
        assert shown[3].placeholders[role] == shown[1].placeholders[role] + 4
