"""Output safety under hostile conditions, for every command that writes: a crash mid-publish recovered from any
working directory, ``--out`` given as a symlink, a full disk, a real read-only mount and an immutable directory.
Each is one line with exit code 2, or a whole output; nothing of the user's is lost.

Full disks and read-only file systems are real here: a small tmpfs mounted inside the test (the suite runs as
root in CI); where mounting is not allowed the test is skipped with that reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from synthforge.files import publish, recover, sweep
from tests.conftest import write_pipeline
from tests.test_hostile_input import DUPLICATES, _published, dedup, hidden_leftovers, one_line_error, run_cli

KIND = {"critic": "Is it unkind?", "revision": "Make it kind."}  # one principle in HF's CAI JSON


@contextlib.contextmanager
def tmpfs(folder: Path, size: str = "256k", read_only: bool = False) -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``folder`` for the block (unmounted after, whatever happens)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip() or 'not root'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def remount_read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)


def fill(folder: Path) -> None:
    """Use up every free byte of the file system holding ``folder``."""
    with open(folder / "filler", "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"x" * 4096)


def _publish_script(data: Path, out: str, kill_after_first_old: bool) -> str:
    """A dedup run whose os.replace kills the process (SIGKILL) once the old output was moved aside."""
    return f"""
import os, signal
import synthforge.files as files
real = os.replace
moves = []
def replace(a, b):
    real(a, b)
    moves.append(b)
    if {kill_after_first_old} and any(".old-" in str(m) for m in moves) and ".old-" not in str(b):
        os.kill(os.getpid(), signal.SIGKILL)
files.os.replace = replace
from synthforge.cli.main import main
main(["dedup", {str(data)!r}, "--out", {out!r}])
"""


def cai_model(pipeline: Path) -> str:
    """The teacher model the tiny CAI pipeline names (the tiny random model)."""
    import yaml

    return str(yaml.safe_load(pipeline.read_text())["teacher"]["model"])


def no_model_loads(monkeypatch) -> None:
    import synthforge.teachers.factory as factory

    monkeypatch.setattr(factory, "build_teacher", lambda *a, **k: pytest.fail("a teacher was loaded"))


class TestRecoveryFromAnywhere:
    @pytest.mark.parametrize("out_name", ["out", "out.jsonl"])
    def test_a_publish_killed_then_rerun_from_another_folder_with_an_absolute_out(self, tmp_path, out_name):
        """The probe's data loss: a relative --out killed mid-publish, rerun from elsewhere with the absolute path."""
        data, work, elsewhere = tmp_path / "rows.jsonl", tmp_path / "work", tmp_path / "elsewhere"
        work.mkdir()
        elsewhere.mkdir()
        data.write_text(DUPLICATES)
        run = lambda cwd, out, kill: subprocess.run(  # noqa: E731
            [sys.executable, "-c", _publish_script(data, out, kill)], cwd=cwd, capture_output=True, text=True
        )
        assert run(work, out_name, False).returncode == 0
        first = _published(work / out_name)
        data.write_text(DUPLICATES + json.dumps({"text": "brand new row here"}) + "\n")
        assert run(work, out_name, True).returncode == -9
        assert any(".publish.json" in name for name in hidden_leftovers(work))  # caught mid-publish
        rerun = run(elsewhere, str(work / out_name), False)
        assert rerun.returncode == 0, rerun.stderr
        second = _published(work / out_name)
        assert second != first and "brand new row here" in second["kept"]
        assert json.loads(second["provenance"])["counts"]["rows"] == 4
        assert hidden_leftovers(work) == [] and list(elsewhere.iterdir()) == []

    def test_a_journal_written_with_relative_paths_is_completed_where_it_lies(self, tmp_path, monkeypatch):
        """Journals of earlier versions hold paths as given (relative to the writer's folder)."""
        folder = tmp_path / "data"
        folder.mkdir()
        (folder / "out").mkdir()
        (folder / "out" / "a.txt").write_text("old")
        staging = folder / ".out.partial-1-x"
        staging.mkdir()
        (staging / "a.txt").write_text("new")
        journal = folder / ".out.publish.json"
        moves = [{"source": "data/.out.partial-1-x", "target": "data/out", "old": "data/.out.old-1-y"}]
        journal.write_text(json.dumps({"pid": 1, "moves": moves}))
        monkeypatch.chdir(tmp_path / "data")  # not the folder the journal's paths are relative to
        assert recover(journal)
        assert (folder / "out" / "a.txt").read_text() == "new" and sorted(p.name for p in folder.iterdir()) == ["out"]

    def test_recovery_never_deletes_the_last_complete_copy(self, tmp_path):
        out = tmp_path / "out"
        old = tmp_path / f".out.old-{2**22 + 5}-abcd"  # a killed writer moved the output aside, and no journal says
        old.mkdir()
        (old / "rows.jsonl").write_text("precious\n")
        sweep(out, everything=True)
        assert (out / "rows.jsonl").read_text() == "precious\n" and not old.exists()
        # a journal whose new version is gone: the old copy is put back, not removed
        (tmp_path / "stage").mkdir()
        publish([(tmp_path / "stage", out)], tmp_path / ".out.publish.json")
        assert not (out / "rows.jsonl").exists()  # the published (empty) folder replaced it, as asked
        entries = [{"source": str(tmp_path / "gone"), "target": str(out), "old": str(tmp_path / ".out.old-9-z")}]
        os.replace(out, tmp_path / ".out.old-9-z")
        (tmp_path / ".out.publish.json").write_text(json.dumps({"moves": entries}))
        recover(tmp_path / ".out.publish.json")
        assert out.is_dir() and not (tmp_path / ".out.old-9-z").exists()


