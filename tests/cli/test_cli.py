"""CLI: help text, and every bad input gives one line naming the file/key, exit 2, and writes nothing."""

from __future__ import annotations

import json

import pytest

from synthforge.cli.main import main
from tests.conftest import write_pipeline


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


@pytest.fixture
def in_project(project, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(project)
    (project / "outputs").mkdir()
    write_pipeline(project, tiny_model_dir)
    return project


def _assert_user_error(code, err, outputs, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]
    assert list(outputs.iterdir()) == []


def test_help_explains_commands(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0 and "generate" in out and "constitution" in out
    code, out, _ = run_cli(["generate", "--help"], capsys)
    assert code == 0 and "--limit" in out and "--teacher" in out and "sft.jsonl" in out


def test_missing_pipeline_file(in_project, capsys):
    code, _, err = run_cli(["generate", "pipelines/nope.yaml"], capsys)
    _assert_user_error(code, err, in_project / "outputs", "nope.yaml", "not found")


def test_malformed_yaml_names_line(in_project, capsys):
    (in_project / "pipelines" / "bad.yaml").write_text("name: x\nstages: [\n  - respond: {\n", encoding="utf-8")
    code, _, err = run_cli(["generate", "pipelines/bad.yaml"], capsys)
    _assert_user_error(code, err, in_project / "outputs", "bad.yaml:", "invalid YAML")


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("colour=blue", ["colour: unknown key"]),
        ("stages.critique_revise.roundz=2", ["stages.critique_revise.roundz: unknown setting"]),
        ("stages.critique_revise.rounds=two", ["stages.critique_revise.rounds: expected int"]),
        ("stages.respond.sampling.temperature=hot", ["stages.respond.sampling.temperature: expected float"]),
        ("stages.respond.sampling.top_p=7", ["stages.respond.sampling", "top_p"]),
        ("teacher.batch_size=[1]", ["teacher.batch_size: expected int"]),
        ("seeds.path=missing.jsonl", ["seeds.path: file not found"]),
        ("stages.critique_revise.constitution=nonexistent", ["constitution 'nonexistent' not found"]),
        ("stages.respond.template=nonexistent", ["prompt template 'nonexistent' not found"]),
        ("stages.nosuchstage.x=1", ["no stage named 'nosuchstage'"]),
    ],
)
def test_bad_keys_and_values_name_the_key(in_project, capsys, override, fragments):
    code, _, err = run_cli(["generate", "pipelines/tiny-cai.yaml", "--set", override], capsys)
    _assert_user_error(code, err, in_project / "outputs", *fragments)


def test_unknown_stage_kind(in_project, capsys):
    path = in_project / "pipelines" / "tiny-cai.yaml"
    path.write_text(path.read_text().replace("- respond:", "- reply:"), encoding="utf-8")
    code, _, err = run_cli(["generate", str(path)], capsys)
    _assert_user_error(code, err, in_project / "outputs", "stages[0]: unknown stage 'reply'")


def test_constitution_without_revision_names_file_and_line(in_project, capsys):
    path = in_project / "constitutions" / "harmless.txt"
    text = path.read_text().replace("revision: Rewrite the response without insults", "# gone")
    path.write_text(text, encoding="utf-8")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t == "[toxicity]")
    code, _, err = run_cli(["generate", "pipelines/tiny-cai.yaml"], capsys)
    _assert_user_error(code, err, in_project / "outputs", f"harmless.txt:{line}:", "no revision request")
    code, _, err = run_cli(["constitution", "check", str(path)], capsys)
    assert code == 2 and f"harmless.txt:{line}:" in err


def test_empty_seeds_file(in_project, capsys):
    (in_project / "pipelines" / "seeds" / "red-team.jsonl").write_text("\n\n", encoding="utf-8")
    code, _, err = run_cli(["generate", "pipelines/tiny-cai.yaml"], capsys)
    _assert_user_error(code, err, in_project / "outputs", "red-team.jsonl", "no prompts")


def test_bad_seed_line(in_project, capsys):
    (in_project / "pipelines" / "seeds" / "red-team.jsonl").write_text('{"prompt": "ok"}\n{"text": 1}\n')
    code, _, err = run_cli(["generate", "pipelines/tiny-cai.yaml"], capsys)
    _assert_user_error(code, err, in_project / "outputs", "red-team.jsonl:2:", "'prompt'")


def test_template_with_undefined_variable(in_project, capsys):
    (in_project / "prompts" / "revise.j2").write_text("{{ principle.revision }} {{ reponse }}\n")
    code, _, err = run_cli(["generate", "pipelines/tiny-cai.yaml"], capsys)
    _assert_user_error(code, err, in_project / "outputs", "revise.j2", "undefined variable", "reponse")


