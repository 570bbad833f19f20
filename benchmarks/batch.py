"""The same pipeline online and in batch mode against `synthforge serve --state-dir` (our Batch API server):
both times, whether the outputs are the same, and the cost each would have on a hosted API's price table.

One server (its own process, a tiny random model so the figure is about the two paths, not the model) answers a
`respond` stage over N prompts: first online (`/v1/chat/completions`, a window of requests), then through the
Batch API (`teacher.openai.batch: true`: one batch file, polled). The cost is computed from the runs' own usage
with an example price table (USD 2.50 / 10.00 per million input / output tokens, batches at half price), beside
the bound `--dry-run` gives before either runs.

    python benchmarks/batch.py                  # 64 prompts, 16 new tokens each
    python benchmarks/batch.py --prompts 256
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthforge.builtin import ROOT as BUILTIN  # noqa: E402
from synthforge.engine.costs import estimate, prompt_counter  # noqa: E402
from synthforge.engine.prepare import preview  # noqa: E402
from synthforge.engine.runner import RunOptions, run_pipeline  # noqa: E402
from synthforge.engine.spec import load_pipeline  # noqa: E402
from synthforge.testing import build_tiny_model  # noqa: E402
from tests.fault_server import serve_handle  # noqa: E402

PRICES = {"tiny": {"input": 2.5, "output": 10.0, "batch_discount": 0.5}}


def run(root: Path, url: str, model: Path, prompts: int, tokens: int, batch: bool) -> tuple[float, dict, bytes, float]:
    """(seconds of the stage, the manifest's cost, sft.jsonl's bytes, the dry run's cost bound) of one run."""
    seeds = root / "seeds.jsonl"
    rows = [json.dumps({"prompt": f"Question {i}: how do tides work?"}) + "\n" for i in range(prompts)]
    seeds.write_text("".join(rows))
    settings = {"base_url": url, "batch": batch, "batch_poll_s": 0.2, "tokenizer": str(model)}
    teacher = {"backend": "openai", "model": "tiny", "openai": settings}
    pipeline = root / f"batch-{batch}.yaml"
    pipeline.write_text(
        f"name: b\nseed: 1\nteacher: {json.dumps(teacher)}\nprices: {json.dumps(PRICES)}\n"
        f"seeds: {{path: {seeds}}}\nstages:\n"
        f"  - respond: {{sampling: {{temperature: 1.0, max_new_tokens: {tokens}}}}}\n"
        f"export: {{sft: true, dpo: false}}\n"
        f"paths: {{prompts: {BUILTIN / 'prompts'}, constitutions: {BUILTIN / 'constitutions'}}}\n"
    )
    out = root / f"out-{batch}"
    spec = load_pipeline(pipeline)
    bound, _ = estimate(spec, preview(spec, count=prompt_counter(spec)[0]).calls)
    result = run_pipeline(load_pipeline(pipeline), RunOptions(out_dir=out, progress=False), log=lambda _: None)
    return result.reports[0].seconds, result.manifest["cost"], (out / "sft.jsonl").read_bytes(), bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "tiny")
        serve = ["--teacher", str(model), "--model-name", "tiny", "--threads", "2", "--device", "cpu"]
        with serve_handle([*serve, "--state-dir", str(root / "state")]) as (url, _):
            online = run(root, url, model, args.prompts, args.tokens, batch=False)
            batched = run(root, url, model, args.prompts, args.tokens, batch=True)
    print(f"online: {online[0]:.2f} s, cost ${online[1]['total_usd']:.6f} at the example prices")
    print(f"batch:  {batched[0]:.2f} s, cost ${batched[1]['total_usd']:.6f} (half price)")
    print(f"--dry-run bound: ${online[3]:.6f} online, ${batched[3]:.6f} batch (each answer at max_new_tokens)")
    print(f"bound / measured: {online[3] / online[1]['total_usd']:.2f}x")
    print(f"batch / online time: {batched[0] / online[0]:.2f}x; same sft.jsonl: {online[2] == batched[2]}")


if __name__ == "__main__":
    main()
