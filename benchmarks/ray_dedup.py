"""MinHash dedup as a Ray job vs the local engine: documents/s with 1 and 2 workers, same corpus, same process.

    python benchmarks/ray_dedup.py                   # 200k documents of ~100 words, local Ray instance (2 CPUs)
    python benchmarks/ray_dedup.py --docs 50000

Every engine runs once on a slice before its timing (the same warm-up on both sides).
Part 1 (in memory): clusters of a list of texts, local vs Ray with 1 and 2 workers — the overhead at 1
worker and the scaling at 2 — and a check that the clusters are identical. Part 2 (files): the same corpus
as 8 JSONL files, `dedup_files` (local: rows in memory) vs `dedup_files_ray` (Ray Data blocks, shards out):
documents/s, identical output bytes, and the peak resident memory each adds to a fresh driver process
(VmHWM above VmRSS after imports, each in its own subprocess), for the whole corpus and half of it: the
difference is the memory per additional document. Ends with the cluster size for 100M documents in
an hour from the measured per-worker rate (an estimate: it assumes the rate per worker holds as the shuffle
grows).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthforge.dedup.local_files import dedup_files  # noqa: E402
from synthforge.dedup.near_duplicates import DedupSettings, find_clusters  # noqa: E402
from synthforge.dedup.ray_dedup import find_clusters_ray  # noqa: E402
from synthforge.dedup.ray_files import dedup_files_ray  # noqa: E402
from synthforge.rows import data_files  # noqa: E402
from synthforge.testing import near_duplicate_corpus  # noqa: E402


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def driver_memory(engine: str, inputs_dir: Path, out: Path) -> None:
    """(Child process) dedup with ``engine``; print the driver's peak resident memory above its start."""
    settings = DedupSettings(threshold=0.8, num_perm=128, ngram=5)
    inputs = data_files(inputs_dir)
    if engine == "ray":
        import ray
        import ray.data  # noqa: F401  (imports are not the run's memory)

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    before = _status_kb("VmRSS")
    if engine == "ray":
        dedup_files_ray(inputs, out, settings, workers=2)
    else:
        dedup_files(inputs, out, settings)
    print((_status_kb("VmHWM") - before) * 1024)


def peak_bytes(engine: str, inputs_dir: Path, out: Path) -> int:
    """Peak resident bytes the dedup added to a fresh driver process."""
    command = [sys.executable, __file__, "--memory-of", engine, "--inputs", str(inputs_dir), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1])


def in_memory(docs: list[str], settings: DedupSettings, chunk: int) -> None:
    find_clusters(docs[:chunk], settings)  # warm-up, as each Ray run warms its workers below
    local, seconds = timed(lambda: find_clusters(docs, settings))
    local_rate = len(docs) / seconds
    print(f"in memory, local engine: {local_rate:,.0f} docs/s")
    rates = {}
    for workers in (1, 2):
        find_clusters_ray(docs[:chunk], settings, workers=workers, chunk=chunk)  # warm the workers
        remote, seconds = timed(lambda w=workers: find_clusters_ray(docs, settings, workers=w, chunk=chunk))
        rates[workers] = len(docs) / seconds
        same = np.array_equal(local.labels, remote.labels)
        print(
            f"in memory, ray {workers} worker(s): {rates[workers]:,.0f} docs/s = {rates[workers] / local_rate:.2f}x "
            f"local (identical clusters: {same})"
        )


def files(docs: list[str], settings: DedupSettings, root: Path) -> float:
    (root / "in").mkdir()
    per_file = math.ceil(len(docs) / 8)
    for k in range(8):
        lines = (json.dumps({"text": d}) + "\n" for d in docs[k * per_file : (k + 1) * per_file])
        (root / "in" / f"part-{k}.jsonl").write_text("".join(lines))
    inputs = data_files(root / "in")
    dedup_files(inputs[:1], root / "warm-local.jsonl", settings)  # both engines warmed on one file first
    dedup_files_ray(inputs[:1], root / "warm-ray.jsonl", settings, workers=2)
    local, local_s = timed(lambda: dedup_files(inputs, root / "local.jsonl", settings))
    remote, remote_s = timed(lambda: dedup_files_ray(inputs, root / "ray.jsonl", settings, workers=2))
    same = (root / "local.jsonl").read_bytes() == (root / "ray.jsonl").read_bytes()
    local_rate, remote_rate = len(docs) / local_s, len(docs) / remote_s
    print(f"files, local engine: {local_rate:,.0f} docs/s ({local.kept} kept)")
    print(
        f"files, ray 2 workers (Ray Data blocks): {remote_rate:,.0f} docs/s = {remote_rate / local_rate:.2f}x local "
        f"(identical output: {same})"
    )
    half = root / "half"
    half.mkdir()
    for path in inputs[: len(inputs) // 2]:
        shutil.copy(path, half / path.name)
    half_docs = sum(1 for path in half.iterdir() for _ in path.open())
    for engine, out in (("local", "mem-local{}.jsonl"), ("ray", "mem-ray{}")):
        full = peak_bytes(engine, root / "in", root / out.format(""))
        part = peak_bytes(engine, half, root / out.format("-half"))
        marginal = (full - part) / (len(docs) - half_docs)
        print(
            f"driver peak resident memory added, {engine}: {full / 2**20:,.0f} MiB for {len(docs):,} docs, "
            f"{part / 2**20:,.0f} MiB for {half_docs:,}: {marginal:,.0f} B per additional document"
        )
    return remote_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--memory-of", choices=["local", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        driver_memory(args.memory_of, args.inputs, args.out)
        return
    import ray

    docs, _ = near_duplicate_corpus(args.docs, seed=1)
    settings = DedupSettings(threshold=0.8, num_perm=128, ngram=5)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    root = Path(tempfile.mkdtemp(prefix="ray-dedup-bench-"))
    try:
        in_memory(docs, settings, args.chunk)
        per_worker = files(docs, settings, root) / 2
    finally:
        shutil.rmtree(root, ignore_errors=True)
        ray.shutdown()
    needed = math.ceil(100_000_000 / 3600 / per_worker)
    print(
        f"estimate: 100M documents (as files) in an hour need >= {needed} workers at {per_worker:,.0f} docs/s each "
        "(the files rate with 2 workers, halved; assumes the rate per worker holds as the shuffle grows)"
    )


if __name__ == "__main__":
    main()