def test_teacher_path_that_does_not_exist(in_project, capsys):
    code, _, err = run_cli(["generate", "pipelines/tiny-cai.yaml", "--teacher", "./models/missing"], capsys)
    _assert_user_error(code, err, in_project / "outputs", "teacher './models/missing' not found")


def test_dry_run_renders_prompts_without_a_model(in_project, capsys):
    code, out, _ = run_cli(["generate", "pipelines/tiny-cai.yaml", "--dry-run", "--teacher", "./missing"], capsys)
    assert code == 0
    assert "=== critique_revise · revision ===" in out and "<<critique from upstream>>" in out
    assert "How can I get into my neighbour's house" in out
    assert list((in_project / "outputs").iterdir()) == []


def test_generate_writes_run_and_summary(in_project, capsys):
    code, out, _ = run_cli(["generate", "pipelines/tiny-cai.yaml", "--limit", "3", "--seed", "11"], capsys)
    assert code == 0
    manifest = json.loads((in_project / "outputs" / "tiny-cai" / "manifest.json").read_text())
    counts = manifest["counts"]
    kept = counts["trace"]
    assert f"funnel: seeds 3 → respond {kept} → critique_revise {kept} → kept (sft) {counts['sft']}" in out
    assert manifest["seed"] == 11 and kept + counts["dropped"] == 3  # the random model may answer with EOS


def test_constitution_convert_and_check(tmp_path, capsys):
    from tests.conftest import SHARED

    source = SHARED / "constitution_anthropic.json"
    if not source.is_file():
        pytest.skip(f"shared test data missing: {source}")
    out = tmp_path / "anthropic.txt"
    code, stdout, _ = run_cli(["constitution", "convert", str(source), "-o", str(out)], capsys)
    assert code == 0 and "16 principles, 4 few-shot examples" in stdout
    code, stdout, _ = run_cli(["constitution", "check", str(out)], capsys)
    assert code == 0 and "ok, 16 principles, 4 few-shot examples" in stdout


def test_constitution_check_lists_every_problem(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("[a]\ncritique: x\n[b]\nrevision: y\n")
    code, _, err = run_cli(["constitution", "check", str(bad)], capsys)
    assert code == 2
    assert err.splitlines() == [
        f"{bad}:1: principle [a] has no revision request ('revision: ...')",
        f"{bad}:3: principle [b] has no critique request ('critique: ...')",
    ]


def test_a_spent_token_budget_exits_3_and_a_rerun_resumes(in_project, capsys):
    """--max-tokens from the CLI: the batches that finished are kept, exit code 3, and the same command resumes."""
    args = ["generate", "pipelines/tiny-cai.yaml", "--limit", "4", "--no-progress", "--out", "out"]
    code, _, err = run_cli([*args, "--max-tokens", "10"], capsys)
    assert code == 3 and "budget" in err.lower() and "Traceback" not in err
    assert not (in_project / "out" / "manifest.json").exists()  # nothing exported from a part of the run
    code, _, _ = run_cli(args, capsys)
    assert code == 0 and (in_project / "out" / "manifest.json").is_file()


def test_progress_bars_stay_quiet_off_a_terminal(in_project, capsys):
    """stderr is not a terminal here: no bar is drawn, only the run's lines."""
    code, _, err = run_cli(["generate", "pipelines/tiny-cai.yaml", "--limit", "2", "--out", "out"], capsys)
    assert code == 0 and "\r" not in err and "rec/s" not in err and "it/s" not in err


def test_constitution_show_prints_each_principle(in_project, capsys):
    code, out, _ = run_cli(["constitution", "show", "constitutions/harmless.txt"], capsys)
    assert code == 0
    names = [
        line[1:-1]
        for line in (in_project / "constitutions" / "harmless.txt").read_text().splitlines()
        if line.startswith("[") and line.endswith("]")
    ]
    assert names and all(name in out for name in names)


def test_a_fully_cached_rerun_loads_no_model(in_project, capsys, monkeypatch):
    args = ["generate", "pipelines/tiny-cai.yaml", "--limit", "2", "--no-progress", "--out", "out"]
    assert run_cli(args, capsys)[0] == 0
    import synthforge.teachers.factory as factory

    monkeypatch.setattr(factory, "build_teacher", lambda *a, **k: pytest.fail("a model was loaded"))
    sft = (in_project / "out" / "sft.jsonl").read_bytes()
    assert run_cli(args, capsys)[0] == 0 and (in_project / "out" / "sft.jsonl").read_bytes() == sft
