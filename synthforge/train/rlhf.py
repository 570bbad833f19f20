"""RLHF: optimise a policy against a reward model with TRL's RLOO (REINFORCE leave-one-out), with
``beta`` × KL to the starting policy subtracted from the reward — the classic RLHF objective, no value model.

Reports, on held-out prompts, the mean reward of the policy's answers and their KL to the starting policy
before and after training; a run whose KL explodes or whose reward falls is flagged in the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from synthforge import rows
from synthforge.errors import UserError
from synthforge.models import token_logprobs
from synthforge.rows import Message
from synthforge.train.common import (
    TrainingOutput,
    TrainingResult,
    finish,
    peft_config,
    training_output,
    trl_arguments,
    trl_config,
)
from synthforge.train.config import RLHFTrainingConfig
from synthforge.train.data import check_roles, row_count, split
from synthforge.train.reward_model import check_reward_dir, load_reward_model, reward_scores
from synthforge.train.student import load_student

KL_ALARM = 10.0  # nats per answer: above this the policy has drifted far from where it started


def read_prompts(source: str | Path) -> list[list[Message]]:
    """The conversations to answer (every turn up to the last user turn, system first) from a run directory (its
    ``dpo.jsonl``, else ``sft.jsonl``), or any file of prompts a pipeline's seeds may be (every layout of
    ``synthforge.rows``; text: one per line)."""
    path = Path(source).expanduser()
    if path.is_dir():
        candidates = [path / "dpo.jsonl", path / "sft.jsonl"]
        path = next((c for c in candidates if c.is_file()), candidates[0])
    if not path.is_file():
        raise UserError(f"prompts {source}: not found (give a run directory, a JSONL file or a text file)")
    return [[*r.history, {"role": "user", "content": r.prompt}] for r in rows.read_dialogues(path, harmful_field=None)]


@dataclass
class PolicyReport:
    """Held-out: the mean reward of the policy's answers and their mean KL to the starting policy (nats)."""

    mean_reward: float
    mean_kl: float
    prompts: int

    def as_dict(self) -> dict[str, Any]:
        return {"mean_reward": round(self.mean_reward, 4), "mean_kl": round(self.mean_kl, 4), "prompts": self.prompts}


def _answer_logprob(model, ids: list[int], start: int, pad_id: int) -> float:
    """log π(answer | prompt) of a generated sequence whose answer starts at token ``start``."""
    return sum(token_logprobs(model, [(ids[:start], ids[start:])], pad_id)[0])


@torch.inference_mode()
def evaluate_policy(
    policy, reference, tokenizer, reward, prompts: list[list[Message]], config: RLHFTrainingConfig
) -> PolicyReport:
    """One seeded sample per held-out prompt: its reward, and log π(answer) − log π_ref(answer) (a KL estimate)."""
    was_training = policy.training
    policy.eval()
    device = next(policy.parameters()).device
    rewards, kls = [], []
    torch.manual_seed(config.seed)
    for conversation in prompts:
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        encoded = tokenizer(text, add_special_tokens=False, return_tensors="pt").to(device)
        out = policy.generate(
            **encoded,
            do_sample=True,
            temperature=config.temperature,
            max_new_tokens=config.max_completion_length,
            pad_token_id=tokenizer.pad_token_id,
        )
        start, ids, pad_id = encoded["input_ids"].shape[1], out[0].tolist(), tokenizer.pad_token_id
        kls.append(_answer_logprob(policy, ids, start, pad_id) - _answer_logprob(reference, ids, start, pad_id))
        answer = tokenizer.decode(out[0, start:], skip_special_tokens=True).strip()
        rewards.append(
            reward_scores(reward[0], reward[1], [[*conversation, {"role": "assistant", "content": answer}]])[0]
        )
    policy.train(was_training)
    return PolicyReport(sum(rewards) / len(rewards), sum(kls) / len(kls), len(prompts))


