"""``synthforge batches PIPELINE``: the batches a pipeline's batch-mode teachers still have running on their
servers, and ``--cancel`` to cancel them (they keep what they finished; a rerun sends the rest again)."""

from __future__ import annotations

import click

from synthforge.builtin import find_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.errors import UserError
from synthforge.teachers.base import BATCH
from synthforge.teachers.factory import build_teacher, teacher_capabilities
from synthforge.teachers.team import DEFAULT


@click.command()
@click.argument("pipeline")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec key, as generate does.")
@click.option("--cancel", is_flag=True, help="Cancel the running batches (what they finished is kept).")
def batches(pipeline, overrides, cancel) -> None:
    """List (or --cancel) the running batches of PIPELINE's teachers with teacher.openai.batch: true."""
    spec = load_pipeline(find_pipeline(pipeline), list(overrides))
    named = {DEFAULT: spec.teacher, **spec.teachers}
    batching = {name: t for name, t in named.items() if BATCH in teacher_capabilities(t)}
    if not batching:
        raise UserError(f"{spec.source}: no teacher sends batches (set teacher.openai.batch: true)")
    for name, teacher_spec in batching.items():
        teacher = build_teacher(teacher_spec)
        try:
            found = teacher.cancel_outstanding() if cancel else teacher.outstanding()
        finally:
            teacher.close()
        verb = "cancelled" if cancel else "running"
        click.echo(f"teacher {name} ({teacher_spec.model}): {len(found)} batch(es) {verb}")
        for batch in found:
            counts = batch.get("request_counts") or {}
            click.echo(
                f"  {batch['id']}  {batch['status']}  {counts.get('completed', 0)}/{counts.get('total', 0)} "
                f"requests  created {batch.get('created_at')}"
            )
