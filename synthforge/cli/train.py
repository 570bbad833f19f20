"""``synthforge train sft|dpo|reward|rlhf`` and ``synthforge eval``: thin commands over synthforge.train."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from synthforge.builtin import find_pipeline
from synthforge.cli.options import finite
from synthforge.stages.judging import MAX_FLIP_RATE, jury_problem
from synthforge.train.config import DPO_LOSSES, DPOTrainingConfig, SFTTrainingConfig, load_training_config


def _common(function):
    """Options shared by every ``train`` command (each also settable in --config YAML)."""
    options = [
        click.option("--data", help="Run directory (reads sft.jsonl / dpo.jsonl), a JSONL file, or a saved dataset."),
        click.option("--model", help="Student: 'embedded' (SmolLM2-135M-Instruct), a model directory or a .gguf file."),
        click.option("--out", help="Where to save the student (default: <data>/student-<kind>)."),
        click.option(
            "--config",
            "config_path",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="YAML file with the same keys as these options (options given here win).",
        ),
        click.option("--epochs", type=float, help="Training epochs (default 1)."),
        click.option("--max-steps", type=int, help="Stop after N optimizer steps (overrides --epochs)."),
        click.option(
            "--lr",
            "learning_rate",
            type=float,
            help="Learning rate (default: SFT 2e-5, DPO 5e-6, reward 1e-5, RLHF 1e-6).",
        ),
        click.option("--batch-size", type=int, help="Per-device batch size (default 8)."),
        click.option("--grad-accum", type=int, help="Gradient accumulation steps (default 1)."),
        click.option("--max-length", type=int, help="Max tokens per sequence (default 512)."),
        click.option("--eval-fraction", type=float, help="Held-out share for evaluation (default 0.1)."),
        click.option("--seed", type=int, help="Seed for the split, shuffling and init (default 42)."),
        click.option("--device", help="cpu or cuda (default: cuda if available)."),
        click.option("--lora/--no-lora", default=None, help="Train LoRA adapters (merged into the saved model)."),
        click.option("--lora-r", type=int, help="LoRA rank (default 16)."),
        click.option("--lora-alpha", type=int, help="LoRA alpha (default 32)."),
        click.option("--lora-targets", help="Comma-separated module names (default q_proj,k_proj,v_proj,o_proj)."),
        click.option(
            "--compare-prompts",
            type=click.Path(dir_okay=False, path_type=Path),
            help="After training, judge the trained model against the starting one on these held-out prompts "
            "(eval compare, embedded judge) and record the result in training.json.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _settings(options: dict[str, Any]) -> tuple[Path | None, dict[str, Any]]:
    """The --config path and the given options as config keys (LoRA options nested under ``lora``)."""
    config_path = options.pop("config_path")
    options.pop("compare_prompts", None)  # handled after training by _compare_after
    targets = options.pop("lora_targets")
    options["lora"] = {
        "enabled": options.pop("lora"),
        "r": options.pop("lora_r"),
        "alpha": options.pop("lora_alpha"),
        "target_modules": [t.strip() for t in targets.split(",") if t.strip()] if targets else None,
    }
    return config_path, options


def _compare_after(prompts: Path | None, start: str, result) -> None:
    """``--compare-prompts``: judge the trained model against the one it started from, record it in
    training.json and print the summary."""
    if prompts is None:
        return
    from synthforge.eval.compare import CompareOptions, format_report, run_compare
    from synthforge.train.report import record_comparison

    report = run_compare(
        CompareOptions(models=[start, str(result.out_dir)], prompts=prompts, out=result.out_dir / "compare")
    )
    record_comparison(result.out_dir, {k: v for k, v in report.items() if k != "out_dir"})
    click.echo("\n".join(format_report(report)))


def _notes(metrics: dict[str, Any]) -> None:
    """What a reader must not miss: no held-out evaluation, a shrunk batch, a drifting policy."""
    if metrics.get("no_evaluation"):
        click.echo(f"note: {metrics['no_evaluation']}", err=True)
    for warning in metrics.get("warnings") or []:
        click.echo(f"warning: {warning}", err=True)


def _require_data(config) -> None:
    if not config.data:
        raise click.UsageError("give --data (or 'data:' in --config)")


def _run_training(options: dict[str, Any], config_cls: type, training_cls: type) -> tuple[Any, Any, Path | None]:
    """--config and the options → the training config → its run: (config, result, --compare-prompts)."""
    compare_prompts = options.get("compare_prompts")
    path, settings = _settings(options)
    config = load_training_config(config_cls, path, settings)
    _require_data(config)
    return config, training_cls(config).run(), compare_prompts


@click.group()
def train() -> None:
    """Train a student on generated data with TRL: SFT, then DPO, or a reward model and RLHF (RLOO).

    \b
    synthforge train sft --data outputs/cai-harmless --model embedded --out outputs/cai-harmless/student-sft
    synthforge train dpo --data outputs/cai-harmless --model outputs/cai-harmless/student-sft
    synthforge train reward --data outputs/rlaif --model embedded --out outputs/rlaif/reward
    synthforge train rlhf --prompts outputs/rlaif --model outputs/cai-harmless/student-sft --reward outputs/rlaif/reward
    \b
    Each run saves model + tokenizer (with chat template), training.json (config, metrics, versions) and
    loss.png. On CPU it trains in fp32 without gradient checkpointing; on a GPU in bf16.
    """


@train.command("sft")
@_common
@click.option(
    "--assistant-turns",
    type=click.Choice(["final", "all"]),
    help="Which assistant turns of a conversation the loss covers: the final one (default; earlier turns may be "
    "another model's or a person's) or every one.",
)
def train_sft(**options) -> None:
    """Supervised fine-tuning; the loss covers the assistant's answer only (the final turn of a conversation, or
    every assistant turn with --assistant-turns all)."""
    from synthforge.train.sft import SFTTraining

    config, result, compare_prompts = _run_training(options, SFTTrainingConfig, SFTTraining)
    click.echo(f"train loss {result.metrics['train_loss']:.4f} after {result.metrics['train_steps']} steps")
    _notes(result.metrics)
    click.echo(f"wrote {result.out_dir}/ (model, tokenizer, training.json, loss.png)")
    _compare_after(compare_prompts, config.model, result)


@train.command("dpo")
@_common
@click.option("--beta", type=float, help="DPO beta (default 0.1).")
@click.option("--loss-type", type=click.Choice(DPO_LOSSES), help="TRL DPO loss (default sigmoid).")
@click.option("--reference", help="Reference model (default: --model); ignored with LoRA (the base is the reference).")
@click.option("--evaluate/--no-evaluate", default=None, help="Preference accuracy on held-out pairs before and after.")
def train_dpo(**options) -> None:
    """Direct preference optimisation on chosen/rejected pairs, evaluated before and after."""
    from synthforge.train.dpo import DPOTraining

    config, result, compare_prompts = _run_training(options, DPOTrainingConfig, DPOTraining)
    metrics = result.metrics
    click.echo(f"train loss {metrics['train_loss']:.4f} after {metrics['train_steps']} steps")
    before, after = metrics.get("eval_before"), metrics.get("eval_after")
    if before and after:
        click.echo(
            f"held-out preference accuracy {before['accuracy']:.2f} → {after['accuracy']:.2f}, "
            f"mean margin {before['mean_margin']:+.4f} → {after['mean_margin']:+.4f} ({after['pairs']} pairs)"
        )
    _notes(result.metrics)
    click.echo(f"wrote {result.out_dir}/ (model, tokenizer, training.json, loss.png)")
    _compare_after(compare_prompts, config.model, result)


@train.command("reward")
@_common
@click.option(
    "--labels",
    type=click.Choice(["auto", "hard", "soft", "margin"]),
    help="auto (default): soft labels (the judge's confidence) when rows have them, else hard.",
)
@click.option("--center-rewards", type=float, help="TRL's coefficient keeping rewards centred on zero.")
def train_reward(**options) -> None:
    """A reward model (a scalar head on --model) on preference pairs, evaluated before and after: pairwise
    accuracy, mean reward gap, and calibration against the judge's confidences."""
    from synthforge.train.config import RewardTrainingConfig
    from synthforge.train.reward import RewardTraining

    if options.get("compare_prompts"):
        raise click.UsageError("--compare-prompts compares models that answer prompts; a reward model scores them")
    _, result, _ = _run_training(options, RewardTrainingConfig, RewardTraining)
    metrics = result.metrics
    click.echo(
        f"train loss {metrics['train_loss']:.4f} after {metrics['train_steps']} steps ({metrics['labels']} labels)"
    )
    before, after = metrics.get("eval_before"), metrics.get("eval_after")
    if before and after:
        click.echo(
            f"held-out pairwise accuracy {before['accuracy']:.2f} → {after['accuracy']:.2f}, mean reward gap "
            f"{before['mean_gap']:+.4f} → {after['mean_gap']:+.4f} ({after['pairs']} pairs)"
        )
    _notes(metrics)
    click.echo(f"wrote {result.out_dir}/ (reward model, tokenizer, training.json, loss.png)")


