"""MinHash dedup as a Ray job vs the local engine: documents/s with 1 and 2 workers, same corpus, same process.

    python benchmarks/ray_dedup.py                   # 200k documents of ~100 words, local Ray instance (2 CPUs)
    python benchmarks/ray_dedup.py --docs 50000

Prints each engine's documents/s, the ratio to local (the overhead at 1 worker, the scaling at 2), checks
that the clusters are identical, and estimates the cluster size for 100M documents in an hour from the
measured per-worker rate (an estimate: it assumes the per-worker rate holds and the shuffle scales).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthforge.dedup.near_duplicates import DedupSettings, find_clusters  # noqa: E402
from synthforge.dedup.ray_dedup import find_clusters_ray  # noqa: E402
from synthforge.testing import near_duplicate_corpus  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=20_000)
    args = parser.parse_args()
    import ray

    docs, _ = near_duplicate_corpus(args.docs, seed=1)
    settings = DedupSettings(threshold=0.8, num_perm=128, ngram=5)
    started = time.perf_counter()
    local = find_clusters(docs, settings)
    local_rate = len(docs) / (time.perf_counter() - started)
    print(f"local engine: {local_rate:,.0f} docs/s")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rates = {}
    for workers in (1, 2):
        find_clusters_ray(docs[: args.chunk], settings, workers=workers, chunk=args.chunk)  # warm the workers
        started = time.perf_counter()
        remote = find_clusters_ray(docs, settings, workers=workers, chunk=args.chunk)
        rates[workers] = len(docs) / (time.perf_counter() - started)
        same = np.array_equal(local.labels, remote.labels)
        print(
            f"ray, {workers} worker(s): {rates[workers]:,.0f} docs/s = {rates[workers] / local_rate:.2f}x local "
            f"(identical clusters: {same})"
        )
    ray.shutdown()
    per_worker = rates[2] / 2
    needed = math.ceil(100_000_000 / 3600 / per_worker)
    print(
        f"estimate: 100M documents in an hour need >= {needed} workers at {per_worker:,.0f} docs/s each "
        "(measured on this machine; assumes the rate per worker holds and the shuffle scales)"
    )


if __name__ == "__main__":
    main()
