"""Resume benchmark: rerunning a finished pipeline must make zero teacher calls and take < 2 % of the first run.

    python benchmarks/resume.py                      # 200 records on a small random model (default)
    python benchmarks/resume.py --teacher embedded   # the same on SmolLM2-135M (tens of minutes on 2 cores)

Prints the rerun/first-run time ratio and the teacher calls of each run, both measured in this process.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthforge.builtin import ROOT as BUILTIN  # noqa: E402
from synthforge.engine.runner import RunOptions, run_pipeline  # noqa: E402
from synthforge.engine.spec import load_pipeline  # noqa: E402
from synthforge.teachers.backends.transformers import load_teacher  # noqa: E402
from synthforge.testing import build_tiny_model  # noqa: E402


class CallCounter:
    """Counts conversations sent to the wrapped teacher."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    @property
    def identity(self):
        return self.inner.identity

    def generate(self, conversations, params):
        self.calls += len(conversations)
        return self.inner.generate(conversations, params)

    def score(self, conversations, continuations):
        return self.inner.score(conversations, continuations)


def seeds_file(target: Path, count: int) -> Path:
    """``count`` distinct prompts made from the shipped red-team seeds."""
    base = [line for line in (BUILTIN / "pipelines" / "seeds" / "red-team.jsonl").read_text().splitlines() if line]
    lines = [base[i % len(base)].replace('"prompt": "', f'"prompt": "(#{i}) ') for i in range(count)]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--teacher", default="random-small", help="'random-small', 'embedded' or a model path")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sf-resume-"))
    try:
        if args.teacher == "random-small":
            model_ref = str(build_tiny_model(work / "model", hidden_size=256, layers=4))
        else:
            model_ref = args.teacher
        seeds = seeds_file(work / "seeds.jsonl", args.records)
        overrides = [
            f"seeds.path={seeds}",
            f"stages.respond.sampling.max_new_tokens={args.max_new_tokens}",
            f"stages.critique_revise.sampling.max_new_tokens={args.max_new_tokens}",
        ]
        spec = load_pipeline(BUILTIN / "pipelines" / "cai-harmless.yaml", overrides)
        teacher = load_teacher(model_ref, batch_size=spec.teacher.batch_size)
        timings, calls = [], []
        for _ in range(2):
            counter = CallCounter(teacher)
            started = time.perf_counter()
            run_pipeline(spec, RunOptions(out_dir=work / "run", progress=False), teacher=counter, log=lambda _: None)
            timings.append(time.perf_counter() - started)
            calls.append(counter.calls)
        ratio = timings[1] / timings[0]
        print(f"records: {args.records}, teacher: {args.teacher}")
        print(f"first run: {timings[0]:.2f} s, {calls[0]} teacher calls")
        print(f"rerun:     {timings[1]:.3f} s, {calls[1]} teacher calls")
        verdict = "PASS" if ratio < 0.02 and calls[1] == 0 else "FAIL"
        print(f"ratio rerun/first: {ratio:.4f} ({ratio * 100:.2f} %; target < 2 %) -> {verdict}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
