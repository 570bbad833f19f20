"""Run a pipeline: validate everything, load the teacher, run stages with checkpoints, export.

Data flows one way: spec → stages → records → exporters. Each stage runs over all records of the
previous one in deterministic batches; finished batches are checkpointed under the stage's
fingerprint, so a rerun reuses them and a killed run resumes where it stopped.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from synthforge.engine.batch_log import BatchBars, BatchLog, batched_teachers, keep_logs
from synthforge.engine.checkpoint import Journal, StageCheckpoint, load_results, save_results
from synthforge.engine.context import Log, RunContext, RunOptions
from synthforge.engine.costs import run_costs
from synthforge.engine.dataset_card import render_card
from synthforge.engine.executor import EXECUTOR_MEMBERS, Executor, executor_kind, whole_with_retries
from synthforge.engine.exporters import export_run
from synthforge.engine.manifest import OUTPUT_FILES, build_manifest
from synthforge.engine.prepare import PreparedRun, default_out_dir, prepare, teacher_needs
from synthforge.engine.rundir import remove_checkpoints, run_directory
from synthforge.engine.spec import PipelineSpec
from synthforge.engine.stagework import Budget, StageReport, StageWork, new_tokens, record_of
from synthforge.engine.statistics import collect_metrics, format_drop_reasons, format_table, group_tables
from synthforge.engine.streaming import Schedule, record_length, run_segment
from synthforge.errors import StageFailed, TokenBudgetSpent, UserError
from synthforge.files import write_atomic, writing
from synthforge.hashing import canonical_json, file_sha256, stable_hash
from synthforge.records import Drop, Record
from synthforge.report.html import write_run_report
from synthforge.stages.base import DatasetStage, Stage
from synthforge.teachers.base import (
    Teacher,
    is_remote,
    requests_at_once,
    says_ready,
)
from synthforge.teachers.factory import (
    LazyTeacher,
    batch_size,
    teacher_settings,
)
from synthforge.teachers.team import DEFAULT, Team


@dataclass
class RunResult:
    out_dir: Path
    manifest: dict[str, Any]
    reports: list[StageReport] = field(default_factory=list)


def run_pipeline(
    spec: PipelineSpec,
    options: RunOptions | None = None,
    teacher: Teacher | None = None,
    log: Log | None = None,
    teachers: dict[str, Teacher] | None = None,
) -> RunResult:
    """Run ``spec`` end to end and return the manifest; ``teacher`` overrides loading ``spec.teacher``, and
    ``teachers`` named teachers of ``spec.teachers``."""
    options = options or RunOptions()
    log = log or (lambda message: print(message, file=sys.stderr))
    given = {**(teachers or {}), **({DEFAULT: teacher} if teacher is not None else {})}
    prepared = prepare(spec, options.limit, teacher, teachers)
    owned = Team(_lazy_teachers(prepared, [n for n in prepared.teacher_names if n not in given], log))
    team = Team({**owned, **{name: given[name] for name in prepared.teacher_names if name in given}})
    with run_directory(options.out_dir or default_out_dir(spec), spec.name) as out_dir:
        try:
            return _run_locked(prepared, out_dir, team, options, log)
        finally:
            owned.close()


def _lazy_teachers(prepared: PreparedRun, names: list[str], log: Log) -> dict[str, Teacher]:
    """A teacher per name, its identity known now, its weights or connection made on first use (when what its
    stages need is probed); names with the same settings share one (a model is loaded once)."""
    spec = prepared.spec
    keys = {name: canonical_json(teacher_settings(spec.teacher_spec_of(name))) for name in names}
    built: dict[str, LazyTeacher] = {}
    for name, key in keys.items():
        if key not in built:
            needs = frozenset().union(*(teacher_needs(prepared.stages, n) for n, k in keys.items() if k == key))
            built[key] = LazyTeacher(spec.teacher_spec_of(name), needs, log)
    return {name: built[key] for name, key in keys.items()}


def _run_locked(prepared: PreparedRun, out_dir: Path, team: Team, options: RunOptions, log: Log):
    """The run itself, with ``out_dir`` claimed and locked."""
    batched = batched_teachers(team)
    bars = BatchBars(None if options.progress is None else not options.progress, log)
    # each keeps its submissions in the run's log; the running batches of a stage since edited are cancelled
    if batched and (cancelled := keep_logs(BatchLog.of_run(out_dir, bars), batched, prepared.stages)):
        log(f"{cancelled} running batch(es) of stage settings no longer in the pipeline cancelled")
    if options.fresh:
        for teacher in batched.values():  # a fresh run takes nothing from earlier batches, and stops those running
            teacher.forget_batches()
        remove_checkpoints(out_dir)
        if batched:
            keep_logs(BatchLog.of_run(out_dir, bars), batched, prepared.stages)  # a new log
    executor = build_executor(prepared.spec, team)
    ctx = RunContext(prepared, out_dir, team, options, log, executor, Budget(options.max_tokens), time.time())
    try:
        result = _run_stages(ctx)
    except TokenBudgetSpent:
        _cancel_running(batched, log)  # nothing more is paid for
        raise
    finally:
        executor.close()
    _release_batches(batched, log)
    return result


def _cancel_running(batched: dict[str, Any], log: Log) -> None:
    """The budget is spent: each batch-mode teacher's running batches cancelled (a failure only warns)."""
    for name, teacher in batched.items():
        try:
            log(f"budget spent: {len(teacher.cancel_outstanding())} running batch(es) cancelled")
        except UserError as exc:
            log(f"warning: teacher {name}: its running batches were not cancelled ({exc}); see synthforge batches")


