"""What a training run leaves next to the model: ``training.json`` and ``loss.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthforge.files import write_atomic


def loss_points(log_history: list[dict[str, Any]], key: str = "loss") -> list[tuple[int, float]]:
    """(step, value) pairs of ``key`` in a Trainer's log history."""
    return [(int(e["step"]), float(e[key])) for e in log_history if key in e and "step" in e]


def save_loss_curve(log_history: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Plot training (and eval) loss against steps into ``path``; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rewards = loss_points(log_history, "reward")
    figure, axes = plt.subplots(1, 2 if rewards else 1, figsize=(11 if rewards else 6, 3.5), dpi=120, squeeze=False)
    panels = [(axes[0][0], "loss", (("loss", "train"), ("eval_loss", "eval")))]
    if rewards:  # RL: the reward the policy earned during training, and its KL to the reference
        panels.append((axes[0][1], "reward / KL", (("reward", "reward"), ("kl", "KL to reference"))))
    for axis, ylabel, series in panels:
        for key, label in series:
            points = loss_points(log_history, key)
            if points:
                axis.plot(*zip(*points, strict=True), marker="o" if len(points) < 30 else None, label=label)
        axis.set_xlabel("step")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0][0].set_title(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def write_training_json(path: Path, payload: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")


def record_comparison(out_dir: Path, comparison: dict[str, Any]) -> None:
    """Add a judged comparison (``eval compare``) to a training run's ``training.json``, holding its lock."""
    from synthforge.files import output_lock, read_text

    with output_lock(out_dir, "--out", "train"):
        path = out_dir / "training.json"
        training = json.loads(read_text(path, "training.json"))
        training["compare"] = comparison
        write_training_json(path, training)
