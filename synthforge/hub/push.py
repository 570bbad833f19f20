"""``synthforge push``: a finished run published to the Hugging Face Hub as a dataset repository, in one commit.

What goes up: one parquet file per config (sft, dpo, table) with row groups of at most about 100 MB (what the
Hub's dataset viewer reads); a dataset card regenerated so that its ``configs:`` point at them and it says which
run they came from; and, under ``synthforge/``, the run's manifest, its resolved pipeline, the judges' and cost
summaries and ``pushed.json``, the list of what synthforge wrote there, so that a later push replaces those
files only and never one it didn't write. The local run is not changed. The token comes from ``HF_TOKEN`` or
``hf auth login`` through huggingface_hub, and is never written anywhere."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from synthforge import __version__
from synthforge.engine.dataset_card import data_files_of, render_card
from synthforge.engine.rundir import is_run_dir
from synthforge.errors import UserError
from synthforge.hashing import file_sha256
from synthforge.provenance import unfinished_export

ROW_GROUP_BYTES = 100 * 2**20  # the Hub's viewer reads row groups up to about this size
MARKER = "synthforge/pushed.json"  # what synthforge wrote in the repository, by its last push
JUDGING_KINDS = ("judge", "verify_pairs", "compare_judge", "rate")


@dataclass
class PushOptions:
    """Where and how a run is pushed."""

    run: Path  # the run directory (`synthforge generate`'s output)
    repo_id: str  # the dataset repository, "owner/name" (created when missing)
    private: bool = True  # a new repository is private; pushing to a public one needs private=False
    revision: str | None = None  # the branch to commit to (created from main when missing); None: main
    message: str | None = None  # the commit message; None: one naming the run
    endpoint: str | None = None  # the Hub's address; None: HF_ENDPOINT or https://huggingface.co
    token: str | None = None  # None: HF_TOKEN or the saved login (never written anywhere)


@dataclass
class PushResult:
    commit_url: str
    written: list[str]  # every file of the repository this push wrote
    removed: list[str] = field(default_factory=list)  # files an earlier push wrote that this run doesn't have
    private: bool = True


def push_run(options: PushOptions) -> PushResult:
    """Publish the finished run ``options.run`` to ``options.repo_id`` in one commit."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    manifest = finished_manifest(options.run)
    api = HfApi(endpoint=options.endpoint or os.environ.get("HF_ENDPOINT") or None, token=options.token)
    revision = options.revision or "main"
    with tempfile.TemporaryDirectory(prefix="synthforge-push-") as tmp:
        staged = stage_files(options.run, manifest, Path(tmp))
        head, private, existing = _open_repo(api, options, revision)
        ours = _previously_written(api.endpoint, options, revision, existing)
        foreign = sorted((set(staged) & existing) - ours)
        if foreign:
            raise UserError(
                f"{options.repo_id}@{revision}: the push would replace {len(foreign)} file(s) synthforge didn't write "
                f"there ({', '.join(foreign[:5])}); push to another repository or --revision"
            )
        removed = sorted((ours & existing) - set(staged))
        operations = [CommitOperationAdd(path, str(local)) for path, local in staged.items()]
        operations += [CommitOperationDelete(path) for path in removed]
        message = options.message or f"synthforge push: run {manifest['pipeline']['name']}"
        commit = api.create_commit(
            options.repo_id,
            operations,
            commit_message=message,
            repo_type="dataset",
            revision=revision,
            parent_commit=head,
        )
    return PushResult(commit.commit_url, sorted(staged), removed, private)


def push_export(run: Path, push: Any) -> PushResult:
    """A pipeline's ``export.push`` (a :class:`~synthforge.engine.spec.PushSpec`) done for its finished run; a
    push that can't be made says so in one line, the run being saved either way."""
    try:
        return push_run(PushOptions(run, push.repo_id, not push.public, push.revision, push.message))
    except UserError as exc:
        raise UserError(
            f"export.push: {exc} (the run is saved in {run}; push it with synthforge push {run} {push.repo_id})"
        ) from None


def finished_manifest(run: Path) -> dict[str, Any]:
    """The manifest of a run whose export finished and whose outputs are as it wrote them; else one line."""
    if not run.is_dir() or not is_run_dir(run):
        raise UserError(f"{run}: not a synthforge run directory (synthforge generate makes one)")
    if unfinished_export(run):
        raise UserError(f"{run}: its last export didn't finish (no manifest.json): run generate again to finish it")
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    for name, sha256 in (manifest.get("outputs") or {}).items():
        path = run / name
        if not path.is_file() or file_sha256(path) != sha256:
            raise UserError(f"{path}: not the file the run wrote (changed or missing since): refusing to publish it")
    return manifest