def _release_batches(batched: dict[str, Any], log: Log) -> None:
    """The run's results are saved: what its batches left on the servers is deleted (a failure only warns: the
    outputs are whole, and ``synthforge batches`` lists what is left)."""
    for name, teacher in batched.items():
        try:
            released = teacher.release_batches()
        except UserError as exc:
            log(f"warning: teacher {name}: the run's batches were not released ({exc}); synthforge batches lists them")
        else:
            if released:
                log(f"teacher {name}: {released} batch submission(s) released (uploads and results deleted)")


def build_executor(spec: PipelineSpec, team: Team) -> Executor:
    """The executor ``engine.kind`` names, built from its settings (an optional extra is imported only then);
    one that lacks a member of the :class:`Executor` protocol is refused in one line."""
    executor = executor_kind(spec.engine.kind).build(spec.engine.options, spec.teacher, team)
    missing = [name for name in EXECUTOR_MEMBERS if not hasattr(executor, name)]
    if missing:
        raise UserError(f"engine.kind {spec.engine.kind}: its executor lacks {', '.join(missing)} (see Executor)")
    return executor


def _run_stages(ctx: RunContext) -> RunResult:
    """Every stage in order, then the export (the manifest last) and the report."""
    stages = ctx.prepared.stages
    records, drops, reports = ctx.prepared.records, [], []
    funnel = [{"step": "seeds", "records": len(records)}]
    in_flight, batch = pipeline_plan(ctx.spec, ctx.team, ctx.executor)
    schedule = Schedule(in_flight, batch, longest_first=in_flight == 1)
    # send each stage's first batch alone when a remote teacher isn't known to be up (asked once, when a first
    # batch is sent: a fully cached rerun opens no connection)
    probe = functools.cache(lambda: any(is_remote(t) and not says_ready(t) for t in ctx.team.values()))
    index = 0
    while index < len(stages):
        stage = stages[index]
        if ctx.executor.pipelines and not stage.whole_dataset:  # the one local scheduler; consecutive per-record
            segment = _segment(stages, index)  # stages run as one pipeline (one batch in flight: in turn)
            works = [StageWork(index + k, s, ctx.team, ctx.checkpoints) for k, s in enumerate(segment)]
            done = run_segment(ctx, works, records, schedule, probe)
        else:  # a whole-dataset stage, or an executor with its own parallelism (Ray's actors): stage by stage
            segment = [stage]
            done = [_run_stage(ctx, index, stage, records)]
        for step, (kept, stage_drops, report) in zip(segment, done, strict=True):
            _check_balance(step, len(records), len(kept), len(stage_drops))
            records = kept
            drops.extend(stage_drops)
            reports.append(report)
            funnel.append({"step": step.name, "records": len(records)})
            ctx.log(_report_line(report, ctx.options.explain))
        index += len(segment)
    manifest = _publish(ctx, records, drops, reports, funnel)
    return RunResult(out_dir=ctx.out_dir, manifest=manifest, reports=reports)


def _segment(stages: list[Stage], index: int) -> list[Stage]:
    """The per-record stages from ``index`` up to the next whole-dataset stage."""
    end = index
    while end < len(stages) and not stages[end].whole_dataset:
        end += 1
    return stages[index:end]


