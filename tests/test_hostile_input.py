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


def test_an_interrupted_export_leaves_no_manifest_and_a_rerun_completes_it(cai, tiny_teacher):
    """A real SIGKILL between two export files (in a subprocess: no cleanup runs, as with kill -9)."""
    import subprocess
    import sys

    from synthforge.hashing import file_sha256

    spec = load_pipeline(cai)
    out = cai.parent.parent / "export"
    run_pipeline(spec, RunOptions(out_dir=out, limit=3), teacher=tiny_teacher, log=lambda _: None)
    before = json.loads((out / "manifest.json").read_text())
    assert set(before["outputs"]) == {"sft.jsonl", "dpo.jsonl", "trace.jsonl", "dropped.jsonl", "README.md"}
    script = f"""
import os, signal
import synthforge.engine.exporters as exporters
real = exporters.write_jsonl
def crash_on_dpo(path, rows):
    if path.name == "dpo.jsonl" and os.environ.get("KILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, rows)
exporters.write_jsonl = crash_on_dpo
from synthforge.cli.main import main
main(["generate", {str(cai)!r}, "--out", {str(out)!r}, "--limit", "3", "--seed", "8", "--no-progress"])
"""
    env = {**__import__("os").environ, "KILL": "1", "OMP_NUM_THREADS": "1"}
    assert subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, cwd=cai.parent).returncode == -9
    assert not (out / "manifest.json").exists()  # the set is visibly incomplete: no stale manifest beside new files
    del env["KILL"]
    rerun = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=cai.parent)
    assert rerun.returncode == 0, rerun.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 8 and set(manifest["outputs"]) >= {
        "sft.jsonl",
        "trace.jsonl",
        "dropped.jsonl",
        "README.md",
    }
    for name, digest in manifest["outputs"].items():
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
    from synthforge.rows import read_jsonl

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


# == every command keeps generate's promises ==========================================================
HF = {"constitutions": [{"critic": "Is it harmful?", "revision": "Make it harmless."}]}
DUPLICATES = "".join(json.dumps({"text": t}) + "\n" for t in ["a b c d e f g h", "a b c d e f g h", "x y z w v u"])


def dedup(source, out, capsys, *extra):
    return run_cli(["dedup", source, "--out", out, "--key", "prompt", *extra], capsys)


def hidden_leftovers(folder: Path) -> list[str]:
    """Helper files a writer leaves beside its output when killed (temp files, staging, journals, locks)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != ".synthforge-dedup.json")


@pytest.fixture
def finished_run(cai, tiny_teacher) -> Path:
    out = cai.parent.parent / "finished"
    run_pipeline(load_pipeline(cai), RunOptions(out_dir=out, limit=3), teacher=tiny_teacher, log=lambda _: None)
    return out


class TestConvert:
    def test_convert_never_replaces_its_input(self, tmp_path, capsys):
        source = tmp_path / "good.json"
        source.write_text(json.dumps(HF))
        code, _, err = run_cli(["constitution", "convert", source, "-o", source], capsys)
        one_line_error(code, err, "input of this command")
        assert json.loads(source.read_text()) == HF

    def test_convert_writes_only_over_what_it_converted_before(self, tmp_path, capsys):
        source, out = tmp_path / "c.json", tmp_path / "notes.txt"
        source.write_text(json.dumps(HF))
        out.write_text("my notes\n")
        code, _, err = run_cli(["constitution", "convert", source, "-o", out], capsys)
        one_line_error(code, err, "not written by synthforge constitution convert")
        assert out.read_text() == "my notes\n"
        converted = tmp_path / "c.txt"
        assert run_cli(["constitution", "convert", source, "-o", converted], capsys)[0] == 0
        assert run_cli(["constitution", "convert", source, "-o", converted], capsys)[0] == 0  # its own file
        assert hidden_leftovers(tmp_path) == []


class TestDedupOutputs:
    def test_a_jsonl_output_and_its_siblings_are_never_someone_elses_files(self, tmp_path, capsys):
        data = tmp_path / "rows.jsonl"
        data.write_text(DUPLICATES)
        for sibling in ("precious.jsonl", "precious.dropped.jsonl", "precious.provenance.json"):
            (tmp_path / sibling).write_text("mine\n")
            code, _, err = dedup(data, tmp_path / "precious.jsonl", capsys)
            one_line_error(code, err, sibling, "not written by synthforge dedup")
            assert (tmp_path / sibling).read_text() == "mine\n"
            (tmp_path / sibling).unlink()
        assert dedup(data, tmp_path / "precious.jsonl", capsys)[0] == 0
        assert dedup(data, tmp_path / "precious.jsonl", capsys)[0] == 0  # its own output: replaced
        assert len((tmp_path / "precious.jsonl").read_text().splitlines()) == 2

    @pytest.mark.parametrize("out_name", ["out", "out.jsonl"])
    def test_kill_9_mid_publish_then_a_rerun_completes_the_new_set(self, tmp_path, out_name):
        """A real SIGKILL between the moves that publish the output (after the first): a rerun finds the
        journal, completes the publication, and leaves a whole set and no helper files behind."""
        import subprocess
        import sys

        data = tmp_path / "rows.jsonl"
        data.write_text(DUPLICATES)
        out = tmp_path / out_name
        script = f"""
