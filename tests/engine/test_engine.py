"""The engine on the tiny teacher: outputs and their formats, checkpoint reuse, exact invalidation, drops."""

from __future__ import annotations

import json

import pytest

from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.errors import TeacherError
from synthforge.teachers.scripted import ScriptedTeacher
from tests.conftest import write_pipeline


def CountingTeacher(inner, fail_on: str | None = None, fail_times: int = 10**9) -> ScriptedTeacher:  # noqa: N802
    """A real teacher, counted; a batch holding ``fail_on`` in its first message fails ``fail_times`` times."""
    left = [fail_times]

    def fail(conversations):
        if fail_on and any(fail_on in c[0]["content"] for c in conversations) and left[0] > 0:
            left[0] -= 1
            return TeacherError("backend exploded")
        return None

    return ScriptedTeacher(inner=inner, fail=fail)


def _run(project, teacher, limit=6, **options):
    spec = load_pipeline(project / "pipelines" / "tiny-cai.yaml")
    return run_pipeline(
        spec, RunOptions(out_dir=project / "out", limit=limit, **options), teacher=teacher, log=lambda _: None
    )


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_run_writes_trl_formats_trace_and_manifest(project, tiny_teacher, tiny_model_dir):
    write_pipeline(project, tiny_model_dir)
    result = _run(project, CountingTeacher(tiny_teacher))
    out = result.out_dir
    sft, dpo, trace = _read(out / "sft.jsonl"), _read(out / "dpo.jsonl"), _read(out / "trace.jsonl")
    assert len(trace) == 6 and sft and dpo
    for row in sft:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    for row in dpo:
        assert row["prompt"][0]["role"] == "user"
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
    for record in trace:
        roles = [s["role"] for s in record["steps"]]
        assert roles == ["response", "critique", "revision"]
        assert record["steps"][1]["principle"]
        assert all({"finish_reason", "prompt_tokens", "completion_tokens"} <= set(s) for s in record["steps"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["teacher"]["backend"] == "transformers" and manifest["seed"] == 7
    assert any(path.endswith("harmless.txt") for path in manifest["files"])
    assert any(path.endswith("critique.j2") for path in manifest["files"])
    assert any(path.endswith("red-team.jsonl") for path in manifest["files"])
    assert {"torch", "transformers", "trl", "synthforge"} <= set(manifest["versions"])
    assert manifest["stages"][1]["config"]["rounds"] == 1
    assert [s["records"] for s in manifest["funnel"]][0] == 6
    assert (out / "README.md").read_text().startswith("---\nlicense: apache-2.0")


def test_rerun_reuses_every_stage_without_teacher_calls(project, tiny_teacher, tiny_model_dir):
    write_pipeline(project, tiny_model_dir)
    first = CountingTeacher(tiny_teacher)
    _run(project, first)
    before = (project / "out" / "sft.jsonl").read_bytes()
    second = CountingTeacher(tiny_teacher)
    result = _run(project, second)
    assert first.calls == 6 * 3 and second.calls == 0
    assert [r.reused for r in result.reports] == [6, 6]
    assert (project / "out" / "sft.jsonl").read_bytes() == before


def test_editing_a_template_recomputes_only_dependent_stages(project, tiny_teacher, tiny_model_dir):
    write_pipeline(project, tiny_model_dir)
    _run(project, CountingTeacher(tiny_teacher))
    critique = project / "prompts" / "critique.j2"
    critique.write_text(critique.read_text() + "\nBe brief.\n")
    counting = CountingTeacher(tiny_teacher)
    result = _run(project, counting)
    respond, revise = result.reports
    assert (respond.reused, respond.computed) == (6, 0)
    assert (revise.reused, revise.computed) == (0, 6)
    assert "templates" in revise.why
    assert counting.calls == 6 * 2


def test_fresh_and_seed_change_recompute(project, tiny_teacher, tiny_model_dir):
    write_pipeline(project, tiny_model_dir)
    _run(project, CountingTeacher(tiny_teacher), limit=2)
    counting = CountingTeacher(tiny_teacher)
    _run(project, counting, limit=2, fresh=True)
    assert counting.calls == 2 * 3


def test_editing_a_constitution_recomputes_only_the_stages_that_use_it(project, tiny_teacher, tiny_model_dir):
    write_pipeline(project, tiny_model_dir)
    _run(project, CountingTeacher(tiny_teacher), limit=2)
    harmless = project / "constitutions" / "harmless.txt"
    harmless.write_text(harmless.read_text() + "\n[be-brief]\ncritique: Is it long?\nrevision: Make it brief.\n")
    counting = CountingTeacher(tiny_teacher)
    respond, revise = _run(project, counting, limit=2).reports
    assert (respond.reused, respond.computed) == (2, 0)
    assert (revise.reused, revise.computed) == (0, 2) and "constitution" in revise.why
    assert counting.calls == 2 * 2


def test_a_seed_change_recomputes_every_stage(project, tiny_teacher, tiny_model_dir):
    path = write_pipeline(project, tiny_model_dir)
    _run(project, CountingTeacher(tiny_teacher), limit=2)
    path.write_text(path.read_text().replace("seed: 7", "seed: 8"))
    counting = CountingTeacher(tiny_teacher)
    result = _run(project, counting, limit=2)
    assert [(r.reused, r.computed) for r in result.reports] == [(0, 2), (0, 2)]
    assert counting.calls == 2 * 3


def test_batch_size_is_not_part_of_the_cache_key(project, tiny_teacher, tiny_model_dir):
    path = write_pipeline(project, tiny_model_dir)
    _run(project, CountingTeacher(tiny_teacher), limit=2)
    path.write_text(path.read_text().replace("batch_size: 4", "batch_size: 1"))
    counting = CountingTeacher(tiny_teacher)
    result = _run(project, counting, limit=2)
    assert [(r.reused, r.computed) for r in result.reports] == [(2, 0), (2, 0)] and counting.calls == 0


def test_more_seeds_compute_only_the_new_records(project, tiny_teacher, tiny_model_dir):
    write_pipeline(project, tiny_model_dir)
    _run(project, CountingTeacher(tiny_teacher), limit=3)
    counting = CountingTeacher(tiny_teacher)
    result = _run(project, counting, limit=5)
    assert [r.computed for r in result.reports] == [2, 2]
    assert counting.calls == 2 * 3


def test_same_inputs_give_byte_identical_outputs(project, tiny_teacher, tiny_model_dir, tmp_path):
    write_pipeline(project, tiny_model_dir)
    spec = load_pipeline(project / "pipelines" / "tiny-cai.yaml")
    for name in ("a", "b"):
        run_pipeline(spec, RunOptions(out_dir=tmp_path / name, limit=5), teacher=tiny_teacher, log=lambda _: None)
    for file in ("sft.jsonl", "dpo.jsonl", "trace.jsonl"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_failing_record_is_retried_then_dropped_with_reason(project, tiny_teacher, tiny_model_dir):
    write_pipeline(project, tiny_model_dir)
    spec = load_pipeline(project / "pipelines" / "tiny-cai.yaml")
    victim = "hotwire"  # the 4th seed prompt
    teacher = CountingTeacher(tiny_teacher, fail_on=victim)
    result = run_pipeline(spec, RunOptions(out_dir=project / "out", limit=6), teacher=teacher, log=lambda _: None)
    dropped = _read(result.out_dir / "dropped.jsonl")
    assert len(dropped) == 1
    assert dropped[0]["stage"] == "respond" and victim in dropped[0]["record"]["prompt"]
    assert "teacher error after 3 attempt(s) alone: backend exploded" in dropped[0]["reason"]
    assert len(_read(result.out_dir / "trace.jsonl")) == 5
    assert result.manifest["counts"]["dropped"] == 1


def test_transient_failure_is_retried_and_loses_nothing(project, tiny_teacher, tiny_model_dir):
    write_pipeline(project, tiny_model_dir)
    teacher = CountingTeacher(tiny_teacher, fail_on="hotwire", fail_times=1)
    result = _run(project, teacher)
    assert result.manifest["counts"]["dropped"] == 0 and result.manifest["counts"]["trace"] == 6


@pytest.mark.parametrize("rounds", [2, 3])
def test_rounds_use_distinct_principles_per_record(project, tiny_teacher, tiny_model_dir, rounds):
    write_pipeline(project, tiny_model_dir, rounds=str(rounds))
    result = _run(project, CountingTeacher(tiny_teacher), limit=3)
    assert len(_read(result.out_dir / "trace.jsonl")) == 3
    for record in _read(result.out_dir / "trace.jsonl"):
        principles = [s["principle"] for s in record["steps"] if s["role"] == "critique"]
        assert len(principles) == rounds and len(set(principles)) == rounds
        assert record["rejected"] == record["steps"][0]["text"]


def test_truncated_outputs_can_be_dropped_into_the_ledger(project, tiny_teacher, tiny_model_dir):
    write_pipeline(project, tiny_model_dir)  # the random model rarely stops before max_new_tokens
    spec = load_pipeline(project / "pipelines" / "tiny-cai.yaml", ["stages.respond.drop_truncated=true"])
    result = run_pipeline(spec, RunOptions(out_dir=project / "out", limit=3), teacher=tiny_teacher, log=lambda _: None)
    dropped = _read(result.out_dir / "dropped.jsonl")
    assert dropped and all(d["reason"] == "truncated response (hit max_new_tokens)" for d in dropped)
    assert all(d["record"]["steps"][0]["finish_reason"] == "length" for d in dropped)
    kept = _read(result.out_dir / "trace.jsonl")
    assert all(r["steps"][0]["finish_reason"] == "stop" for r in kept)
    assert len(kept) + len(dropped) == 3
    assert result.manifest["funnel"][1] == {"step": "respond", "records": len(kept)}


@pytest.mark.parametrize(
    ("stages", "fragment"),
    [
        ("  - filter_pairs: {}\n  - respond: {}\n", "stages.filter_pairs: reads 'response', which nothing before it"),
        ("  - respond: {}\n  - filter_pairs: {}\n", "stages.filter_pairs: reads 'rejected'"),
        ("  - minhash_dedup: {key: both}\n", "reads 'response'"),
        ("  - filter_length: {response: {max: 10}}\n", "reads 'response'"),
    ],
)
def test_a_stage_reading_a_field_nothing_writes_is_a_spec_error(project, tiny_model_dir, stages, fragment):
    from synthforge.engine.prepare import prepare
    from synthforge.settings import SpecError

    path = project / "pipelines" / "flow.yaml"
    path.write_text(f"name: flow\nseeds: {{path: seeds/red-team.jsonl}}\nstages:\n{stages}", encoding="utf-8")
    with pytest.raises(SpecError, match=fragment.replace("(", r"\(")):
        prepare(load_pipeline(path), limit=2, teacher=CountingTeacher(None))
    ok = "  - respond: {}\n  - critique_revise: {}\n  - filter_pairs: {}\n  - minhash_dedup: {key: both}\n"
    path.write_text(f"name: flow\nseeds: {{path: seeds/red-team.jsonl}}\nstages:\n{ok}", encoding="utf-8")
    prepare(load_pipeline(path), limit=2, teacher=CountingTeacher(None))


def test_engine_ray_shorthand_and_mapping(project, tiny_model_dir):
    from synthforge.settings import SpecError

    path = write_pipeline(project, tiny_model_dir)
    text = path.read_text()
    path.write_text(text + "engine: ray\n")
    assert load_pipeline(path).engine.kind == "ray"
    path.write_text(text + "engine: {kind: ray, replicas: 3, num_cpus: 2}\n")
    engine = load_pipeline(path).engine
    assert (engine.kind, engine.options.replicas, engine.options.num_cpus) == ("ray", 3, 2)
    path.write_text(text + "engine: rey\n")
    with pytest.raises(SpecError, match="engine: kind must be 'local' or 'ray'"):
        load_pipeline(path)
