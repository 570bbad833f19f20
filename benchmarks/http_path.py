"""The HTTP path: how close `synthforge generate` with the openai backend comes to the concurrency bound.

A stand-in OpenAI-compatible server (its own process, a bare asyncio HTTP/1.1 server) answers every request after a
latency that does not depend on load: fixed (0.2 s), or heavy-tailed (lognormal, sigma 1, the same 0.2 s mean,
drawn per request from a hash of the request: seeded). synthforge runs a pipeline over N prompts with at most W
requests in flight. The bound is requests / W x mean latency. With heavy tails the draws matter too, so the
stand-in also reports the latencies it drew, and the benchmark prints what an ideal client sending those same
requests with W in flight would take, in the order sent and (the median over shuffles) in any order. Printed
per pipeline, each as a ratio to the bound: the stages (one pipeline, start to end), the run (stages, export
and report: the manifest's seconds) and the whole process (start-up included: what a user waits).

    python benchmarks/http_path.py                       # 2,000 prompts, W = 64, respond alone and a 3-stage CAI
    python benchmarks/http_path.py --prompts 500 --only respond
    python benchmarks/http_path.py --only respond --draws 5   # heavy tails: five prompt sets, and their median
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import heapq
import json
import math
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthforge.builtin import ROOT as BUILTIN  # noqa: E402
from tests.fault_server import free_port  # noqa: E402

MEAN = 0.2


def latency(body: bytes, mode: str) -> float:
    """The request's latency: fixed, or lognormal with the same mean, seeded by the request's bytes."""
    if mode == "fixed":
        return MEAN
    sigma = 1.0
    u1, u2 = (int.from_bytes(hashlib.sha256(body + bytes([k])).digest()[:8], "big") / 2**64 for k in (1, 2))
    normal = math.sqrt(-2 * math.log(max(u1, 1e-12))) * math.cos(2 * math.pi * u2)
    return math.exp(math.log(MEAN) - sigma**2 / 2 + sigma * normal)


def answer(request: dict) -> dict:
    """A chat completion: n choices of a short answer (or, asked for logprobs, "(A)" with top log-probabilities)."""
    n = request.get("n", 1)
    if request.get("logprobs"):
        tokens = [("(", [("(", -0.01)]), ("A", [("A", -0.4), ("B", -1.1)]), (")", [(")", -0.01)])]
        content = {
            "content": [
                {"token": t, "logprob": top[0][1], "top_logprobs": [{"token": a, "logprob": b} for a, b in top]}
                for t, top in tokens
            ]
        }
        choices = [
            {
                "index": k,
                "message": {"role": "assistant", "content": "(A)"},
                "finish_reason": "stop",
                "logprobs": content,
            }
            for k in range(n)
        ]
    else:
        text = f"A careful answer number {request.get('seed')} that stays on the question."
        choices = [
            {"index": k, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"} for k in range(n)
        ]
    usage = {"prompt_tokens": 50, "completion_tokens": 16 * n, "total_tokens": 50 + 16 * n}
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": request.get("model"),
        "choices": choices,
        "usage": usage,
    }


def serve(port: int, mode: str) -> None:
    """The stand-in server, until killed. ``GET /stats`` returns (and forgets) the latencies drawn so far, in
    arrival order."""
    drawn: list[float] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                body = await reader.readexactly(length) if length else b""
                if head.startswith(b"GET /stats"):
                    data = json.dumps(drawn).encode()
                    drawn.clear()
                elif head.startswith(b"GET"):
                    data = json.dumps({"object": "list", "data": [{"id": "stand-in", "object": "model"}]}).encode()
                else:
                    drawn.append(latency(body, mode))
                    await asyncio.sleep(drawn[-1])
                    data = json.dumps(answer(json.loads(body))).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(data)).encode()
                    + b"\r\n\r\n"
                    + data
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def greedy_makespan(latencies: list[float], window: int) -> float:
    """Seconds an ideal client takes for these requests, sent in this order with ``window`` in flight and no
    dependencies between them: the bound once the heavy tail's luck is counted."""
    slots = [0.0] * window
    for seconds in latencies:
        heapq.heappush(slots, heapq.heappop(slots) + seconds)
    return max(slots)


def shuffled_makespan(latencies: list[float], window: int, shuffles: int = 200) -> float:
    """The median of :func:`greedy_makespan` over seeded shuffles of the same requests: what a client that can't
    foresee latencies may expect (which of the slow requests come last is luck)."""
    rng = random.Random(0)
    spans = []
    for _ in range(shuffles):
        order = list(latencies)
        rng.shuffle(order)
        spans.append(greedy_makespan(order, window))
    return statistics.median(spans)