def stage_files(run: Path, manifest: dict[str, Any], out: Path) -> dict[str, Path]:
    """Every file of the push, written under ``out``: path in the repository -> local file."""
    staged: dict[str, Path] = {}
    data_files: dict[str, str] = {}
    for config, source in _configs(run, manifest).items():
        path = f"{config}/train-00000-of-00001.parquet"
        if _write_parquet(source, out / path):
            staged[path] = out / path
            data_files[config] = path
    provenance = _provenance(manifest)
    card = render_card(manifest, data_files, pushed_from=provenance)
    extra = {
        "README.md": card,
        "synthforge/manifest.json": (run / "manifest.json").read_text(encoding="utf-8"),
        "synthforge/pipeline.yaml": yaml.safe_dump(manifest["pipeline"]["resolved"], sort_keys=False),
        "synthforge/summary.json": json.dumps(_summary(manifest), indent=2, ensure_ascii=False) + "\n",
    }
    for path, text in extra.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(text, encoding="utf-8")
        staged[path] = out / path
    written = sorted([*staged, MARKER])
    marker = {"made_by": "synthforge push", "synthforge_version": __version__, "run": provenance, "files": written}
    (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    staged[MARKER] = out / MARKER
    return staged


def _configs(run: Path, manifest: dict[str, Any]) -> dict[str, Path]:
    """Each config the run wrote (as its dataset card names them) and its file in the run directory."""
    return {name: run / path for name, path in data_files_of(manifest).items()}


def _write_parquet(source: Path, target: Path) -> bool:
    """``source`` (JSONL, or parquet) as parquet with row groups of at most about ``ROW_GROUP_BYTES``; False (and
    nothing written) when it has no rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if source.suffix == ".parquet":
        table = pq.read_table(source)
    else:
        rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not rows:
            return False
        table = pa.Table.from_struct_array(pa.array(rows))  # every key of every row, not the first row's only
    if table.num_rows == 0:
        return False
    per_group = max(1, int(table.num_rows * ROW_GROUP_BYTES / max(table.nbytes, 1)))
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, target, row_group_size=per_group)
    return True


def _provenance(manifest: dict[str, Any]) -> dict[str, Any]:
    """Which run the pushed files came from."""
    return {
        "pipeline": manifest["pipeline"]["name"],
        "pipeline_sha256": manifest["pipeline"]["sha256"],
        "made_with": manifest.get("synthforge_version"),
        "outputs": manifest.get("outputs", {}),
    }


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """What labelled the data and how reliable it was (the judging stages' notes, counters and measured reports),
    and what the teacher calls cost."""
    judges = {
        stage["name"]: {
            "kind": stage["kind"],
            "notes": stage.get("notes", []),
            "counters": (stage.get("metrics") or {}).get("counters", {}),
            **({"judge_report": stage["judge_report"]} if stage.get("judge_report") else {}),
        }
        for stage in manifest["stages"]
        if stage["kind"] in JUDGING_KINDS
    }
    return {"run": _provenance(manifest), "judges": judges, "cost": manifest.get("cost")}


def _open_repo(api: Any, options: PushOptions, revision: str) -> tuple[str, bool, set[str]]:
    """The repository (created, private unless told otherwise, when missing) and the branch (created from main
    when missing): its head commit, whether it is private, and its files. A public repository takes a push only
    with ``private=False``."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = api.repo_info(options.repo_id, repo_type="dataset")
    except RepositoryNotFoundError:
        api.create_repo(options.repo_id, repo_type="dataset", private=options.private, exist_ok=True)
        info = api.repo_info(options.repo_id, repo_type="dataset")
    if options.private and not info.private:
        raise UserError(
            f"{options.repo_id} is public: pass --public to publish this run there (pushes are private by default: "
            "synthetic red-team data)"
        )
    try:
        info = api.repo_info(options.repo_id, repo_type="dataset", revision=revision)
    except RevisionNotFoundError:
        api.create_branch(options.repo_id, branch=revision, repo_type="dataset")
        info = api.repo_info(options.repo_id, repo_type="dataset", revision=revision)
    files = set(api.list_repo_files(options.repo_id, repo_type="dataset", revision=revision))
    return info.sha, bool(info.private), files


def _previously_written(endpoint: str, options: PushOptions, revision: str, existing: set[str]) -> set[str]:
    """The files an earlier push wrote (its marker's list), or none."""
    if MARKER not in existing:
        return set()
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    url = hf_hub_url(options.repo_id, MARKER, repo_type="dataset", revision=revision, endpoint=endpoint)
    response = get_session().get(url, headers=build_hf_headers(token=options.token), follow_redirects=True)
    hf_raise_for_status(response)
    return set(json.loads(response.content).get("files", []))