class TestSymlinkOutputs:
    """``--out`` a symlink (to an empty folder, or dangling): written through, the user's link never replaced."""

    @pytest.fixture(params=["to-empty", "dangling"])
    def link(self, request, tmp_path) -> tuple[Path, Path]:
        target = tmp_path / "real" / "target"
        if request.param == "to-empty":
            target.mkdir(parents=True)
        link = tmp_path / "link"
        link.symlink_to(target)
        return link, target

    def test_init(self, link, capsys):
        link, target = link
        assert run_cli(["init", link], capsys)[0] == 0
        assert link.is_symlink() and (target / "pipelines").is_dir() and (target / "constitutions").is_dir()

    def test_dedup_directory_and_file_outputs(self, link, tmp_path, capsys):
        link, target = link
        data = tmp_path / "rows.jsonl"
        data.write_text(DUPLICATES)
        assert dedup(data, link, capsys)[0] == 0
        assert link.is_symlink() and _published(target)["kept"].count("\n") == 2
        assert dedup(data, link, capsys)[0] == 0  # its own output, through the link again
        assert link.is_symlink() and hidden_leftovers(target.parent) == []
        file_link = tmp_path / "rows-link.jsonl"
        file_link.symlink_to(tmp_path / "real" / "kept.jsonl")
        assert dedup(data, file_link, capsys)[0] == 0
        assert file_link.is_symlink() and (tmp_path / "real" / "kept.jsonl").read_text().count("\n") == 2

    def test_constitution_convert(self, tmp_path, capsys):
        source = tmp_path / "c.json"
        source.write_text(json.dumps({"constitutions": [KIND]}))
        out_link = tmp_path / "c-link.txt"
        out_link.symlink_to(tmp_path / "real" / "c.txt")
        code, _, err = run_cli(["constitution", "convert", source, "-o", out_link], capsys)
        assert code == 0, err
        assert out_link.is_symlink() and "[" in (tmp_path / "real" / "c.txt").read_text()

    def test_train(self, link, tmp_path, tiny_model_dir, capsys):
        link, target = link
        data = tmp_path / "sft.jsonl"
        rows = [
            {"prompt": [{"role": "user", "content": f"q{i}"}], "completion": [{"role": "assistant", "content": "a"}]}
            for i in range(4)
        ]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        args = ["train", "sft", "--data", data, "--model", tiny_model_dir, "--out", link, "--max-steps", "1"]
        code, _, err = run_cli([*args, "--batch-size", "2"], capsys)
        assert code == 0, err
        assert link.is_symlink() and (target / "training.json").is_file()


