"""Trainer throughput: our SFT and DPO (TRL underneath) vs a plain PyTorch loop on the same batches.

    python benchmarks/train.py                      # SmolLM2-135M (embedded), 2 CPU cores: a few minutes
    python benchmarks/train.py --model DIR --device cuda --steps 30

The plain loop is the floor any trainer pays: forward, backward, AdamW step, in fp32 on CPU (bf16 autocast on
GPU). Every run sees the same rows in the same order, batch size and max length, and is timed alike: the
model loaded and the rows tokenized (chat template) before the timing, the first step cold inside it (the
plain loops' own clock; the trainers' ``train_runtime``). Prints tokens/s of each (non-padding tokens of
the sequences trained on) and the ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthforge.train.config import DPOTrainingConfig, RewardTrainingConfig, SFTTrainingConfig  # noqa: E402
from synthforge.train.dpo import DPOTraining  # noqa: E402
from synthforge.train.reward import RewardTraining  # noqa: E402
from synthforge.train.reward_model import load_reward_model  # noqa: E402
from synthforge.train.sft import SFTTraining  # noqa: E402
from synthforge.train.student import load_student  # noqa: E402

TOPICS = ["bread", "tides", "volcanoes", "photosynthesis", "chess", "bridges", "vaccines", "rainbows"]


def make_rows(n: int) -> tuple[list[dict], list[dict]]:
    """SFT and DPO rows about ``n`` prompts, answers of ~100 tokens (deterministic)."""
    sft, dpo = [], []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        prompt = [{"role": "user", "content": f"Explain {topic} to a curious twelve-year-old (question {i})."}]
        good = (
            f"{topic.capitalize()} are easier to understand than they look. "
            + "Start with what you can see, then ask why it happens, and check each idea against an example. " * 3
        )
        bad = f"I don't know much about {topic}. " + "It is complicated and you should look it up yourself. " * 3
        sft.append({"messages": [*prompt, {"role": "assistant", "content": good}]})
        dpo.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": good}],
                "rejected": [{"role": "assistant", "content": bad}],
            }
        )
    return sft, dpo


def plain_loop(model_ref: str, rows: list[dict], batch_size: int, steps: int, device: str | None) -> float:
    """Tokens/s of a bare forward/backward/AdamW loop over the SFT rows."""
    student = load_student(model_ref, device)
    model, tokenizer = student.model, student.tokenizer
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    dev = next(model.parameters()).device
    batches = [  # tokenized before the timing, as TRL prepares its dataset before train_runtime starts
        tokenizer(
            [texts[(step * batch_size + j) % len(texts)] for j in range(batch_size)],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=512,
        ).to(dev)
        for step in range(steps)
    ]
    tokens = 0
    started = time.perf_counter()  # the first step cold, as in TRL's train_runtime
    for batch in batches:
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return tokens / (time.perf_counter() - started)


def plain_reward_loop(model_ref: str, rows: list[dict], batch_size: int, steps: int, device: str | None) -> float:
    """Tokens/s of a bare reward-model loop over the pairs: scalar head on chosen and rejected, −log σ(gap)."""
    model, tokenizer, _, _ = load_reward_model(model_ref, device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    dev = next(model.parameters()).device
    chosen = [tokenizer.apply_chat_template(r["prompt"] + r["chosen"], tokenize=False) for r in rows]
    rejected = [tokenizer.apply_chat_template(r["prompt"] + r["rejected"], tokenize=False) for r in rows]
    batches = []  # tokenized before the timing, as TRL prepares its dataset before train_runtime starts
    for step in range(steps):
        picks = [(step * batch_size + j) % len(rows) for j in range(batch_size)]
        texts = [chosen[i] for i in picks] + [rejected[i] for i in picks]
        batches.append(tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=512).to(dev))
    tokens = 0
    started = time.perf_counter()  # the first step cold, as in TRL's train_runtime
    for batch in batches:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            rewards = model(**batch).logits[:, 0]
        loss = -torch.nn.functional.logsigmoid(rewards[:batch_size] - rewards[batch_size:]).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
    return tokens / (time.perf_counter() - started)


def rloo_step_split(model_ref: str, reward_dir: str, out: Path, device: str | None) -> dict[str, float]:
    """Seconds of one RLOO step spent generating, scoring with the reward model and optimising (the rest),
    averaged over a few steps; measured by timing TRL's own methods."""
    from trl import RLOOTrainer

    from synthforge.train.config import RLHFTrainingConfig
    from synthforge.train.rlhf import RLHFTraining

    spent = {"generation": 0.0, "scoring": 0.0}
    originals = {"generation": RLOOTrainer._generate, "scoring": RLOOTrainer._calculate_rewards}

    def timed(name):
        def wrapper(self, *args, **kwargs):
            started = time.perf_counter()
            try:
                return originals[name](self, *args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started

        return wrapper

    prompts = out / "prompts.txt"
    prompts.write_text("\n".join(f"Explain {t} to a curious twelve-year-old." for t in TOPICS) + "\n")
    steps = 3
    RLOOTrainer._generate, RLOOTrainer._calculate_rewards = timed("generation"), timed("scoring")
    try:
        config = RLHFTrainingConfig(
            model=model_ref,
            reward=reward_dir,
            data=str(prompts),
            out=str(out / "rlhf-out"),
            max_steps=steps,
            batch_size=4,
            num_generations=4,
            max_completion_length=48,
            eval_fraction=0.0,
            device=device,
        )
        result = RLHFTraining(config).run()
    finally:
        RLOOTrainer._generate, RLOOTrainer._calculate_rewards = originals["generation"], originals["scoring"]
    total = float(result.metrics["train_runtime_s"])
    split = {name: seconds / steps for name, seconds in spent.items()}
    split["optimisation and the rest"] = total / steps - sum(split.values())
    return split


def trainer_tokens_per_s(result) -> float:
    """Tokens/s from the trainer's own log: tokens seen over its train runtime."""
    seen = max((e.get("num_tokens", 0) for e in result.log_history), default=0)
    return float(seen) / float(result.metrics["train_runtime_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = args.steps * args.batch_size
    sft_rows, dpo_rows = make_rows(rows)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        (data / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft_rows), encoding="utf-8")
        (data / "dpo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dpo_rows), encoding="utf-8")
        plain = plain_loop(args.model, sft_rows, args.batch_size, args.steps, args.device)
        print(f"plain PyTorch loop: {plain:,.0f} tokens/s")
        common = {
            "model": args.model,
            "data": str(data),
            "max_steps": args.steps,
            "batch_size": args.batch_size,
            "eval_fraction": 0.0,
            "device": args.device,
            "logging_steps": 1,
        }
        sft = SFTTraining(SFTTrainingConfig(**common, out=str(data / "sft-out"))).run()
        sft_speed = trainer_tokens_per_s(sft)
        print(
            f"synthforge SFT:     {sft_speed:,.0f} tokens/s = {sft_speed / plain:.2f}x the plain loop (target >= 0.7x)"
        )
        for precompute in (False, True):
            config = DPOTrainingConfig(**common, out=str(data / "dpo-out"), evaluate=False, precompute_ref=precompute)
            started = time.perf_counter()
            dpo = DPOTraining(config).run()
            wall = time.perf_counter() - started
            dpo_speed = trainer_tokens_per_s(dpo)
            seen = dpo_speed * float(dpo.metrics["train_runtime_s"])
            how = "reference log-probs precomputed once" if precompute else "reference forward on every step"
            print(
                f"synthforge DPO ({how}): {dpo_speed:,.0f} tokens/s in training = {dpo_speed / plain:.2f}x the plain "
                f"loop (target >= 0.7x); counting the whole run (loading, precompute, saving): {seen / wall:,.0f} "
                "tokens/s"
            )
        plain_rm = plain_reward_loop(args.model, dpo_rows, args.batch_size, args.steps, args.device)
        print(f"plain reward-model loop: {plain_rm:,.0f} tokens/s")
        reward = RewardTraining(RewardTrainingConfig(**common, out=str(data / "rm-out"))).run()
        reward_speed = trainer_tokens_per_s(reward)
        print(
            f"synthforge reward model: {reward_speed:,.0f} tokens/s = {reward_speed / plain_rm:.2f}x the plain "
            "reward loop (target >= 0.7x)"
        )
        split = rloo_step_split(args.model, str(reward.out_dir), data, args.device)
        print(
            "one RLOO step (batch 4, 4 samples per prompt, 48 new tokens): "
            + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in split.items())
        )


if __name__ == "__main__":
    main()