class RLHFTraining:
    """``RLHFTraining(config).run()``: held-out reward and KL before, RLOO against the reward model, after."""

    def __init__(self, config: RLHFTrainingConfig):
        self.config = config

    def run(self) -> TrainingResult:
        config = self.config
        if not config.reward:
            raise UserError("give --reward (a directory made by `synthforge train reward`)")
        check_reward_dir(config.reward)
        with training_output(config, "rlhf", [config.data, config.model, config.reward]) as output:
            return self._run(config, output)

    def _run(self, config: RLHFTrainingConfig, output: TrainingOutput) -> TrainingResult:
        import datasets
        from trl import RLOOConfig, RLOOTrainer

        started = time.time()
        prompts = read_prompts(config.data)
        rows = datasets.Dataset.from_list([{"prompt": conversation} for conversation in prompts])
        train_rows, eval_rows = (rows, None) if config.eval_fraction <= 0 else _split(rows, config)
        batch_size, grad_accum, note = rloo_batch(config, train_rows.num_rows)
        held_out = [r["prompt"] for r in eval_rows] if (eval_rows is not None and config.evaluate) else []
        student = load_student(config.model, config.device)
        check_roles(student.tokenizer, rows, config.model)
        reference = load_student(config.model, config.device, for_training=False).model
        reward_model, reward_tokenizer, _, _ = load_reward_model(config.reward, config.device)
        reward_model.eval()
        reward = (reward_model, reward_tokenizer)
        before = (
            evaluate_policy(student.model, reference, student.tokenizer, reward, held_out, config) if held_out else None
        )
        arguments = trl_arguments(config, student.model.device, output.work, False)
        arguments.pop("max_length")
        arguments.update(per_device_train_batch_size=batch_size, gradient_accumulation_steps=grad_accum)
        args = trl_config(
            RLOOConfig,
            **arguments,
            beta=config.beta,
            num_generations=config.num_generations,
            max_completion_length=config.max_completion_length,
            temperature=config.temperature,
        )
        trainer = RLOOTrainer(
            model=student.model,
            reward_funcs=reward_model,
            args=args,
            train_dataset=train_rows,
            processing_class=student.tokenizer,
            reward_processing_classes=reward_tokenizer,
            peft_config=peft_config(config.lora),
        )
        trainer.train()
        after = (
            evaluate_policy(trainer.model, reference, student.tokenizer, reward, held_out, config) if held_out else None
        )
        extra: dict[str, Any] = {
            "eval_before": before.as_dict() if before else None,
            "eval_after": after.as_dict() if after else None,
            "warnings": [*([note] if note else []), *_warnings(before, after)],
        }
        return finish(
            "rlhf",
            trainer,
            student,
            config,
            output,
            train_rows.num_rows,
            row_count(eval_rows),
            started,
            extra,
            data_kind="dpo" if (Path(config.data) / "dpo.jsonl").is_file() else "sft",
        )


def rloo_batch(config: RLHFTrainingConfig, prompts: int) -> tuple[int, int, str | None]:
    """(batch size, gradient accumulation, a note when changed): RLOO samples ``num_generations`` answers per
    prompt, so a step takes ``batch_size × grad_accum / num_generations`` prompts, and TRL skips an incomplete
    group — fewer prompts than that would train no step, so the batch shrinks to the prompts there are."""
    completions = config.batch_size * config.grad_accum
    if completions % config.num_generations:
        raise UserError(
            f"--batch-size × --grad-accum ({completions}) must be a multiple of --num-generations "
            f"({config.num_generations}): RLOO compares each prompt's answers within one batch"
        )
    per_step = completions // config.num_generations
    if prompts >= per_step:
        return config.batch_size, config.grad_accum, None
    if prompts == 0:
        raise UserError(f"{config.data}: no training prompts left after holding out the evaluation share")
    batch = prompts * config.num_generations
    note = (
        f"only {prompts} training prompt(s), fewer than the {per_step} a step takes: batch shrunk to {batch} "
        f"completions ({prompts} prompt(s) × {config.num_generations}), gradient accumulation 1"
    )
    return batch, 1, note


def _split(rows, config: RLHFTrainingConfig):
    return split(rows, config.eval_fraction, config.seed)


def _warnings(before: PolicyReport | None, after: PolicyReport | None) -> list[str]:
    """What a reader of the report must not miss: the KL exploding, the reward collapsing."""
    found = []
    if after is not None and after.mean_kl > KL_ALARM:
        found.append(
            f"KL to the starting policy is {after.mean_kl:.1f} nats per answer (> {KL_ALARM:g}): it drifted far"
        )
    if before is not None and after is not None and after.mean_reward < before.mean_reward:
        found.append(f"held-out mean reward fell: {before.mean_reward:.3f} → {after.mean_reward:.3f}")
    return found
