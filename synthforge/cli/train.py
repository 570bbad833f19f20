"""``synthforge train sft|dpo|reward|rlhf``: thin commands over synthforge.train."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

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
