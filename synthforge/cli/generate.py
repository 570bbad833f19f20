"""``synthforge generate``: run a pipeline file."""

from __future__ import annotations

from pathlib import Path

import click

from synthforge.builtin import find_pipeline
from synthforge.engine.costs import estimate, prompt_counter
from synthforge.engine.executor import EXECUTORS
from synthforge.engine.prepare import preview
from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.errors import TokenBudgetSpent
from synthforge.teachers.factory import teacher_overrides

BUDGET_SPENT_EXIT = TokenBudgetSpent.exit_code


@click.command()
@click.argument("pipeline")
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N seed prompts.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory (default: outputs/<pipeline name>). Rerunning into it resumes.",
)
@click.option("--seed", type=int, help="Override the pipeline's seed.")
@click.option(
    "--teacher",
    metavar="REF",
    help="Teacher: 'embedded' (SmolLM2-135M-Instruct), a model directory or .gguf file (transformers), "
    "'vllm:MODEL' (in-process vLLM), or 'openai:MODEL@URL' (any OpenAI-compatible server, e.g. "
    "openai:Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any spec key, e.g. --set stages.critique_revise.rounds=2 (repeatable).",
)
@click.option("--fresh", is_flag=True, help="Ignore checkpoints from earlier runs and recompute every stage.")
@click.option("--dry-run", is_flag=True, help="Validate and print the first prompt of every stage; load no model.")
@click.option("--explain", is_flag=True, help="Say for each stage why it was reused or recomputed.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: only on a terminal).")
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    help="Stop cleanly once this run's teacher calls used N tokens (prompt + completion); finished work is "
    f"checkpointed and the same command continues (exit code {BUDGET_SPENT_EXIT}).",
)
@click.option(
    "--engine",
    type=click.Choice(list(EXECUTORS)),
    help="Executor: local (this process) or ray (teacher replicas as Ray actors; pip install 'synthforge[ray]'; "
    "joins RAY_ADDRESS when set). Same as engine.kind in the pipeline.",
)
def generate(
    pipeline, limit, out_dir, seed, teacher, overrides, fresh, dry_run, explain, progress, max_tokens, engine
) -> None:
    """Run PIPELINE and write the dataset to its run directory. PIPELINE is a YAML file, or the name of a
    pipeline: NAME.yaml here or in ./pipelines/ if there is one, else the built-in of that name
    (cai-harmless, rlaif, self-instruct, ...: see `synthforge list`).

    \b
    The run directory holds sft.jsonl and dpo.jsonl (TRL conversational formats), trace.jsonl
    (every intermediate step), dropped.jsonl (every removed record and why), manifest.json
    (teacher, hashes, seed, versions, counts) and a dataset card README.md.
    """
    overrides = list(overrides)
    if seed is not None:
        overrides.append(f"seed={seed}")
    if teacher is not None:
        overrides.extend(teacher_overrides(teacher))
    if engine is not None:
        overrides.append(f"engine.kind={engine}")
    spec = load_pipeline(find_pipeline(pipeline), overrides)
    if dry_run:
        _print_dry_run(spec, limit, out_dir)
        return
    options = RunOptions(
        out_dir=out_dir, limit=limit, fresh=fresh, progress=progress, explain=explain, max_tokens=max_tokens
    )
    result = run_pipeline(spec, options)  # a spent budget or an unreliable judge stops it (cli.main: exit 3, 4)
    counts = result.manifest["counts"]
    funnel = " → ".join(f"{step['step']} {step['records']}" for step in result.manifest["funnel"])
    usage = result.manifest["usage"]
    click.echo(f"funnel: {funnel}")
    click.echo(f"teacher tokens this run: {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion")
    table = result.manifest["export"].get("table")
    datasets = [(f"{name}.jsonl", counts[name]) for name in ("sft", "dpo") if name in counts]
    if table and "table" in counts:
        datasets.append((f"table.{table['format']}", counts["table"]))
    listed = ", ".join(f"{name} ({rows})" for name, rows in datasets)
    click.echo(
        f"wrote {result.out_dir}/: {listed + ', ' if listed else ''}trace.jsonl ({counts['trace']}), "
        f"dropped.jsonl ({counts['dropped']}), manifest.json, README.md"
    )
    cost = result.manifest.get("cost")
    if cost:
        click.echo(f"cost of the teacher calls: ${cost['total_usd']:.4f} (prices: from the pipeline's prices:)")
    click.echo(f"report: {result.out_dir / 'report.html'} (open it in a browser; it loads nothing from the network)")
    if spec.export.push is not None:  # export.push: the finished run goes to the Hub, as synthforge push sends it
        from synthforge.hub.push import push_export

        pushed = push_export(result.out_dir, spec.export.push)
        where = f"{spec.export.push.repo_id} ({'private' if pushed.private else 'public'})"
        click.echo(f"pushed {len(pushed.written)} files to {where}: {pushed.commit_url}")


def _print_dry_run(spec, limit, out_dir) -> None:
    count, counted = prompt_counter(spec) if spec.prices else (None, "")
    shown = preview(spec, limit, out_dir, count)
    click.echo(
        f"pipeline {spec.name}: {shown.seeds} seed prompts, teacher {spec.teacher.backend}:{spec.teacher.model}, "
        f"output {shown.out_dir}/"
    )
    for stage, ref, path in shown.user_code:
        click.echo(f"runs your Python: stage {stage}: {ref} ({path or 'source not found'})")
    if spec.export.push is not None:
        visibility = "public" if spec.export.push.public else "private"
        click.echo(f"then pushes the run to the Hugging Face Hub: {spec.export.push.repo_id} ({visibility})")
    for stage, role, conversation in shown.prompts:
        click.echo(f"\n=== {stage} · {role} ===")
        for message in conversation:
            click.echo(f"[{message['role']}] {message['content']}")
    bound = estimate(spec, shown.calls)
    if bound is not None:
        cost, unpriced = bound
        click.echo(
            f"\nestimated cost: at most about ${cost:.4f} for {shown.seeds} seed prompts (every answer each stage may "
            "ask for counted: samples, rounds, principles, both orders, members, aspects, jurors; each at its "
            "stage's max_new_tokens, and upstream model text in a prompt at the largest max_new_tokens before it; "
            f"{counted})" + (f"; {unpriced} tokens of models without a price" if unpriced else "")
        )
