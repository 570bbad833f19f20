"""Generation on Ray vs the local engine: the same respond job, same machine, same process, wall time.

    python benchmarks/ray_generate.py                  # embedded SmolLM2-135M, 2 replicas x 1 CPU on 2 cores
    python benchmarks/ray_generate.py --prompts 64 --max-new-tokens 64

Runs the respond stage (greedy, so every engine produces the same tokens) three ways, each a fresh run
including the teacher load (and, on Ray, Ray's start): the local engine (one process, every core: its
default lanes), `--engine ray` with 2
replicas of 1 CPU each (each actor sizes torch's threads to its CPUs), and 2 replicas left at torch's
default threads (what happens without that sizing). Prints each run's wall time and tokens/s, the ratio to
local, and whether the records are byte-identical to the local run's.
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

from synthforge.builtin import ROOT as BUILTIN  # noqa: E402
from synthforge.engine.ray_executor import RayExecutor  # noqa: E402
from synthforge.engine.runner import RunOptions, run_pipeline  # noqa: E402
from synthforge.engine.spec import load_pipeline  # noqa: E402


class DefaultThreadsExecutor(RayExecutor):
    """Actors that keep torch's default thread count (as many as the machine's cores) instead of their CPUs."""

    def _new_actor(self):
        import os

        options = {"num_cpus": self.resources.num_cpus, "num_gpus": self.resources.num_gpus}
        return self._remote.options(**options).remote(self.spec, os.cpu_count() or 1)


def pipeline(root: Path, args) -> Path:
    path = root / "respond.yaml"
    spec = {
        "name": "ray-generate",
        "seed": 0,
        "teacher": {"model": args.teacher, "batch_size": args.batch, "device": "cpu"},
        "seeds": {"path": str(BUILTIN / "pipelines" / "seeds" / "red-team.jsonl")},
        "paths": {"prompts": str(BUILTIN / "prompts"), "constitutions": str(BUILTIN / "constitutions")},
        "stages": [{"respond": {"sampling": {"temperature": 0.0, "max_new_tokens": args.max_new_tokens}}}],
    }
    path.write_text(json.dumps(spec))
    return path


def run(path: Path, out: Path, overrides: list[str], prompts: int) -> tuple[float, int, bytes]:
    started = time.perf_counter()
    result = run_pipeline(load_pipeline(path, overrides), RunOptions(out_dir=out, limit=prompts), log=lambda _: None)
    seconds = time.perf_counter() - started
    return seconds, result.manifest["usage"]["completion_tokens"], (out / "trace.jsonl").read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="embedded")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    import ray

    from synthforge.engine import ray_executor

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = pipeline(root, args)
        ray_args = ["engine.kind=ray", "engine.replicas=2", "engine.num_cpus=1", f"engine.chunk_size={args.batch}"]
        local_s, tokens, local_trace = run(path, root / "local", [f"engine.chunk_size={args.batch}"], args.prompts)
        print(f"local engine: {local_s:.1f} s, {tokens} tokens, {tokens / local_s:.1f} tok/s")
        try:
            for name, label, executor in (
                ("sized", "ray, 2 replicas x 1 CPU (threads = CPUs)", RayExecutor),
                ("default", "ray, 2 replicas x 1 CPU, torch default threads", DefaultThreadsExecutor),
            ):
                ray_executor.RayExecutor = executor  # the runner builds the executor from this module
                # the engine starts Ray itself inside the timing, as `synthforge generate --engine ray` does
                seconds, count, trace = run(path, root / name, ray_args, args.prompts)
                ray.shutdown()
                print(
                    f"{label}: {seconds:.1f} s (Ray's start included), {count} tokens, {count / seconds:.1f} tok/s "
                    f"= {local_s / seconds:.2f}x local speed (identical records: {trace == local_trace})"
                )
        finally:
            ray_executor.RayExecutor = RayExecutor
            ray.shutdown()


if __name__ == "__main__":
    main()
