"""synthforge installed, not only cloned: built-in pipelines by name from any folder, templates and constitutions
falling back to the built-ins, `init`, `list`, `python -m synthforge`, and the wheel installed outside the
checkout running a built-in pipeline on the embedded teacher."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from synthforge.builtin import ROOT as BUILTIN
from synthforge.builtin import builtin_label, find_pipeline, pipeline_names
from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.errors import UserError
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]


# -- finding pipelines ---------------------------------------------------------------------------------
def test_a_builtin_pipeline_is_found_by_name_from_any_folder(tmp_path):
    assert {"cai-harmless", "rlaif", "self-instruct", "magpie", "evol-instruct"} <= set(pipeline_names())
    assert find_pipeline("cai-harmless", tmp_path) == BUILTIN / "pipelines" / "cai-harmless.yaml"


def test_a_local_file_wins_over_a_builtin_of_the_same_name(tmp_path):
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "rlaif.yaml").write_text("name: mine\n")
    assert find_pipeline("rlaif", tmp_path) == tmp_path / "pipelines" / "rlaif.yaml"
    (tmp_path / "rlaif.yaml").write_text("name: mine\n")
    assert find_pipeline("rlaif", tmp_path) == tmp_path / "rlaif.yaml"
    assert find_pipeline(str(tmp_path / "rlaif.yaml")) == tmp_path / "rlaif.yaml"


def test_a_name_that_is_neither_is_one_line_listing_the_builtins(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["generate", "cai-harmles"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "no built-in pipeline called 'cai-harmles'" in err and "cai-harmless" in err
    code, _, err = run_cli(["generate", "pipelines/nope.yaml"], capsys)
    assert code == 2 and "pipeline file not found" in err
    with pytest.raises(UserError, match="is a folder"):
        find_pipeline(str(tmp_path))


def test_generate_by_name_dry_run_works_outside_the_checkout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["generate", "cai-harmless", "--dry-run", "--limit", "2"], capsys)
    assert code == 0, err
    assert "respond" in out and "critique" in out.lower()
    assert not (tmp_path / "outputs").exists()  # a dry run writes nothing


# -- templates and constitutions fall back to the built-ins -------------------------------------------------
def test_templates_and_constitutions_missing_from_the_pipelines_paths_come_from_the_builtins(tmp_path, tiny_teacher):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "respond.j2").write_text("Answer briefly: {{ prompt }}\n")  # the user's own wins
    (tmp_path / "seeds.jsonl").write_text(json.dumps({"prompt": "How do tides work?"}) + "\n")
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "name: fallback\nseed: 3\nteacher: {model: embedded}\nseeds: {path: seeds.jsonl}\n"
        "stages:\n  - respond: {sampling: {max_new_tokens: 4}}\n"
        "  - critique_revise: {constitution: harmless, turns: single, critique_template: critique-single,\n"
        "      revise_template: revise-single, sampling: {max_new_tokens: 4}}\n"
        "paths: {prompts: prompts, constitutions: constitutions}\n"
    )
    result = run_pipeline(load_pipeline(pipeline), RunOptions(out_dir=tmp_path / "out"), teacher=tiny_teacher)
    files = result.manifest["files"]
    assert "prompts/respond.j2" in files  # the pipeline's own
    assert {"synthforge:prompts/critique-single.j2", "synthforge:constitutions/harmless.txt"} <= set(files)
    assert builtin_label(BUILTIN / "prompts" / "respond.j2") == "synthforge:prompts/respond.j2"
    assert builtin_label(tmp_path / "prompts" / "respond.j2") is None


# -- init and list ----------------------------------------------------------------------------------------
def test_init_copies_what_ships_and_its_pipelines_run_as_they_are(tmp_path, monkeypatch, capsys):
    project = tmp_path / "my-project"
    code, out, err = run_cli(["init", str(project)], capsys)
    assert code == 0, err
    for kind in ("pipelines", "prompts", "constitutions"):
        shipped = sorted(p.relative_to(BUILTIN / kind) for p in (BUILTIN / kind).rglob("*") if p.is_file())
        copied = sorted(p.relative_to(project / kind) for p in (project / kind).rglob("*") if p.is_file())
        assert copied == shipped
    assert "my-project" in (project / "README.md").read_text() and "wrote" in out
    # The copy is what runs: an edit to its template shows in the dry run of the pipeline by name.
    respond = project / "prompts" / "respond.j2"
    respond.write_text("EDITED IN MY PROJECT: " + respond.read_text())
    monkeypatch.chdir(project)
    code, out, err = run_cli(["generate", "cai-harmless", "--dry-run", "--limit", "1"], capsys)
    assert code == 0 and "EDITED IN MY PROJECT" in out, err


def test_init_refuses_a_folder_that_holds_anything(tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    code, _, err = run_cli(["init", str(tmp_path / "busy")], capsys)
    assert code == 2 and "never writes over" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert run_cli(["init", str(tmp_path / "empty")], capsys)[0] == 0
    assert (tmp_path / "empty" / "pipelines" / "cai-harmless.yaml").is_file()


def test_list_names_pipelines_constitutions_stages_and_backends(capsys):
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0
    for name in (*pipeline_names(), "harmless", "respond", "critique_revise", "transformers", "openai", "ray"):
        assert f"  {name} " in out
    assert "16 principles" in out  # harmless.txt


def test_python_dash_m_synthforge_and_version():
    done = subprocess.run(
        [sys.executable, "-m", "synthforge", "--version"], capture_output=True, text=True, cwd="/", check=True
    )
    assert done.stdout.startswith("synthforge, version ")


# -- the built distribution ------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_wheel_installs_outside_the_checkout_and_runs_a_builtin_pipeline(tmp_path):
    """Build the wheel and sdist from a copy of the sources (the checkout is left untouched), check their
    metadata and data files, install the wheel into a fresh virtual environment outside the checkout, and run
    `synthforge generate cai-harmless --limit 2` there on the embedded teacher. To stay fast the new environment
    reuses this one's installed dependencies (torch and the rest) through a .pth line, and the wheel is
    installed without dependencies; synthforge itself comes from the wheel (checked)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    for name in ("synthforge", "constitutions", "prompts", "pipelines"):  # the data's one copy is top-level
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("synthforge-*.whl"))
    sdist = next(dist.glob("synthforge-*.tar.gz"))
    shipped = ["synthforge/builtin/pipelines/cai-harmless.yaml", "synthforge/builtin/prompts/respond.j2"]
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert all(n in names for n in [*shipped, "synthforge/builtin/pipelines/seeds/red-team.jsonl"])
    for field in (
        "License-Expression: Apache-2.0",
        "Description-Content-Type: text/markdown",
        "Project-URL: ",
        "Classifier: ",
        "Provides-Extra: vllm",
        "Provides-Extra: ray",
        "Provides-Extra: train",
    ):
        assert field in metadata, field
    assert "# synthforge" in metadata  # the README is the long description
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    top_level = ["constitutions/harmless.txt", "prompts/respond.j2", "pipelines/seeds/red-team.jsonl"]
    assert all(any(m.endswith(n) for m in members) for n in [*top_level, "setup.py", "LICENSE"])
    for kind in ("constitutions", "prompts", "pipelines"):  # every shipped file is in the wheel
        files = [p.relative_to(REPO).as_posix() for p in (REPO / kind).rglob("*") if p.is_file()]
        assert files and all(f"synthforge/builtin/{f}" in names for f in files), kind

    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    purelib = Path(
        subprocess.run(
            [str(env / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (purelib / "reuse-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(env / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=work, env=clean, capture_output=True, text=True, timeout=900)

    where = run(str(env / "bin" / "python"), "-c", "import synthforge; print(synthforge.__file__)")
    assert where.stdout.strip().startswith(str(purelib)), where.stdout + where.stderr
    done = run(str(env / "bin" / "synthforge"), "generate", "cai-harmless", "--limit", "2", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    out = work / "outputs" / "cai-harmless"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pipeline"]["path"] == "synthforge:pipelines/cai-harmless.yaml"
    assert "synthforge:prompts/respond.j2" in manifest["files"]
    assert (out / "sft.jsonl").is_file() and (out / "report.html").is_file()
    assert run(str(env / "bin" / "synthforge"), "init", "proj").returncode == 0
    assert (work / "proj" / "constitutions" / "harmless.txt").is_file()
    shipped = len(list((REPO / "constitutions").glob("*.txt")))  # each listed with its principles
    assert run(str(env / "bin" / "python"), "-m", "synthforge", "list").stdout.count("principles") == shipped


def test_the_top_level_folders_are_the_one_copy_a_checkout_uses(tmp_path, monkeypatch, capsys):
    """The design card's layout: constitutions/, prompts/ and pipelines/ at the top of the checkout, read from
    there (an edit there changes what `generate cai-harmless` uses), and nowhere else in the package."""
    assert BUILTIN == REPO and all((REPO / kind).is_dir() for kind in ("constitutions", "prompts", "pipelines"))
    assert not any((REPO / "synthforge" / "builtin" / kind).exists() for kind in ("constitutions", "prompts"))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["constitution", "check", REPO / "constitutions" / "harmless.txt"], capsys)
    assert code == 0, err
    spec = load_pipeline(find_pipeline("cai-harmless"))
    assert spec.constitutions_dir == REPO / "constitutions" and spec.prompts_dir == REPO / "prompts"


def test_a_pipeline_pointing_into_the_old_builtin_folder_still_runs(tmp_path):
    """Pipelines written when the shipped files lived in synthforge/builtin/ keep working."""
    old = REPO / "synthforge" / "builtin"
    pipeline = tmp_path / "old.yaml"
    pipeline.write_text(
        f"name: old\nteacher: {{model: embedded}}\nseeds: {{path: {old / 'pipelines/seeds/red-team.jsonl'}}}\n"
        f"stages:\n  - respond: {{}}\npaths: {{prompts: {old / 'prompts'}, constitutions: {old / 'constitutions'}}}\n"
    )
    spec = load_pipeline(pipeline)
    assert spec.prompts_dir == REPO / "prompts" and spec.seeds_path == REPO / "pipelines" / "seeds" / "red-team.jsonl"
