"""``synthforge batches PIPELINE``: the batches a run of PIPELINE still has running on its teachers' servers, read
from the run's batch log (its folder's checkpoints/batches.jsonl), and ``--cancel`` to cancel them (they keep
what they finished; a rerun sends the rest again)."""

from __future__ import annotations

from pathlib import Path

import click

from synthforge.builtin import find_pipeline
from synthforge.engine.batch_log import BatchLog
from synthforge.engine.prepare import default_out_dir
from synthforge.engine.rundir import is_run_dir, run_directory
from synthforge.engine.spec import load_pipeline
from synthforge.errors import UserError
from synthforge.teachers.base import BATCH
from synthforge.teachers.factory import build_teacher, teacher_capabilities
from synthforge.teachers.team import DEFAULT


@click.command()
@click.argument("pipeline")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="The run's folder (default: generate's).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec key, as generate does.")
@click.option("--cancel", is_flag=True, help="Cancel the running batches (what they finished is kept).")
def batches(pipeline, out_dir, overrides, cancel) -> None:
    """List (or --cancel) the running batches of a run of PIPELINE whose teachers send batches
    (teacher.openai.batch or teacher.anthropic.batch: true)."""
    spec = load_pipeline(find_pipeline(pipeline), list(overrides))
    named = {DEFAULT: spec.teacher, **spec.teachers}
    batching = {name: t for name, t in named.items() if BATCH in teacher_capabilities(t)}
    if not batching:
        where = "teacher.openai.batch or teacher.anthropic.batch"
        raise UserError(f"{spec.source}: no teacher sends batches (set {where}: true)")
    out_dir = (out_dir or default_out_dir(spec)).expanduser()
    if not is_run_dir(out_dir):
        raise UserError(f"--out {out_dir}: no run of {spec.name} there (give the folder generate wrote)")
    with run_directory(out_dir, spec.name):  # the run's lock: no run writes the log meanwhile
        log = BatchLog.of_run(out_dir)
        for name in sorted(log.owners() & set(batching)):
            _show(name, batching[name], log, cancel)
        if not log.owners() & set(batching):
            click.echo(f"{out_dir}: the run has sent no batches")


def _show(name: str, teacher_spec, log: BatchLog, cancel: bool) -> None:
    journal = log.view(name)
    scopes = frozenset(e["scope"] for e in journal.events() if e.get("step") == "intent")
    teacher = build_teacher(teacher_spec)
    try:
        teacher.keep_log(journal, scopes)  # every scope it recorded is live here: nothing is discarded
        found = teacher.cancel_outstanding() if cancel else teacher.outstanding()
    finally:
        teacher.close()
    verb = "cancelled" if cancel else "running"
    click.echo(f"teacher {name} ({teacher_spec.model}): {len(found)} batch(es) {verb}")
    for batch in found:
        click.echo(f"  {batch['id']}  {batch['status']}  {batch['done']}/{batch['total']} requests")
