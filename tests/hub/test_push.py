"""`synthforge push` against a local stand-in of the Hub's repository API (tests/hub_standin.py: we can't reach
the real Hub from here; written from the requests huggingface_hub sends). Exercised: the repository created
private, one commit holding parquet configs the `datasets` library loads as the run's rows, a card pointing at
them, the run's manifest, pipeline and summaries; the token from the environment and never in what is sent as
content or written locally; a public repository refused without --public; files synthforge didn't write never
replaced; a second push replacing only its own files; a branch; an unfinished or altered run refused. Not
exercised: LFS and Xet blob transfer (the stand-in takes every file inline; huggingface_hub uploads large
files as LFS/Xet on the real Hub)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.hub.push import MARKER, PushOptions, push_run
from synthforge.teachers.scripted import ScriptedTeacher
from tests.conftest import run_cli, write_pipeline
from tests.hub_standin import TOKEN, hub_standin


def _reply(conversation) -> str:
    text = conversation[-1]["content"]
    return f"A careful answer about: {text[:40]}"


@pytest.fixture
def run(project) -> Path:
    """A finished CAI run with sft and dpo rows, made by a scripted teacher."""
    out = project / "outputs" / "tiny"
    path = write_pipeline(project, "scripted")
    run_pipeline(load_pipeline(path), RunOptions(out_dir=out, limit=4), ScriptedTeacher(_reply), log=lambda _: None)
    assert (out / "dpo.jsonl").read_text().strip()
    return out


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with hub_standin() as hub:
        yield hub


def _push(run: Path, hub, repo: str = "me/cai", **options) -> object:
    return push_run(PushOptions(run, repo, endpoint=hub.url, **options))


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_run_goes_up_private_in_one_commit_and_loads_as_the_runs_rows(run, hub, tmp_path):
    from datasets import load_dataset

    result = _push(run, hub)
    repo = hub.repos["me/cai"]
    assert repo.private and len(repo.trees) == 2  # the repository's first commit, then the push's one
    files = hub.files("me/cai")
    assert sorted(files) == sorted([".gitattributes", *result.written])
    assert {"sft/train-00000-of-00001.parquet", "dpo/train-00000-of-00001.parquet"} <= set(files)
    assert {"README.md", "synthforge/manifest.json", "synthforge/pipeline.yaml", "synthforge/summary.json"} <= set(
        files
    )
    copy = tmp_path / "hub-copy"  # the repository as a user who clones it sees it
    for name, content in files.items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes(content)
    for config in ("sft", "dpo"):
        pushed = load_dataset(str(copy), config, split="train").to_list()
        local = load_dataset("json", data_files=str(run / f"{config}.jsonl"), split="train").to_list()
        assert pushed == local, config
    card = files["README.md"].decode()
    header = yaml.safe_load(card.split("---\n")[1])
    assert [c["config_name"] for c in header["configs"]] == ["sft", "dpo"]
    assert "Published by `synthforge push` from the run of `tiny-cai`" in card
    assert files["synthforge/manifest.json"] == (run / "manifest.json").read_bytes()
    marker = json.loads(files[MARKER])
    assert marker["files"] == sorted(result.written) and marker["run"]["pipeline"] == "tiny-cai"
    summary = json.loads(files["synthforge/summary.json"])
    assert summary["run"]["outputs"] == json.loads((run / "manifest.json").read_text())["outputs"]


def test_the_token_comes_from_the_environment_and_is_never_sent_as_content_or_written(run, hub, tmp_path):
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    _push(run, hub)
    assert all(TOKEN.encode() not in body for _, _, body in hub.seen)
    assert all(TOKEN.encode() not in content for content in hub.files("me/cai").values())
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # the local run is unchanged


def test_a_second_push_replaces_only_its_own_files_and_removes_those_the_run_no_longer_has(run, hub):
    _push(run, hub)
    repo = hub.repos["me/cai"]
    tree = dict(hub.files("me/cai"))
    tree["notes.md"] = b"the owner's notes\n"  # someone else's file, beside ours
    tree["table/train-00000-of-00001.parquet"] = tree["sft/train-00000-of-00001.parquet"]
    marker = json.loads(tree[MARKER])
    marker["files"].append("table/train-00000-of-00001.parquet")  # as if an earlier push had written a table
    tree[MARKER] = json.dumps(marker).encode()
    repo.commit("main", tree, "an earlier state")
    result = _push(run, hub)
    files = hub.files("me/cai")
    assert files["notes.md"] == b"the owner's notes\n"
    assert (
        result.removed == ["table/train-00000-of-00001.parquet"] and "table/train-00000-of-00001.parquet" not in files
    )


def test_files_synthforge_did_not_write_are_never_replaced(run, hub, capsys):
    _push(run, hub)
    repo = hub.repos["me/cai"]
    tree = {k: v for k, v in hub.files("me/cai").items() if k != MARKER}  # the owner's README, not ours any more
    repo.commit("main", tree, "the owner takes the card over")
    heads = dict(repo.branches)
    code, _, err = run_cli(["push", str(run), "me/cai", "--endpoint", hub.url], capsys)
    assert code == 2 and err.startswith("error: me/cai@main: the push would replace")
    assert "README.md" in err and "Traceback" not in err
    assert repo.branches == heads  # nothing committed


def test_a_public_repository_takes_a_push_only_with_public(run, hub, capsys):
    from huggingface_hub import HfApi

    HfApi(endpoint=hub.url).create_repo("me/open", repo_type="dataset", private=False)
    code, _, err = run_cli(["push", str(run), "me/open", "--endpoint", hub.url], capsys)
    assert code == 2 and "me/open is public: pass --public" in err
    assert sorted(hub.files("me/open")) == [".gitattributes"]
    code, out, err = run_cli(["push", str(run), "me/open", "--public", "--endpoint", hub.url], capsys)
    assert code == 0, err
    assert "to me/open (public)" in out and "README.md" in hub.files("me/open")


def test_a_branch_is_made_from_main_and_main_is_left_alone(run, hub):
    _push(run, hub, repo="me/cai")
    main = hub.repos["me/cai"].branches["main"]
    _push(run, hub, repo="me/cai", revision="v2", message="second take")
    repo = hub.repos["me/cai"]
    assert repo.branches["main"] == main and repo.messages[repo.branches["v2"]] == "second take"


def test_an_unfinished_or_altered_run_is_refused_in_one_line(run, hub, capsys, tmp_path):
    (run / "sft.jsonl").write_text((run / "sft.jsonl").read_text() + '{"messages": []}\n')
    code, _, err = run_cli(["push", str(run), "me/cai", "--endpoint", hub.url], capsys)
    assert code == 2 and "sft.jsonl: not the file the run wrote" in err
    (run / "manifest.json").unlink()
    code, _, err = run_cli(["push", str(run), "me/cai", "--endpoint", hub.url], capsys)
    assert code == 2 and "its last export didn't finish" in err
    code, _, err = run_cli(["push", str(tmp_path), "me/cai", "--endpoint", hub.url], capsys)
    assert code == 2 and "not a synthforge run directory" in err
    assert "me/cai" not in hub.repos  # nothing was created for a run that can't go up


def test_the_export_setting_pushes_the_finished_run_and_a_failed_push_keeps_the_run(
    project, hub, tiny_model_dir, capsys, monkeypatch
):
    """`export.push` in the pipeline: generate pushes once the export is written (HF_ENDPOINT names the Hub);
    the dry run says it will; a push refused (a public repository without public: true) is one line that says
    the run is saved."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    path = write_pipeline(project, tiny_model_dir)
    out = project / "outputs" / "auto"
    args = ["generate", path, "--limit", "2", "--out", out, "--no-progress", "--set", "export.push={repo_id: me/auto}"]
    code, shown, _ = run_cli([*args, "--dry-run"], capsys)
    assert code == 0 and "then pushes the run to the Hugging Face Hub: me/auto (private)" in shown
    code, shown, err = run_cli(args, capsys)
    assert code == 0, err
    assert "files to me/auto (private)" in shown and hub.repos["me/auto"].private
    assert len(_rows(out / "sft.jsonl")) == 2 and "sft/train-00000-of-00001.parquet" in hub.files("me/auto")
    hub.repos["me/auto"].private = False  # made public since: the next push needs public: true
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "export.push:" in err and f"the run is saved in {out}" in err
    assert (out / "manifest.json").is_file()