import os, signal, sys
import synthforge.files as files
real = os.replace
moves = []
def replace(a, b):
    real(a, b)
    moves.append(b)
    if "kill" in os.environ and any(".old-" in str(m) for m in moves) and ".old-" not in str(b):
        os.kill(os.getpid(), signal.SIGKILL)
files.os.replace = replace
from synthforge.cli.main import main
main(["dedup", {str(data)!r}, "--out", {str(out)!r}])
"""
        assert subprocess.run([sys.executable, "-c", script], capture_output=True).returncode == 0
        first = _published(out)
        data.write_text(DUPLICATES + json.dumps({"text": "brand new row here"}) + "\n")
        env = {**__import__("os").environ, "kill": "1"}
        killed = subprocess.run([sys.executable, "-c", script], capture_output=True, env=env)
        assert killed.returncode == -9
        assert any(".publish.json" in name for name in hidden_leftovers(tmp_path))  # caught mid-publish
        assert subprocess.run([sys.executable, "-c", script], capture_output=True).returncode == 0
        second = _published(out)
        assert second != first and "brand new row here" in second["kept"]
        assert json.loads(second["provenance"])["counts"]["rows"] == 4
        assert hidden_leftovers(tmp_path) == []

    def test_a_second_dedup_into_the_same_output_is_refused_naming_the_holder(self, tmp_path, capsys):
        import os

        from synthforge.files import output_lock

        data = tmp_path / "rows.jsonl"
        data.write_text(DUPLICATES)
        with output_lock(tmp_path / "out", "--out", "dedup"):
            code, _, err = dedup(data, tmp_path / "out", capsys)
            one_line_error(code, err, "another synthforge dedup", f"pid {os.getpid()}")
        assert dedup(data, tmp_path / "out", capsys)[0] == 0

    def test_what_killed_writes_left_behind_is_removed_by_the_next_write(self, tmp_path, capsys):
        from synthforge.files import write_atomic

        data = tmp_path / "rows.jsonl"
        data.write_text(DUPLICATES)
        dead = 2**22 + 12345  # above any pid this machine hands out
        (tmp_path / f".out.jsonl.synthforge-tmp-{dead}-abc").write_text("x" * 10_000)
        (tmp_path / f".out.jsonl.partial-{dead}-abc").mkdir()
        (tmp_path / f".notes.txt.synthforge-tmp-{dead}-q").write_text("half")
        assert dedup(data, tmp_path / "out.jsonl", capsys)[0] == 0
        write_atomic(tmp_path / "notes.txt", "whole\n")
        assert hidden_leftovers(tmp_path) == []

    def test_dedup_of_a_run_whose_export_did_not_finish_is_refused(self, finished_run, capsys):
        (finished_run / "manifest.json").unlink()
        code, _, err = dedup(finished_run, finished_run.parent / "d.jsonl", capsys)
        one_line_error(code, err, "export did not finish")


def _published(out: Path) -> dict[str, str]:
    if out.suffix == ".jsonl":
        names = {
            "kept": out,
            "dropped": out.with_name("out.dropped.jsonl"),
            "provenance": out.with_name("out.provenance.json"),
        }
        return {k: p.read_text() for k, p in names.items()}
    kept = "".join(p.read_text() for p in sorted(out.glob("part-*.jsonl")))
    dropped = "".join(p.read_text() for p in sorted(out.with_name("out.dropped").glob("part-*.jsonl")))
    return {"kept": kept, "dropped": dropped, "provenance": (out / ".synthforge-dedup.json").read_text()}


class TestReport:
    def test_report_never_replaces_a_dataset_or_a_file_it_did_not_write(self, finished_run, capsys):
        before = (finished_run / "sft.jsonl").read_text()
        code, _, err = run_cli(["report", finished_run, "--out", finished_run / "sft.jsonl"], capsys)
        one_line_error(code, err, "sft.jsonl")
        assert (finished_run / "sft.jsonl").read_text() == before
        mine = finished_run.parent / "page.html"
        mine.write_text("<html>my page</html>")
        code, _, err = run_cli(["report", finished_run, "--out", mine], capsys)
        one_line_error(code, err, "not written by synthforge report")
        assert run_cli(["report", finished_run], capsys)[0] == 0  # its own report.html
        assert run_cli(["report", finished_run, "--out", finished_run.parent / "r.html"], capsys)[0] == 0
        assert run_cli(["report", finished_run, "--out", finished_run.parent / "r.html"], capsys)[0] == 0

    @pytest.mark.parametrize(
        ("file", "content", "fragment"),
        [
            ("manifest.json", '{"pipeline": {"name": "x"', "manifest.json:1: manifest is not valid JSON"),
            ("manifest.json", "[1, 2]", "manifest.json: $: [1, 2] is not of type 'object'"),
            ("manifest.json", '{"pipeline": {"name": 5}}', "$.pipeline.name"),
            ("trace.jsonl", '{"id": "a", "prompt": "p"}\n[1]\n', "trace.jsonl:2: $"),
            ("trace.jsonl", '{"id": "a", "prompt": 7}\n', "trace.jsonl:1: $.prompt"),
            ("training.json", '{"kind": "sft", "metrics": {', "training.json:1: training.json is not valid JSON"),
        ],
    )
    def test_corrupt_metadata_is_one_line(self, finished_run, capsys, file, content, fragment):
        if file == "training.json":
            folder = finished_run.parent / "model"
            folder.mkdir()
            (folder / file).write_text(content)
        else:
            folder = finished_run
            (folder / file).write_text(content)
        code, _, err = run_cli(["report", folder], capsys)
        one_line_error(code, err, fragment)


class TestReadOnly:
    """Read-only directories (root ignores permission bits, so there the file system's answer is simulated)."""

    @pytest.fixture
    def read_only(self, monkeypatch):
        import errno
        import os

        def make(folder: Path) -> None:
            if os.geteuid() != 0:
                for path in [folder, *folder.rglob("*")]:
                    path.chmod(0o555 if path.is_dir() else 0o444)
                return
            real_open, real_mkstemp = os.open, __import__("tempfile").mkstemp

            def refuse(path, *args, **kwargs):
                if str(path).startswith(str(folder)):
                    raise OSError(errno.EROFS, "Read-only file system", str(path))

            monkeypatch.setattr(os, "open", lambda p, *a, **k: refuse(p) or real_open(p, *a, **k))
            monkeypatch.setattr("tempfile.mkstemp", lambda *a, **k: refuse(k.get("dir", "")) or real_mkstemp(*a, **k))

        return make

    def test_generate_into_a_read_only_run_directory(self, cai, finished_run, capsys, read_only):
        read_only(finished_run)
        code, _, err = generate(cai, finished_run, capsys)
        one_line_error(code, err, str(finished_run), "cannot write here")

    def test_report_into_a_read_only_directory(self, finished_run, tmp_path, capsys, read_only):
        folder = tmp_path / "ro"
        folder.mkdir()
        read_only(folder)
        code, _, err = run_cli(["report", finished_run, "--out", folder / "r.html"], capsys)
        one_line_error(code, err, "cannot write here")


class TestTrainOutputs:
    def args(self, data, out, model):
        return ["train", "sft", "--data", data, "--model", model, "--out", out, "--max-steps", "1", "--batch-size", "2"]

    def test_train_never_writes_into_its_data_or_a_folder_it_did_not_write(
        self, finished_run, tiny_model_dir, capsys, monkeypatch
    ):
        import synthforge.train.student as student

        monkeypatch.setattr(student, "load_pretrained", lambda *a, **k: pytest.fail("a model loaded"))
        report = (finished_run / "report.html").read_text()
        code, _, err = run_cli(self.args(finished_run, finished_run, tiny_model_dir), capsys)
        one_line_error(code, err, "input of this command")
        assert (finished_run / "report.html").read_text() == report
        mine = finished_run.parent / "userdir"
        mine.mkdir()
        (mine / "config.json").write_text("{}")
        code, _, err = run_cli(self.args(finished_run, mine, tiny_model_dir), capsys)
        one_line_error(code, err, "not written by synthforge train sft")
        assert (mine / "config.json").read_text() == "{}"
        a_file = finished_run.parent / "a-file"
        a_file.write_text("x")
        code, _, err = run_cli(self.args(finished_run, a_file, tiny_model_dir), capsys)
        one_line_error(code, err, "a file is in the way")
        code, _, err = run_cli(self.args(finished_run, tiny_model_dir, tiny_model_dir), capsys)
        one_line_error(code, err, "input of this command")

    def test_train_replaces_its_own_output_whole(self, finished_run, tiny_model_dir, capsys):
        out = finished_run.parent / "student"
        assert run_cli(self.args(finished_run, out, tiny_model_dir), capsys)[0] == 0
        first = json.loads((out / "training.json").read_text())
        assert run_cli([*self.args(finished_run, out, tiny_model_dir), "--seed", "3"], capsys)[0] == 0
        assert json.loads((out / "training.json").read_text())["config"]["seed"] == 3 != first["config"]["seed"]
        assert hidden_leftovers(out.parent) == []