def stats(url: str) -> list[float]:
    """The latencies the stand-in drew since the last call."""
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats") as answer:
        return json.loads(answer.read())


STAGES = {
    "respond": "  - respond: {sampling: {max_new_tokens: 32}}\n",
    "cai": (
        "  - respond: {sampling: {max_new_tokens: 32}}\n"
        "  - critique_revise: {turns: single, critique_template: critique-single, revise_template: revise-single, "
        "skip_when_no_issue: false, sampling: {max_new_tokens: 32}}\n"
        "  - verify_pairs: {on_reject: keep}\n"
    ),
}
REQUESTS_PER_RECORD = {"respond": 1, "cai": 1 + 2 + 2}  # respond; critique + revision; the judge in both orders


def run(kind: str, url: str, prompts: int, window: int, root: Path, draw: int = 0) -> tuple[float, float, float]:
    """(seconds of the run — stages, export and report, as its manifest says — and of the whole process, start-up
    included) of one `synthforge generate`. ``draw`` > 0 words the prompts apart, so the stand-in draws other
    latencies for them."""
    seeds = root / "seeds.jsonl"
    suffix = f" (set {draw})" if draw else ""
    seeds.write_text(
        "".join(
            json.dumps({"prompt": f"Question {i}: how do tides work, in brief?{suffix}"}) + "\n" for i in range(prompts)
        )
    )
    pipeline = root / f"{kind}.yaml"
    teacher = {
        "backend": "openai",
        "model": "stand-in",
        "openai": {"base_url": url, "max_concurrency": window, "score": "top_logprobs", "timeout": 60},
    }
    pipeline.write_text(
        f"name: {kind}\nseed: 1\nteacher: {json.dumps(teacher)}\nseeds: {{path: {seeds}}}\nstages:\n{STAGES[kind]}"
        f"paths: {{prompts: {BUILTIN / 'prompts'}, constitutions: {BUILTIN / 'constitutions'}}}\n"
    )
    out = root / f"out-{kind}-{time.time_ns()}"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "synthforge.cli.main", "generate", str(pipeline), "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    whole = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    manifest = json.loads((out / "manifest.json").read_text())
    return max(s["report"]["seconds"] for s in manifest["stages"]), manifest["seconds"], whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=2000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--only", choices=sorted(STAGES))
    parser.add_argument("--draws", type=int, default=1, help="heavy tails: prompt sets to run, each its own latencies")
    args = parser.parse_args()
    kinds = [args.only] if args.only else list(STAGES)
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("fixed", "lognormal"):
            port = free_port()
            server = multiprocessing.Process(target=serve, args=(port, mode), daemon=True)
            server.start()
            time.sleep(0.5)
            url = f"http://127.0.0.1:{port}/v1"
            try:
                for kind in kinds:
                    bound = args.prompts * REQUESTS_PER_RECORD[kind] / args.window * MEAN
                    ratios = []
                    for draw in range(1 if mode == "fixed" else args.draws):
                        stats(url)
                        stages, ran, whole = run(kind, url, args.prompts, args.window, Path(tmp), draw)
                        drawn = stats(url)
                        ideal = greedy_makespan(drawn, args.window)
                        luck = (
                            "" if mode == "fixed" else f", in any order: {shuffled_makespan(drawn, args.window):.2f} s"
                        )
                        ratios.append((stages / bound, stages / ideal))
                        print(
                            f"{mode:9s} {kind:7s} {args.prompts} prompts x {REQUESTS_PER_RECORD[kind]} requests, "
                            f"window {args.window}{f', set {draw}' if draw else ''}: bound {bound:.2f} s (these "
                            f"latencies, no dependencies: {ideal:.2f} s{luck}); stages {stages:.2f} s = "
                            f"{stages / bound:.2f}x; run {ran:.2f} s = {ran / bound:.2f}x; whole process "
                            f"{whole:.2f} s = {whole / bound:.2f}x",
                            flush=True,
                        )
                    if len(ratios) > 1:
                        print(
                            f"{mode:9s} {kind:7s} median of {len(ratios)} sets: stages "
                            f"{statistics.median(r[0] for r in ratios):.2f}x the bound, "
                            f"{statistics.median(r[1] for r in ratios):.2f}x an ideal client in the same order",
                            flush=True,
                        )
            finally:
                server.terminate()


if __name__ == "__main__":
    main()
