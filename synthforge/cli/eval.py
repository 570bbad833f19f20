"""``synthforge eval``: preference accuracy of a trained model, ``eval judge`` (how far a judge agrees with human
labels) and ``eval compare`` (a judge comparing models' answers): thin commands over synthforge.eval."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from synthforge.builtin import find_pipeline
from synthforge.cli.options import finite
from synthforge.stages.helpers.judging import MAX_FLIP_RATE, jury_problem


@click.group("eval", invoke_without_command=True)
@click.option("--model", help="Model to evaluate: a directory, a .gguf file, or 'embedded'.")
@click.option("--data", help="Run directory (dpo.jsonl), a JSONL file, or a saved dataset.")
@click.option("--reference", help="Reference model: margins are taken relative to its margins.")
@click.option("--eval-fraction", type=float, default=None, help="Score only the held-out share (as train dpo splits).")
@click.option("--seed", type=int, default=42, show_default=True, help="Split seed (match train dpo's).")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--max-length", type=int, default=512, show_default=True)
@click.option("--device", help="cpu or cuda (default: cuda if available).")
@click.pass_context
def evaluate(ctx, model, data, reference, eval_fraction, seed, batch_size, max_length, device) -> None:
    """Preference accuracy: the share of pairs where the model's length-normalised log-probability margin
    (chosen − rejected, minus the reference's margin when given) is positive, and the mean margin.

    \b
    synthforge eval --model DIR --data RUN            # preference accuracy on pairs
    synthforge eval compare --models BASE,STUDENT     # judge-based comparison on held-out prompts
    """
    if ctx.invoked_subcommand is not None:
        return
    if not model or not data:
        raise click.UsageError("give --model and --data (or a subcommand: compare)")
    from synthforge.train.data import load_rows, split
    from synthforge.train.evaluate import evaluate_preferences
    from synthforge.train.student import load_student

    rows = load_rows(data, "dpo")
    if eval_fraction:
        _, rows = split(rows, eval_fraction, seed)
    student = load_student(model, device, for_training=False)
    ref = load_student(reference, device, for_training=False).model if reference else None
    report = evaluate_preferences(student.model, student.tokenizer, list(rows), ref, batch_size, max_length)
    relative = " (relative to the reference)" if ref is not None else ""
    click.echo(
        f"preference accuracy {report.accuracy:.3f}, mean margin {report.mean_margin:+.4f} "
        f"over {report.pairs} pairs{relative}"
    )


@evaluate.command("judge")
@click.argument("pairs", required=False, type=click.Path(path_type=Path))
@click.option("--judge", default="embedded", show_default=True, help="The judge: any --teacher reference.")
@click.option("--constitution", default="harmless", show_default=True, help="Whose compare: questions it answers.")
@click.option("--template", default="judge", show_default=True, help="The judge's question template (prompts/).")
@click.option(
    "--principles", type=click.IntRange(min=0), default=1, show_default=True, help="Questions per pair (0: all)."
)
@click.option("--chain-of-thought/--no-chain-of-thought", default=False, help="The judge reasons before answering.")
@click.option("--limit", type=click.IntRange(min=1), help="Measure only the first N pairs.")
@click.option(
    "--max-flip-rate",
    type=click.FloatRange(0, 1),
    callback=finite,
    default=MAX_FLIP_RATE,
    show_default=True,
    help="Above it the judge is unreliable (the threshold every judging stage uses).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Principle draws and the bootstrap.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the report as JSON here.")
@click.option(
    "--jury",
    multiple=True,
    help="A jury instead of --judge: give it twice or more (teacher references); each judge is measured too.",
)
@click.option(
    "--jury-rule",
    type=click.Choice(["mean", "majority"]),
    default="mean",
    show_default=True,
    help="How the jury's verdicts make one (as the judging stages' jury: setting).",
)
def judge(
    pairs, judge, constitution, template, principles, chain_of_thought, limit, max_flip_rate, seed, out, jury, jury_rule
) -> None:
    """Measure a judge against human-labelled preference PAIRS: TRL preference rows (prompt/chosen/rejected) or
    HH-RLHF chosen/rejected transcripts, "chosen" being the human's choice. Each pair is asked in both orders;
    prints the accuracy with its bootstrap 95% interval, the flip, first-position, longer-answer and tie rates,
    the calibration error and two baselines (always the longer answer, always the first), and whether the judge
    is reliable. It measures, it never drops. Without PAIRS, the calibration set synthforge ships (when it has one).
    """
    from synthforge.eval.judge import JudgeRun, format_report, run_judge_eval

    problem = jury_problem(jury) if jury else None
    if problem:
        raise click.UsageError(f"--jury: {problem} (one judge: --judge)")
    run = JudgeRun(pairs, judge, constitution, template, principles, chain_of_thought, limit, max_flip_rate, seed, out)
    report = run_judge_eval(replace(run, jury=tuple(jury), jury_rule=jury_rule))
    click.echo("\n".join(format_report(report)))
    if out is not None:
        click.echo(f"wrote {out}")


@evaluate.command("compare")
@click.option(
    "--models",
    required=True,
    help="Comma-separated teacher references, the base first: embedded, a directory, a .gguf, openai:MODEL@URL, "
    "vllm:MODEL.",
)
@click.option(
    "--prompts", type=click.Path(path_type=Path), help="Held-out prompts (default: pipelines/eval/heldout.jsonl)."
)
@click.option("--judge", help="The judge: any --teacher reference (default: the pipeline's, the embedded teacher).")
@click.option("--constitution", help="Constitution whose compare: questions the judge answers (default harmless).")
@click.option("--principles", type=click.IntRange(min=0), help="Compare questions per prompt (0: all).")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Run directory (default: outputs/eval-compare)."
)
@click.option(
    "--pipeline",
    default="eval-compare",
    show_default="the built-in eval-compare pipeline",
    help="The comparison pipeline to run: a file, or a pipeline's name (NAME.yaml here or in pipelines/, else "
    "a built-in).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N prompts.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), help="Most tokens per answer.")
@click.option(
    "--temperature",
    type=click.FloatRange(min=0),
    callback=finite,
    default=0.0,
    show_default=True,
    help="Answer sampling temperature (0: greedy); answers are seeded either way.",
)
@click.option("--harmful-field", help="Boolean column marking harmful prompts (default: harmful).")
@click.option("--seed", type=int, help="Seed of sampling, principle draws and the bootstrap.")
def compare(
    models,
    prompts,
    judge,
    constitution,
    principles,
    out,
    pipeline,
    limit,
    max_new_tokens,
    temperature,
    harmful_field,
    seed,
) -> None:
    """Each model answers every held-out prompt; the judge compares each pair of answers in both orders on
    the constitution's compare: questions. Prints win/tie/loss with the win rate's bootstrap 95% interval,
    the judge's swap agreement, and per model the share of harmful prompts answered and of benign ones
    refused. Cached and resumable like generate; writes compare.json and compare.md."""
    from synthforge.eval.compare import CompareOptions, format_report, run_compare

    options = CompareOptions(
        models=[m.strip() for m in models.split(",") if m.strip()],
        prompts=prompts,
        judge=judge,
        constitution=constitution,
        principles=principles,
        out=out,
        pipeline=find_pipeline(pipeline),
        limit=limit,
        seed=seed,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        harmful_field=harmful_field,
    )
    report = run_compare(options)
    click.echo("\n".join(format_report(report)))
    click.echo(f"wrote {report['out_dir']}/compare.json and compare.md")