class TestDiskFull:
    """A real full disk (a small tmpfs filled up): one line, exit 2, and what was there before stays whole."""

    def test_every_writing_command(self, tmp_path, capsys):
        data = tmp_path / "rows.jsonl"
        data.write_text(DUPLICATES * 200)
        constitution = tmp_path / "c.json"
        constitution.write_text(json.dumps({"constitutions": [KIND] * 50}))
        with tmpfs(tmp_path / "tiny", "256k") as tiny:
            assert dedup(data, tiny / "before.jsonl", capsys)[0] == 0
            before = (tiny / "before.jsonl").read_bytes()
            fill(tiny)
            cases = [
                (["init", tiny / "proj"], "no space left on device"),
                (["constitution", "convert", constitution, "-o", tiny / "c2.txt"], "no space left on device"),
                (["dedup", data, "--out", tiny / "out.jsonl"], "no space left on device"),
                (["dedup", data, "--out", tiny / "outd"], "no space left on device"),
                (["dedup", data, "--out", tiny / "before.jsonl"], "no space left on device"),
            ]
            for args, fragment in cases:
                code, _, err = run_cli(args, capsys)
                one_line_error(code, err, fragment)
            (tiny / "filler").unlink()
            assert (tiny / "before.jsonl").read_bytes() == before
            assert sorted(p.name for p in tiny.iterdir()) == sorted(
                ["before.jsonl", "before.dropped.jsonl", "before.provenance.json"]
            )

    def test_generate_and_train_on_a_full_disk_keep_what_they_had(self, cai, finished_run, tmp_path, capsys):
        """A finished run and a trained model on a disk that fills up: their reruns are one line, and the outputs
        from before stay whole."""
        with tmpfs(tmp_path / "tiny", "8m") as tiny:
            run = tiny / "run"
            shutil.copytree(finished_run, run)
            sft_before = (run / "sft.jsonl").read_bytes()
            args = ["train", "sft", "--data", finished_run, "--model", cai_model(cai), "--max-steps", "1"]
            fill(tiny)
            code, _, err = run_cli(
                ["generate", cai, "--out", run, "--limit", "3", "--no-progress", "--seed", "9"], capsys
            )
            one_line_error(code, err, "no space left on device")
            assert (run / "sft.jsonl").read_bytes() == sft_before
            code, _, err = run_cli([*args, "--out", tiny / "student", "--batch-size", "2"], capsys)
            one_line_error(code, err, "no space left on device")
            assert not (tiny / "student").exists()

    def test_report_on_a_full_disk(self, finished_run, tmp_path, capsys):
        with tmpfs(tmp_path / "tiny", "1m") as tiny:
            run = tiny / "g2"
            shutil.copytree(finished_run, run)
            (run / "report.html").unlink()
            fill(tiny)
            code, _, err = run_cli(["report", run], capsys)
            one_line_error(code, err, "no space left on device")
            assert not (run / "report.html").exists()


class TestReadOnlyForReal:
    def test_generate_into_a_read_only_mount_stops_before_the_model_loads(
        self, cai, finished_run, tmp_path, capsys, monkeypatch
    ):
        no_model_loads(monkeypatch)
        with tmpfs(tmp_path / "ro", "4m") as ro:
            shutil.copytree(finished_run, ro / "run")
            remount_read_only(ro)
            code, _, err = run_cli(["generate", cai, "--out", ro / "run", "--limit", "3", "--no-progress"], capsys)
            one_line_error(code, err, str(ro / "run"), "read-only file system")

    def test_every_other_writing_command_on_a_read_only_mount(self, cai, finished_run, tmp_path, capsys):
        data = tmp_path / "rows.jsonl"
        data.write_text(DUPLICATES)
        constitution = tmp_path / "c.json"
        constitution.write_text(json.dumps({"constitutions": [KIND]}))
        with tmpfs(tmp_path / "ro", "1m") as ro:
            remount_read_only(ro)
            for args in (
                ["init", ro / "proj"],
                ["constitution", "convert", constitution, "-o", ro / "c.txt"],
                ["dedup", data, "--out", ro / "out.jsonl"],
                ["dedup", data, "--out", ro / "outd"],
                ["report", finished_run, "--out", ro / "r.html"],
                ["train", "sft", "--data", finished_run, "--model", cai_model(cai), "--out", ro / "student"],
                ["generate", cai, "--out", ro / "run", "--limit", "2", "--no-progress"],
            ):
                code, _, err = run_cli(args, capsys)
                one_line_error(code, err, "read-only file system")
            assert list(ro.iterdir()) == []

    @pytest.mark.parametrize("fresh", [False, True])
    def test_generate_into_an_immutable_run_directory(self, cai, finished_run, capsys, fresh, monkeypatch):
        """``chattr +i RUN`` (the earlier probe's case): refused before the model loads, with or without --fresh."""
        no_model_loads(monkeypatch)
        if subprocess.run(["chattr", "+i", str(finished_run)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available here")
        try:
            args = ["generate", cai, "--out", finished_run, "--limit", "3", "--no-progress", *(["--fresh"] * fresh)]
            code, _, err = run_cli(args, capsys)
            one_line_error(code, err, str(finished_run), "cannot write here")
        finally:
            subprocess.run(["chattr", "-i", str(finished_run)], capture_output=True)
        assert (finished_run / "manifest.json").is_file()  # the finished run is untouched


@pytest.fixture
def cai(project, monkeypatch, tiny_model_dir) -> Path:
    monkeypatch.chdir(project)
    return write_pipeline(project, tiny_model_dir, max_new_tokens=4)


@pytest.fixture
def finished_run(cai, tiny_teacher) -> Path:
    from synthforge.engine.runner import RunOptions, run_pipeline
    from synthforge.engine.spec import load_pipeline

    out = cai.parent.parent / "finished"
    run_pipeline(load_pipeline(cai), RunOptions(out_dir=out, limit=3), teacher=tiny_teacher, log=lambda _: None)
    return out
