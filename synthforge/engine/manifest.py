"""The manifest of a run: everything needed to explain any record of it (what made it: the pipeline, each
stage's settings, templates and constitution, the teachers by name, the files read, package versions, counts
and the funnel), with paths made public (relative to the pipeline file: a manifest may be published)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthforge import __version__
from synthforge.builtin import builtin_label
from synthforge.engine.prepare import PreparedRun
from synthforge.engine.spec import PipelineSpec
from synthforge.engine.stagework import StageReport
from synthforge.hashing import file_sha256
from synthforge.provenance import file_hashes, package_versions, public_path, redact_paths
from synthforge.settings import config_to_dict
from synthforge.stages.base import Stage
from synthforge.teachers.factory import teacher_settings
from synthforge.teachers.team import DEFAULT, Team

OUTPUT_FILES = ("sft.jsonl", "dpo.jsonl", "table.jsonl", "table.parquet", "trace.jsonl", "dropped.jsonl", "README.md")


def named_teachers(spec: PipelineSpec, team: Team) -> dict[str, Any]:
    """Each named teacher the stages called: its identity and settings, under its name (the manifest's
    ``teachers``; the default teacher stays under ``teacher``)."""
    base = spec.base_dir
    return {
        name: {
            "identity": redact_paths(teacher.identity, base),
            "settings": redact_paths(teacher_settings(spec.teacher_spec_of(name)), base),
        }
        for name, teacher in team.items()
        if name != DEFAULT
    }


def user_code(stage: Stage, base: Path) -> list[dict[str, Any]]:
    """The user's own Python a stage runs: each reference, its source file (relative to the pipeline file where
    it can be; no home directories) and the file's hash."""
    return [
        {"ref": ref, "file": public_path(path, base) if path else None, "sha256": file_sha256(path) if path else None}
        for ref, path in stage.user_code()
    ]


def build_manifest(
    prepared: PreparedRun,
    team: Team,
    reports: list[StageReport],
    counts: dict[str, int],
    funnel: list[dict[str, Any]],
    seconds: float,
) -> dict[str, Any]:
    """Everything needed to explain any record of the run (paths relative to the pipeline file: it may be
    published, so no home directories)."""
    spec = prepared.spec
    base = spec.base_dir
    stage_files: dict[str, str] = {}
    stages = []
    for stage, report in zip(prepared.stages, reports, strict=True):
        stage_files.update(stage.files())
        stages.append(
            {
                "name": stage.name,
                "kind": stage.kind,
                "fingerprint": report.fingerprint,
                "config": config_to_dict(stage.config),
                "templates": {
                    role: {"path": public_path(t.path, base), "sha256": t.sha256} for role, t in stage.templates.items()
                },
                "tags": list(stage.tags),
                "constitution": stage.constitution.name if stage.constitution else None,
                "constitution_sha256": stage.constitution.sha256 if stage.constitution else None,
                "report": {k: v for k, v in vars(report).items() if k not in ("name", "kind", "fingerprint")},
                **({"user_code": user_code(stage, base)} if stage.user_code() else {}),
                **stage.provenance(),
            }
        )
    return {
        "synthforge_version": __version__,
        "pipeline": {
            "name": spec.name,
            "path": builtin_label(spec.source) or spec.source.name,
            "sha256": file_sha256(spec.source),
            "description": spec.description,
            "resolved": redact_paths(spec.raw, base),
        },
        "teacher": redact_paths(team.default.identity, base) if team.default is not None else None,
        "teacher_settings": redact_paths(teacher_settings(spec.teacher), base),
        **({"teachers": named_teachers(spec, team)} if set(team) - {DEFAULT} else {}),
        "usage": {
            "prompt_tokens": sum(r.prompt_tokens for r in reports),
            "completion_tokens": sum(r.completion_tokens for r in reports),
            "by_stage": {
                r.name: {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens} for r in reports
            },
        },
        "seed": spec.seed,
        "stages": stages,
        "files": file_hashes(stage_files, [spec.seeds_path] if spec.seeds_path else [], base),
        "versions": package_versions(),
        "export": config_to_dict(spec.export),
        "counts": counts,
        "funnel": funnel,
        "seconds": round(seconds, 2),
    }