def _publish(
    ctx: RunContext, records: list[Record], drops: list[Drop], reports: list[StageReport], funnel: list[dict[str, Any]]
) -> dict[str, Any]:
    """The export, the dataset card and the report, the manifest last (and returned): each stage's metrics and
    notes, and its group tables, said in the log too."""
    spec, prepared, out_dir, log = ctx.spec, ctx.prepared, ctx.out_dir, ctx.log
    # The manifest goes first and comes back last: a run directory without one is an export that didn't finish.
    with writing(out_dir):
        (out_dir / "manifest.json").unlink(missing_ok=True)
    table = (spec.export.table.file, spec.export.table.fields) if spec.export.table else None
    keep = spec.export.reasoning == "keep"
    counts = export_run(out_dir, records, drops, spec.export.sft, spec.export.dpo, spec.export.system, table, keep)
    if counts["dropped"] != len(drops):
        raise StageFailed(f"dropped.jsonl holds {counts['dropped']} rows for {len(drops)} drops")
    funnel.append({"step": "kept (sft)" if "sft" in counts else "kept", "records": counts.get("sft", len(records))})
    manifest = build_manifest(prepared, ctx.team, reports, counts, funnel, time.time() - ctx.started)
    manifest["engine"] = ctx.executor.describe()
    summaries = collect_metrics(prepared.stages, [*records, *(d.record for d in drops)])
    for entry, summary, stage in zip(manifest["stages"], summaries, prepared.stages, strict=True):
        entry["metrics"] = summary
        entry["notes"] = stage.notes(summary)
        for note in entry["notes"]:
            log(f"note [{stage.name}]: {note}")
    cost = run_costs(spec, [*records, *(d.record for d in drops)])
    if cost is not None:
        manifest["cost"] = cost
        log(f"cost of the teacher calls behind these records: ${cost['total_usd']:.4f}")
    manifest["groups"] = group_tables(prepared.stages, summaries)
    for group, table in manifest["groups"].items():  # each group's members also under its plural (principles)
        manifest.setdefault(f"{group}s", table["members"])
    for group, table in manifest["groups"].items():
        log("\n".join(format_table(group, table)))
    write_atomic(out_dir / "README.md", render_card(manifest))
    manifest["outputs"] = {name: file_sha256(out_dir / name) for name in OUTPUT_FILES if (out_dir / name).is_file()}
    write_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    write_run_report(out_dir)  # made from the files above, so it comes last
    return manifest


def _check_balance(stage: Stage, inputs: int, kept: int, dropped: int) -> None:
    """Every record that enters a stage leaves it kept or dropped; anything else is a bug that stops the run.
    (Stages that write new prompts — Magpie, Self-Instruct — make a new set of records and are exempt.)"""
    if stage.whole_dataset and stage.generates:
        return
    if kept + dropped != inputs:
        raise StageFailed(f"stage {stage.name}: {inputs} records in, but {kept} kept + {dropped} dropped")


def _plan_batches(records: list[Record], size: int) -> list[list[int]]:
    """Deterministic batches over all inputs, similar lengths together (longest first)."""
    order = sorted(range(len(records)), key=lambda i: (-record_length(records[i]), i))
    return [order[i : i + size] for i in range(0, len(order), size)]


def _run_stage(
    ctx: RunContext, index: int, stage: Stage, records: list[Record]
) -> tuple[list[Record], list[Drop], StageReport]:
    if stage.whole_dataset:
        work = StageWork(index, stage, ctx.team, ctx.checkpoints, stable_hash([r.content_hash() for r in records]))
        distributed = stage.distributed(ctx.executor.workers())  # same fingerprint, same results
        results, cached = _dataset_results(ctx, distributed, records, work)
        ctx.budget.spend(sum(work.tokens), stage.name)
        return work.finish(len(records), results, len(records) if cached else 0)
    work = StageWork(index, stage, ctx.team, ctx.checkpoints)
    results, reused = _batched_results(ctx, work, records)
    return work.finish(len(records), results, reused)


