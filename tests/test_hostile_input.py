"""Careless and hostile input: nothing of the user's is overwritten or deleted, no template runs code, every
bad file or value is one line naming it with exit code 2, and a run directory is one consistent unit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthforge.cli.main import main
from synthforge.engine.rundir import run_directory
from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.errors import StageFailed
from tests.conftest import write_pipeline


def run_cli(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def cai(project, monkeypatch, tiny_model_dir) -> Path:
    """The tiny CAI pipeline in a project directory that is also the working directory."""
    monkeypatch.chdir(project)
    return write_pipeline(project, tiny_model_dir, max_new_tokens=4)


def generate(pipeline: Path, out: Path, capsys, *extra) -> tuple[int, str, str]:
    return run_cli(["generate", pipeline, "--out", out, "--limit", "3", "--no-progress", *extra], capsys)


# -- data loss -----------------------------------------------------------------------------------------
def test_out_never_writes_over_a_directory_that_is_not_a_run(cai, capsys):
    mine = cai.parent.parent / "my-data"
    mine.mkdir()
    (mine / "README.md").write_text("my notes\n")
    (mine / "sft.jsonl").write_text('{"mine": true}\n')
    code, _, err = generate(cai, mine, capsys)
    one_line_error(code, err, str(mine), "did not write")
    assert (mine / "README.md").read_text() == "my notes\n" and (mine / "sft.jsonl").read_text() == '{"mine": true}\n'
    code, _, err = generate(cai, mine, capsys, "--fresh")
    one_line_error(code, err, str(mine))


def test_fresh_removes_only_what_the_run_wrote(cai, capsys):
    out = cai.parent.parent / "run"
    assert generate(cai, out, capsys)[0] == 0
    keep = out / "checkpoints" / "model.safetensors"
    keep.write_bytes(b"not ours")
    (out / "student-sft").mkdir()
    written = sorted(p.name for p in (out / "checkpoints").iterdir() if p != keep)
    assert written
    assert generate(cai, out, capsys, "--fresh")[0] == 0
    assert keep.read_bytes() == b"not ours" and (out / "student-sft").is_dir()
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p != keep) == written  # recomputed


def test_a_run_directory_from_an_earlier_version_is_still_ours(cai, capsys):
    out = cai.parent.parent / "old-run"
    assert generate(cai, out, capsys)[0] == 0
    (out / ".synthforge-run").unlink()  # runs made before the marker existed have only their manifest
    assert generate(cai, out, capsys)[0] == 0


@pytest.mark.parametrize("name", ["../../escape", "..", "/etc/x"])
def test_a_pipeline_name_that_would_escape_outputs_is_a_spec_error(cai, capsys, name):
    cai.write_text(cai.read_text().replace("name: tiny-cai", f"name: {json.dumps(name)}"))
    code, _, err = run_cli(["generate", cai, "--limit", "2"], capsys)
    one_line_error(code, err, "name: expected a name of letters")
    assert not (cai.parent.parent / "outputs").exists()


def test_a_stage_name_that_would_escape_checkpoints_is_a_spec_error(cai, capsys):
    cai.write_text(cai.read_text().replace("  - respond:\n", "  - respond:\n      name: ../../../etc/x\n"))
    code, _, err = run_cli(["generate", cai, "--limit", "2"], capsys)
    one_line_error(code, err, "not a valid stage name")


def test_tilde_in_out_is_the_home_directory(cai, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert generate(cai, "~/runs/tilde", capsys)[0] == 0
    assert (tmp_path / "home" / "runs" / "tilde" / "sft.jsonl").is_file()
    assert not (cai.parent.parent / "~").exists()


def test_an_out_path_under_a_file_is_one_line(cai, capsys):
    blocker = cai.parent.parent / "a-file"
    blocker.write_text("x")
    code, _, err = generate(cai, blocker / "run", capsys)
    one_line_error(code, err, "a-file")


def test_a_second_run_on_a_locked_directory_exits_naming_the_holder(cai, capsys):
    import os

    out = cai.parent.parent / "busy"
    with run_directory(out, "tiny-cai"):
        code, _, err = generate(cai, out, capsys)
        one_line_error(code, err, str(out), f"pid {os.getpid()}")
        code, _, err = generate(cai, out, capsys, "--fresh", "--seed", "9")
        one_line_error(code, err, "another synthforge run")
    assert generate(cai, out, capsys)[0] == 0  # free again once the holder is done


def test_an_interrupted_export_leaves_no_manifest_and_a_rerun_completes_it(cai, monkeypatch, tiny_teacher):
    import synthforge.engine.exporters as exporters

    spec = load_pipeline(cai)
    out = cai.parent.parent / "export"
    run_pipeline(spec, RunOptions(out_dir=out, limit=3), teacher=tiny_teacher, log=lambda _: None)
    before = json.loads((out / "manifest.json").read_text())
    assert set(before["outputs"]) == {"sft.jsonl", "dpo.jsonl", "trace.jsonl", "dropped.jsonl", "README.md"}
    real = exporters.write_jsonl

    def crash_on_dpo(path, rows):
        if path.name == "dpo.jsonl":
            raise KeyboardInterrupt  # stands in for a crash between two files
        return real(path, rows)

    monkeypatch.setattr(exporters, "write_jsonl", crash_on_dpo)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(
            load_pipeline(cai, ["seed=8"]), RunOptions(out_dir=out, limit=3), teacher=tiny_teacher, log=lambda _: None
        )
    assert not (out / "manifest.json").exists()  # the set is visibly incomplete: no stale manifest beside new files
    monkeypatch.setattr(exporters, "write_jsonl", real)
    result = run_pipeline(
        load_pipeline(cai, ["seed=8"]), RunOptions(out_dir=out, limit=3), teacher=tiny_teacher, log=lambda _: None
    )
    from synthforge.hashing import file_sha256

    for name, digest in result.manifest["outputs"].items():
        assert file_sha256(out / name) == digest


def test_training_refuses_a_run_whose_export_did_not_finish(cai, capsys, tiny_model_dir, tiny_teacher):
    out = cai.parent.parent / "half"
    run_pipeline(load_pipeline(cai), RunOptions(out_dir=out, limit=3), teacher=tiny_teacher, log=lambda _: None)
    (out / "manifest.json").unlink()
    code, _, err = run_cli(["train", "sft", "--data", out, "--model", tiny_model_dir, "--max-steps", "1"], capsys)
    one_line_error(code, err, "export did not finish")


def test_a_stage_that_loses_records_stops_the_run(cai, monkeypatch, tiny_teacher):
    from synthforge.stages.minhash_dedup import MinHashDedup

    text = cai.read_text().replace("stages:\n", "stages:\n  - minhash_dedup: {key: prompt}\n")
    cai.write_text(text)
    real = MinHashDedup.process_all
    monkeypatch.setattr(MinHashDedup, "process_all", lambda self, records, *a, **k: real(self, records, *a, **k)[1:])
    with pytest.raises(StageFailed, match="3 records in, but 2 kept"):
        run_pipeline(
            load_pipeline(cai),
            RunOptions(out_dir=cai.parent.parent / "o", limit=3),
            teacher=tiny_teacher,
            log=lambda _: None,
        )


def test_dedup_never_writes_over_its_input(tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "a b c d e f"}\n{"text": "g h i j k l"}\n')
    code, _, err = run_cli(["dedup", data, "--out", data, "--key", "prompt"], capsys)
    one_line_error(code, err, "is the input file")
    drops_named_like_input = tmp_path / "x.dropped.jsonl"
    drops_named_like_input.write_text(data.read_text())
    code, _, err = run_cli(["dedup", drops_named_like_input, "--out", tmp_path / "x.jsonl"], capsys)
    one_line_error(code, err, "is the input file")
    run = tmp_path / "run"
    run.mkdir()
    (run / "sft.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "hi there you"}, {"role": "assistant", "content": "yes"}]}\n'
    )
    (run / "dpo.jsonl").write_text("keep\n")
    code, _, err = run_cli(["dedup", run, "--out", run / "dpo.jsonl"], capsys)
    one_line_error(code, err, "run directory being read")
    assert (run / "dpo.jsonl").read_text() == "keep\n"


# -- executed code -------------------------------------------------------------------------------------
def test_a_template_cannot_run_code_even_in_dry_run(cai, capsys, tmp_path):
    proof = tmp_path / "pwned"
    attack = f'{{{{ cycler.__init__.__globals__.os.popen("touch {proof}").read() }}}}'
    (cai.parent.parent / "prompts" / "respond.j2").write_text(attack + "\n{{ prompt }}\n")
    code, _, err = run_cli(["generate", cai, "--dry-run"], capsys)
    one_line_error(code, err, "respond.j2")
    code, _, err = generate(cai, cai.parent.parent / "o", capsys)
    one_line_error(code, err, "respond.j2")
    assert not proof.exists()


def test_a_template_cannot_include_other_files(cai, capsys):
    (cai.parent.parent / "prompts" / "respond.j2").write_text("{% include '/etc/passwd' %}\n{{ prompt }}\n")
    code, _, err = run_cli(["generate", cai, "--dry-run"], capsys)
    one_line_error(code, err, "respond.j2", "can't include")


# -- tracebacks instead of one line --------------------------------------------------------------------
BINARY = b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary"


@pytest.mark.parametrize("target", ["seeds", "template", "constitution"])
def test_unreadable_text_in_generate_inputs_names_the_file(cai, capsys, target):
    root = cai.parent.parent
    path = {
        "seeds": root / "pipelines" / "seeds" / "red-team.jsonl",
        "template": root / "prompts" / "critique.j2",
        "constitution": root / "constitutions" / "harmless.txt",
    }[target]
    path.write_bytes(b'{"prompt": "ok"}\n' + BINARY)
    code, _, err = generate(cai, cai.parent.parent / "o", capsys)
    one_line_error(code, err, path.name, "not UTF-8")


def test_unreadable_text_in_dedup_and_convert_names_the_file(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(b'{"text": "fine"}\n' + BINARY)
    code, _, err = run_cli(["dedup", rows, "--out", tmp_path / "out.jsonl"], capsys)
    one_line_error(code, err, "rows.jsonl:2", "not UTF-8")
    source = tmp_path / "c.json"
    source.write_bytes(BINARY)
    code, _, err = run_cli(["constitution", "convert", source], capsys)
    one_line_error(code, err, "c.json", "not UTF-8")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ({"constitutions": 5}, "constitutions: expected a list"),
        ({"constitutions": [{"critic": 5, "revision": "r"}]}, "constitutions[0] needs non-empty text"),
        ({"constitutions": []}, "no principles found"),
        ({"constitutions": [{"critic": "c", "revision": "r"}], "system_chat": [["x"]]}, "system_chat[0]"),
        (
            {"a b": {"prompt": ["c"], "edit_request": "r"}, "a-b": {"prompt": ["c"], "edit_request": "r"}},
            "already defined",
        ),
    ],
)
def test_convert_reports_badly_shaped_json_and_never_writes_what_check_rejects(tmp_path, capsys, content, fragment):
    source, out = tmp_path / "c.json", tmp_path / "c.txt"
    source.write_text(json.dumps(content))
    code, _, err = run_cli(["constitution", "convert", source, "-o", out], capsys)
    one_line_error(code, err, fragment)
    assert not out.exists()


def test_convert_into_a_missing_folder_is_one_line(tmp_path, capsys):
    source = tmp_path / "c.json"
    source.write_text(json.dumps({"constitutions": [{"critic": "c", "revision": "r"}]}))
    code, _, err = run_cli(["constitution", "convert", source, "-o", tmp_path / "missing" / "c.txt"], capsys)
    one_line_error(code, err, "does not exist")


def test_dedup_of_an_empty_file_and_a_non_numeric_confidence(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    code, _, err = run_cli(["dedup", empty, "--out", tmp_path / "o.jsonl"], capsys)
    one_line_error(code, err, "empty.jsonl", "no rows")
    rows = tmp_path / "pairs.jsonl"
    rows.write_text('{"text": "a b c d e f g", "confidence": 0.9}\n{"text": "a b c d e f g", "confidence": "high"}\n')
    code, _, err = run_cli(["dedup", rows, "--out", tmp_path / "o.jsonl", "--keep", "confidence"], capsys)
    one_line_error(code, err, "row 2", "confidence must be a finite number")


@pytest.mark.parametrize("settings", ["[1, 2]", "just-a-string", "5"])
def test_stage_settings_that_are_not_a_mapping(cai, capsys, settings):
    text = (
        f"name: x\nseeds: {{path: seeds/red-team.jsonl}}\nstages:\n  - respond: {{}}\n  - critique_revise: {settings}\n"
    )
    cai.write_text(text)
    code, _, err = run_cli(["generate", cai, "--limit", "2"], capsys)
    one_line_error(code, err, "stages[1].critique_revise: expected a mapping of settings")


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        (['{"messages": {"role": "user"}}'], "must be a list ending with an assistant message"),
        (['{"prompt": "p", "completion": "c"}', '{"prompt": "p"}'], "row 2: missing completion"),
    ],
)
def test_training_data_of_the_wrong_shape(tmp_path, capsys, tiny_model_dir, rows, fragment):
    data = tmp_path / "sft.jsonl"
    data.write_text("\n".join(rows) + "\n")
    code, _, err = run_cli(["train", "sft", "--data", data, "--model", tiny_model_dir], capsys)
    one_line_error(code, err, fragment)


# -- values that are accepted but wrong ----------------------------------------------------------------
def test_non_finite_numbers_are_rejected(cai, capsys):
    constitution = cai.parent.parent / "constitutions" / "harmless.txt"
    text = constitution.read_text()
    first_critique = text.index("\ncritique:")
    constitution.write_text(text[:first_critique] + "\nweight: nan" + text[first_critique:])
    code, _, err = run_cli(["constitution", "check", constitution], capsys)
    assert code == 2 and "weight must be positive and finite" in err
    constitution.write_text(text)
    for value in (".nan", ".inf"):
        code, _, err = run_cli(["generate", cai, "--set", f"stages.respond.sampling.temperature={value}"], capsys)
        one_line_error(code, err, "stages.respond.sampling.temperature", "finite")


def test_a_prompt_longer_than_the_context_window_is_ledgered_with_its_length(cai, tiny_teacher):
    seeds = cai.parent / "seeds" / "red-team.jsonl"
    long_prompt = "the quick brown fox " * 3000
    seeds.write_text(json.dumps({"prompt": "short one"}) + "\n" + json.dumps({"prompt": long_prompt}) + "\n")
    result = run_pipeline(
        load_pipeline(cai), RunOptions(out_dir=cai.parent.parent / "o"), teacher=tiny_teacher, log=lambda _: None
    )
    dropped = [json.loads(line) for line in (result.out_dir / "dropped.jsonl").read_text().splitlines()]
    assert len(dropped) == 1 and dropped[0]["record"]["prompt"] == long_prompt.strip()
    assert "does not fit the teacher's context window of 2048 tokens" in dropped[0]["reason"]
    assert result.manifest["counts"]["trace"] == 1


def test_train_max_steps_zero_is_rejected(tmp_path, capsys, tiny_model_dir):
    data = tmp_path / "sft.jsonl"
    data.write_text('{"prompt": "p", "completion": "c"}\n')
    code, _, err = run_cli(["train", "sft", "--data", data, "--model", tiny_model_dir, "--max-steps", "0"], capsys)
    one_line_error(code, err, "max_steps must be >= 1")


# -- privacy of what we publish ------------------------------------------------------------------------
def test_manifest_and_card_hold_no_absolute_local_paths(cai, tiny_teacher, tiny_model_dir):
    spec = load_pipeline(cai, [f"teacher.model={tiny_model_dir}"])
    result = run_pipeline(
        spec, RunOptions(out_dir=cai.parent.parent / "o", limit=2), teacher=tiny_teacher, log=lambda _: None
    )
    root = str(cai.parent.parent)
    for name in ("manifest.json", "README.md"):
        text = (result.out_dir / name).read_text()
        assert root not in text and str(tiny_model_dir) not in text, name
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    assert manifest["pipeline"]["path"] == "tiny-cai.yaml"
    assert "seeds/red-team.jsonl" in manifest["files"] and "../prompts/respond.j2" in manifest["files"]


def test_rows_holding_line_separators_read_back_as_written(tmp_path):
    """U+2028, U+0085 and friends are legal raw inside JSON strings (we write them raw): a row is one "\\n" line."""
    from synthforge.files import write_jsonl
    from synthforge.jsonl import read_jsonl

    rows = [{"prompt": "a\u2028b\u2029c\x85d\x1ce\x0bf"}, {"prompt": "second"}]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    assert read_jsonl(tmp_path / "rows.jsonl") == rows


def test_engine_ray_without_ray_installed_is_one_line_saying_how_to_install_it(cai, capsys, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does where the extra is not installed
    code, _, err = generate(cai, cai.parent.parent / "o", capsys, "--engine", "ray")
    one_line_error(code, err, "pip install 'synthforge[ray]'")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "a b c d e f g"}\n')
    code, _, err = run_cli(["dedup", rows, "--out", tmp_path / "o.jsonl", "--engine", "ray"], capsys)
    one_line_error(code, err, "pip install 'synthforge[ray]'")
