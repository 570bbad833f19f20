"""Structured output on the embedded teacher: the first-try validity rate of the built-in `label` pipeline
(a schema with an enum, a bounded number, an array and a nested object) with constrained decoding and
without it (the same prompt, parsed and validated the same way), side by side in one process, and what the
grammar costs in tokens per second.

Both cases run once on 2 prompts before either is timed (the decoder's first batches, the grammar's
compilation), so neither pays a cold start the other doesn't.

    python benchmarks/structured.py               # 24 red-team prompts
    python benchmarks/structured.py --prompts 56
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthforge.builtin import find_pipeline  # noqa: E402
from synthforge.engine.runner import RunOptions, run_pipeline  # noqa: E402
from synthforge.engine.spec import load_pipeline  # noqa: E402
from synthforge.teachers.factory import build_teacher  # noqa: E402


def run(constrained: bool, prompts: int, teacher, root: Path, name: str = "") -> tuple[dict, float, int]:
    """(the generate stage's counters, seconds, completion tokens) of one run of the label pipeline."""
    overrides = [f"stages.generate.constrained={str(constrained).lower()}", "stages.generate.retries=0"]
    spec = load_pipeline(find_pipeline("label"), overrides)
    started = time.perf_counter()
    result = run_pipeline(
        spec, RunOptions(out_dir=root / f"{name}c{int(constrained)}", limit=prompts, progress=False), teacher=teacher
    )
    seconds = time.perf_counter() - started
    stage = result.manifest["stages"][0]
    return stage["metrics"]["counters"], seconds, stage["report"]["completion_tokens"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24)
    args = parser.parse_args()
    spec = load_pipeline(find_pipeline("label"))
    teacher = build_teacher(spec.teacher)
    with tempfile.TemporaryDirectory() as tmp:
        for constrained in (False, True):  # each case warmed alike before any timing: 2 prompts, their own run
            run(constrained, 2, teacher, Path(tmp), name="warm-")
        for constrained in (False, True):
            counters, seconds, tokens = run(constrained, args.prompts, teacher, Path(tmp))
            valid, asked = counters.get("valid_first_try", 0), counters.get("first_tries", 0)
            print(
                json.dumps(
                    {
                        "constrained": constrained,
                        "first_try_valid": f"{valid}/{asked} = {valid / max(asked, 1):.1%}",
                        "seconds": round(seconds, 1),
                        "completion_tokens": tokens,
                        "tokens_per_s": round(tokens / seconds, 1),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
