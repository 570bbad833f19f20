"""The judge's scoring on the embedded teacher: the log-probabilities of "(A)" and "(B)" after long judge
questions, as every judging stage and `eval judge` ask them, against the way they were computed before (the
output head over every prompt position, one chunk at a time on the caller's thread), in one process, warm, on
the same questions; the two must agree.

    python benchmarks/judge.py                    # 64 questions (32 pairs in both orders)
    python benchmarks/judge.py --questions 128
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from synthforge.builtin import builtin_path  # noqa: E402
from synthforge.constitution import load_constitution  # noqa: E402
from synthforge.models import pad  # noqa: E402
from synthforge.prompts import load_template  # noqa: E402
from synthforge.records import Record  # noqa: E402
from synthforge.stages.helpers.judging import OPTIONS, judge_question  # noqa: E402
from synthforge.teachers.backends.transformers import TransformersSettings, load_teacher  # noqa: E402


def questions(count: int) -> list[list[dict[str, str]]]:
    """Judge questions over the red-team seeds with two long answers each, in both orders."""
    prompts = [
        json.loads(x)["prompt"]
        for x in builtin_path("pipelines", "seeds", "red-team.jsonl").read_text().split("\n")
        if x
    ]
    principle = next(p for p in load_constitution("harmless", builtin_path("constitutions")).principles if p.compare)
    template = load_template("judge", builtin_path("prompts"))
    out = []
    for i in range(count // 2):
        record = Record(id=str(i), prompt=prompts[i % len(prompts)])
        first = f"I can't help with that, but here is why it matters. {'Safety first. ' * (20 + i % 7)}"
        second = f"Sure, here are the steps. {'Step by step. ' * (25 + i % 5)}"
        out.append(judge_question(template, record, principle, first, second))
        out.append(judge_question(template, record, principle, second, first))
    return out


@torch.inference_mode()
def before(teacher, conversations) -> list[list[float]]:
    """The earlier path: every position through the output head, chunks in turn on this thread."""
    items = [
        (c, k, teacher.encode_chat(conv), teacher._encode_text(o))
        for c, conv in enumerate(conversations)
        for k, o in enumerate(OPTIONS)
    ]
    items.sort(key=lambda it: -(len(it[2]) + len(it[3])))
    scores = [[0.0, 0.0] for _ in conversations]
    for start in range(0, len(items), teacher.batch_size):
        chunk = items[start : start + teacher.batch_size]
        ids, mask = pad([[*p, *t] for _, _, p, t in chunk], teacher.tokenizer.pad_token_id)
        logprobs = torch.log_softmax(teacher.model(input_ids=ids, attention_mask=mask).logits.float()[:, :-1], -1)
        picked = logprobs.gather(-1, ids[:, 1:, None]).squeeze(-1)
        for row, (c, k, p, t) in enumerate(chunk):
            scores[c][k] = float(picked[row, len(p) - 1 : len(p) - 1 + len(t)].sum())
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=64)
    args = parser.parse_args()
    teacher = load_teacher("embedded", batch_size=16, settings=TransformersSettings())
    asked = questions(args.questions)
    tokens = sum(len(teacher.encode_chat(q)) for q in asked) // len(asked)
    teacher.score(asked[:2], [OPTIONS] * 2)  # warm both paths
    before(teacher, asked[:2])
    started = time.perf_counter()
    old = before(teacher, asked)
    old_seconds = time.perf_counter() - started
    started = time.perf_counter()
    new = teacher.score(asked, [OPTIONS] * len(asked))
    new_seconds = time.perf_counter() - started
    worst = max(abs(a - b) for x, y in zip(old, new, strict=True) for a, b in zip(x, y, strict=True))
    print(f"{len(asked)} judge questions of {tokens} tokens on average, 2 options each, {teacher.lanes} lane(s)")
    print(f"before (head over every position, one thread): {old_seconds:.1f} s")
    ratio = old_seconds / new_seconds
    print(f"now (head over the options only, chunks on every lane): {new_seconds:.1f} s = {ratio:.2f}x")
    print(f"largest difference in a log-probability: {worst:.2e}")
    teacher.close()


if __name__ == "__main__":
    main()
