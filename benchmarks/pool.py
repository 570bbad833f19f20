"""A pool over two servers: does it finish in about the time of the slower server alone, not the sum of both?

Two stand-in OpenAI-compatible servers (benchmarks/http_path.py's: their own processes, a fixed latency that does
not depend on load, so the figure measures the client, not CPU contention between two real models) each serve
one named teacher. In one process, on the same prompts:

- teacher ``a`` alone answers every prompt (a ``respond`` stage), then teacher ``b`` alone;
- a ``pool`` whose two members are ``a`` and ``b`` answers every prompt once per member.

Printed: each stage's seconds (the manifest's), and the pool's time as a ratio to the slower server alone (the
target: about 1) and to the sum of both (what answering member by member would take).

``--local``: two in-process teachers instead (the embedded model loaded twice, as two named teachers with other
settings, so it isn't shared): both share this machine's cores, so the pool's fair time is the sum of both alone;
two processes each running torch with its default threads would each run ~6x slower (the target: about 1x the sum).

    python benchmarks/pool.py                    # 400 prompts, 16 requests in flight per server
    python benchmarks/pool.py --local --prompts 32
    python benchmarks/pool.py --prompts 500 --window 64   # 640 requests/s: client and stand-ins share the cores
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.http_path import serve  # noqa: E402
from synthforge.builtin import ROOT as BUILTIN  # noqa: E402
from synthforge.engine.runner import RunOptions, run_pipeline  # noqa: E402
from synthforge.engine.spec import load_pipeline  # noqa: E402
from tests.fault_server import free_port  # noqa: E402

STAGES = {
    "a alone": "  - respond: {teacher: a, sampling: {max_new_tokens: 32}}\n",
    "b alone": "  - respond: {teacher: b, sampling: {max_new_tokens: 32}}\n",
    "pool a+b": (
        "  - pool:\n      members: [{name: a, teacher: a}, {name: b, teacher: b}]\n"
        "      sampling: {max_new_tokens: 32}\n"
    ),
}


def local(batch_size: int) -> str:
    return json.dumps({"model": "embedded", "batch_size": batch_size})


def teacher(url: str, window: int) -> str:
    settings = {"base_url": url, "max_concurrency": window}
    return json.dumps({"backend": "openai", "model": "stand-in", "openai": settings})


def stage_seconds(kind: str, urls: list[str] | None, prompts: int, window: int, root: Path) -> float:
    """Seconds of the one stage of a run (the manifest's), over ``prompts`` fresh prompts; ``urls`` None: two
    in-process teachers."""
    seeds = root / "seeds.jsonl"
    rows = [json.dumps({"prompt": f"Question {i}: how do tides work?"}) + "\n" for i in range(prompts)]
    seeds.write_text("".join(rows))
    pipeline = root / "pool.yaml"
    a, b = (teacher(urls[0], window), teacher(urls[1], window)) if urls else (local(8), local(16))
    pipeline.write_text(
        f"name: pool\nseed: 1\nteacher: {a}\nteachers: {{a: {a}, b: {b}}}\n"
        f"seeds: {{path: {seeds}}}\nstages:\n{STAGES[kind]}export: {{sft: false, dpo: false}}\n"
        f"paths: {{prompts: {BUILTIN / 'prompts'}, constitutions: {BUILTIN / 'constitutions'}}}\n"
    )
    out = root / f"out-{time.time_ns()}"
    result = run_pipeline(load_pipeline(pipeline), RunOptions(out_dir=out, progress=False), log=lambda _: None)
    return result.reports[0].seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=400)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--local", action="store_true", help="two in-process teachers (the embedded model twice)")
    args = parser.parse_args()
    if args.local:
        with tempfile.TemporaryDirectory() as tmp:
            seconds = {kind: stage_seconds(kind, None, args.prompts, args.window, Path(tmp)) for kind in STAGES}
        for kind, value in seconds.items():
            print(f"{kind:9s} {args.prompts} prompts, in-process: {value:.2f} s")
        total = seconds["a alone"] + seconds["b alone"]
        print(f"pool of two in-process teachers: {seconds['pool a+b'] / total:.2f}x the sum of both alone")
        return
    servers, urls = [], []
    for _ in range(2):
        port = free_port()
        servers.append(multiprocessing.Process(target=serve, args=(port, "fixed"), daemon=True))
        servers[-1].start()
        urls.append(f"http://127.0.0.1:{port}/v1")
    time.sleep(0.5)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            seconds = {kind: stage_seconds(kind, urls, args.prompts, args.window, Path(tmp)) for kind in STAGES}
    finally:
        for server in servers:
            server.kill()
    for kind, value in seconds.items():
        print(f"{kind:9s} {args.prompts} prompts, window {args.window} per server: {value:.2f} s")
    slower, total = max(seconds["a alone"], seconds["b alone"]), seconds["a alone"] + seconds["b alone"]
    print(
        f"pool over two servers: {seconds['pool a+b'] / slower:.2f}x the slower server alone, "
        f"{seconds['pool a+b'] / total:.2f}x the sum of both"
    )


if __name__ == "__main__":
    main()
