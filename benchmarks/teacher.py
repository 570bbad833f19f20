"""Teacher throughput: generated tokens/s at batch sizes > 1 as a ratio to batch 1, same process, same prompts.

    python benchmarks/teacher.py                       # embedded SmolLM2-135M on this machine
    python benchmarks/teacher.py --teacher DIR --batch-sizes 1,16,64 --device cuda

Also prints the teacher's start time (load from the converted cache).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthforge.teachers.base import SamplingParams  # noqa: E402
from synthforge.teachers.loading import load_teacher, resolve_teacher_dir  # noqa: E402


def prompts(count: int) -> list[list[dict[str, str]]]:
    lines = (REPO / "pipelines" / "seeds" / "red-team.jsonl").read_text().splitlines()
    texts = [json.loads(line)["prompt"] for line in lines if line]
    return [[{"role": "user", "content": texts[i % len(texts)]}] for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="embedded")
    parser.add_argument("--batch-sizes", default="1,16,64")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    resolve_teacher_dir(args.teacher)  # converts a GGUF teacher once, outside the timing
    started = time.perf_counter()
    teacher = load_teacher(args.teacher, device=args.device)
    print(f"teacher start (cached weights): {time.perf_counter() - started:.2f} s  [{teacher.identity}]")
    # min_new_tokens is not used: every row samples until EOS or the limit, as in real runs.
    params = SamplingParams(temperature=0.7, max_new_tokens=args.max_new_tokens, seed=0)
    baseline = None
    for size in (int(s) for s in args.batch_sizes.split(",")):
        teacher.batch_size = size
        convs = prompts(max(size, 8))
        teacher.generate(convs[:1], params.with_seed(99))  # warm-up
        started = time.perf_counter()
        out = teacher.generate(convs, [params.with_seed(i) for i in range(len(convs))])
        seconds = time.perf_counter() - started
        tokens = sum(c.completion_tokens for group in out for c in group)
        rate = tokens / seconds
        baseline = baseline or rate
        print(
            f"batch {size:>3}: {len(convs):>3} prompts, {tokens:>5} tokens in {seconds:6.1f} s = "
            f"{rate:7.1f} tok/s  ({rate / baseline:.1f}x batch {args.batch_sizes.split(',')[0]})"
        )


if __name__ == "__main__":
    main()