def _batched_results(ctx: RunContext, work: StageWork, records: list[Record]) -> tuple[list[Record | Drop], int]:
    """One result per record, batch by batch, each batch checkpointed as it finishes; and how many were reused."""
    stage, checkpoint = work.stage, work.checkpoint
    keys = [r.content_hash() for r in records]
    reused = sum(1 for k in keys if checkpoint.get(k) is not None)
    # plan: the driver turns the checkpoint into the batches still to do
    plan = [
        todo for batch in _plan_batches(records, chunk_size(ctx.spec)) if (todo := _unfinished(batch, keys, checkpoint))
    ]
    bar = tqdm(total=len(records), initial=reused, desc=stage.name, unit="rec", disable=ctx.quiet, leave=True)
    try:
        # execute: the executor maps the stage over the planned batches, in any order
        batches = [[records[i] for i in todo] for todo in plan]
        for number, results in ctx.executor.run(stage, batches, ctx.team, ctx.retries):
            todo = plan[number]
            # commit: the driver is the only writer of checkpoints
            work.commit([(keys[i], records[i], r) for i, r in zip(todo, results, strict=True)], ctx.budget)
            bar.update(len(todo))
            bar.set_postfix_str(f"{work.tokens[0] / max(time.time() - work.started, 1e-9):.0f} tok/s")
    finally:
        bar.close()
    return [checkpoint.get(k) for k in keys], reused


def _unfinished(indices: list[int], keys: list[str], checkpoint: StageCheckpoint) -> list[int]:
    return [i for i in indices if checkpoint.get(keys[i]) is None]


MAX_IN_FLIGHT = 128  # batches; each holds a worker thread


def pipeline_plan(spec: PipelineSpec, team: Team, executor: Executor) -> tuple[int, int]:
    """(batches in flight, records per batch) for per-record stages. A teacher that serves concurrent calls gets
    small batches, so that a slow request holds back few records, and enough of them to queue several times what
    it serves: a remote one (an HTTP window, whose latencies vary by request) batches of 1/16 of its window and
    six windows queued, a local one (a continuous-batching decoder) batches of 1/4 and three. A teacher that
    doesn't, or an executor that can't pipeline, gets one batch of ``chunk_size`` at a time (stage by stage).
    ``engine.chunk_size`` (or ``teacher.batch_size``) and ``engine.batches_in_flight``, when set, override the
    sizes."""
    chunk = chunk_size(spec)
    if not executor.pipelines:  # an executor without submit runs stage by stage
        return 1, chunk
    told = executor.batches_in_flight
    distinct = team.distinct()  # names may share one teacher
    serves = sum(requests_at_once(t) for t in distinct) or 1  # each teacher keeps its own window busy
    if serves <= 1:
        return (told or 1), chunk
    share, depth = (16, 6) if any(is_remote(t) for t in distinct) else (4, 3)
    batch = spec.engine.chunk_size or spec.teacher.batch_size or max(1, min(chunk, serves // share))
    return (told or min(MAX_IN_FLIGHT, max(2, -(-depth * serves // batch)))), batch


def chunk_size(spec: PipelineSpec) -> int:
    """Records per checkpointed unit: ``engine.chunk_size``, else the teacher's batch size."""
    return spec.engine.chunk_size or batch_size(spec.teacher)


def _dataset_results(
    ctx: RunContext, stage: DatasetStage, records: list[Record], work: StageWork
) -> tuple[list[Record | Drop], bool]:
    """All results of a whole-dataset stage, and whether they came from its checkpoint (new tokens go to
    ``work.tokens``)."""
    saved = load_results(work.path)
    if saved is not None:
        return saved, True
    bar = tqdm(total=stage.progress_total(records), desc=stage.name, unit="rec", disable=ctx.quiet, leave=True)
    journal = Journal(work.path.with_suffix(".journal.jsonl"))
    try:
        results = whole_with_retries(stage, records, ctx.team, bar.update, journal, ctx.retries)
    finally:
        bar.close()
    save_results(work.path, results)
    journal.discard()
    known = {r.id: r for r in records}
    spent = [new_tokens(known.get(record_of(r).id, _EMPTY), r) for r in results]
    work.tokens = [sum(c for c, _ in spent), sum(p for _, p in spent)]
    return results, False


_EMPTY = Record(id="", prompt="")


def _report_line(report: StageReport, explain: bool) -> str:
    line = (
        f"[{report.name}] {report.inputs} in → {report.kept} kept, {report.dropped} dropped; "
        f"reused {report.reused}, computed {report.computed} ({report.seconds:.1f}s, "
        f"{report.prompt_tokens} prompt + {report.completion_tokens} completion tokens)"
    )
    if report.drop_reasons:
        line += "; " + format_drop_reasons(report.drop_reasons)
    if explain or report.computed:
        line += f" — {report.why}"
    return line