@train.command("rlhf")
@_common
@click.option("--reward", help="Reward model directory (from `synthforge train reward`).")
@click.option("--prompts", "prompts", help="Prompts: a run directory, a JSONL or text file (same as --data).")
@click.option("--beta", type=float, help="KL coefficient (default 0.05).")
@click.option("--num-generations", type=int, help="Samples per prompt for RLOO's baseline (default 4).")
@click.option("--max-completion-length", type=int, help="Most tokens per sampled answer (default 64).")
@click.option("--evaluate/--no-evaluate", default=None, help="Held-out mean reward and KL before and after.")
def train_rlhf(**options) -> None:
    """RLHF with TRL's RLOO: the policy (--model) is optimised against --reward, with --beta × its KL to the
    starting policy subtracted from the reward; held-out mean reward and KL are reported before and after."""
    from synthforge.train.config import RLHFTrainingConfig
    from synthforge.train.rlhf import RLHFTraining

    prompts = options.pop("prompts")
    if prompts and not options.get("data"):
        options["data"] = prompts
    config, result, compare_prompts = _run_training(options, RLHFTrainingConfig, RLHFTraining)
    metrics = result.metrics
    click.echo(f"RLOO loss {metrics['train_loss']:.4f} after {metrics['train_steps']} steps")
    before, after = metrics.get("eval_before"), metrics.get("eval_after")
    if before and after:
        click.echo(
            f"held-out mean reward {before['mean_reward']:+.4f} → {after['mean_reward']:+.4f}, KL to the start "
            f"{before['mean_kl']:.4f} → {after['mean_kl']:.4f} nats ({after['prompts']} prompts)"
        )
    _notes(metrics)
    click.echo(f"wrote {result.out_dir}/ (policy, tokenizer, training.json, loss.png)")
    _compare_after(compare_prompts, config.model, result)


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
