"""MinHash dedup benchmark: synthforge vs datasketch's own fast path on one seeded near-duplicate corpus.

    python benchmarks/dedup.py                       # 100k documents of ~100 words (about a minute)
    python benchmarks/dedup.py --docs 1000000 --only-ours   # the 1M-document memory check

The corpus is made here: base texts of Zipf-distributed pseudo-words, and for some of them variants
with word swaps, insertions, deletions, substitutions and truncation at known rates. Ground truth is
the exact Jaccard similarity of the same word 5-gram shingles. Both sides use the same shingles,
threshold and num_perm; datasketch runs ``MinHash.bulk`` + ``MinHashLSH`` insertion session + one query
per document. Prints documents/s of each and the ratio, then pair precision and recall of each side twice,
like with like: their raw LSH candidates, and those candidates verified by the same rule (signature agreement
>= threshold - tolerance; datasketch's MinHash.jaccard is that agreement); peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthforge.dedup.lsh import band_keys, bucket_pairs  # noqa: E402
from synthforge.dedup.near_duplicates import DedupSettings, find_clusters, signatures  # noqa: E402
from synthforge.dedup.shingles import Shingling, shingles  # noqa: E402
from synthforge.testing import near_duplicate_corpus as make_corpus  # noqa: E402


def ground_truth(docs: list[str], groups: list[int], shingling: Shingling, threshold: float) -> set[tuple[int, int]]:
    """Pairs within a group whose exact shingle Jaccard reaches ``threshold`` (bases are independent)."""
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    truth = set()
    for ids in members.values():
        if len(ids) > 1:
            sets = {i: set(shingles(docs[i], shingling)) for i in ids}
            truth.update((a, b) for a, b in combinations(ids, 2) if _jaccard(sets[a], sets[b]) >= threshold)
    return truth


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def score(predicted: set[tuple[int, int]], truth: set[tuple[int, int]], docs, shingling, threshold) -> tuple:
    """Pair precision (each predicted pair checked by exact Jaccard) and recall against ``truth``."""
    correct = {
        p
        for p in predicted
        if p in truth
        or _jaccard(set(shingles(docs[p[0]], shingling)), set(shingles(docs[p[1]], shingling))) >= threshold
    }
    found = len(truth & predicted) + len(correct - truth)
    total_true = len(truth | correct)
    return len(correct) / max(len(predicted), 1), found / max(total_true, 1)


def run_ours(docs: list[str], settings: DedupSettings) -> tuple[float, set, set, int]:
    """Our time (verification included), our raw LSH candidate pairs and the pairs our verification keeps."""
    started = time.perf_counter()
    clusters = find_clusters(docs, settings)
    seconds = time.perf_counter() - started
    sigs, _ = signatures(docs, settings)  # again, outside the timing, for the pairs our clusters are built from
    bands, rows = settings.bands()
    candidates = bucket_pairs(band_keys(sigs, bands, rows))
    verified = _verified(candidates, lambda a, b: (sigs[a] == sigs[b]).mean(), settings)
    removed = int((clusters.labels != np.arange(len(docs))).sum())
    return seconds, candidates, verified, removed


def _verified(pairs: set, estimate, settings: DedupSettings) -> set:
    """The pairs whose signature agreement reaches the threshold less the tolerance: the same rule on both sides."""
    if settings.verify != "signature":
        return set(pairs)
    floor = settings.threshold - settings.tolerance
    return {(a, b) for a, b in pairs if estimate(a, b) >= floor}


def run_datasketch(docs: list[str], settings: DedupSettings) -> tuple[float, set[tuple[int, int]], list]:
    from datasketch import MinHash, MinHashLSH

    shingling = Shingling(settings.ngram, settings.unit)
    started = time.perf_counter()
    sets = [[s.encode("utf-8") for s in shingles(d, shingling)] for d in docs]
    minhashes = MinHash.bulk(sets, num_perm=settings.num_perm, seed=settings.seed)
    lsh = MinHashLSH(threshold=settings.threshold, num_perm=settings.num_perm)
    with lsh.insertion_session() as session:
        for i, m in enumerate(minhashes):
            session.insert(i, m)
    pairs = {(min(i, j), max(i, j)) for i, m in enumerate(minhashes) for j in lsh.query(m) if j != i}
    return time.perf_counter() - started, pairs, minhashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--verify", default="signature", choices=["signature", "exact", "none"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only-ours", action="store_true", help="skip datasketch and scoring (memory check)")
    args = parser.parse_args()

    settings = DedupSettings(threshold=args.threshold, num_perm=args.num_perm, verify=args.verify)
    shingling = Shingling(settings.ngram, settings.unit)
    docs, groups = make_corpus(args.docs, args.seed)
    words = sum(len(d.split()) for d in docs) / len(docs)
    print(f"corpus: {len(docs)} documents, {words:.0f} words on average, {len(set(groups))} groups")
    ours_s, ours_candidates, ours_pairs, removed = run_ours(docs, settings)
    print(f"synthforge: {len(docs) / ours_s:,.0f} docs/s ({ours_s:.2f} s), {removed} documents in others' clusters")
    if args.only_ours:
        print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        return
    ds_s, ds_candidates, minhashes = run_datasketch(docs, settings)
    print(f"datasketch: {len(docs) / ds_s:,.0f} docs/s ({ds_s:.2f} s; its candidates unverified)")
    ds_pairs = _verified(ds_candidates, lambda a, b: minhashes[a].jaccard(minhashes[b]), settings)
    truth = ground_truth(docs, groups, shingling, settings.threshold)
    print(f"true pairs (exact Jaccard >= {settings.threshold}): {len(truth)}")
    for what, ours, theirs in (
        ("LSH candidates, unverified", ours_candidates, ds_candidates),
        (f"candidates verified ({settings.verify}, the same rule on both)", ours_pairs, ds_pairs),
    ):
        ours_p, ours_r = score(ours, truth, docs, shingling, settings.threshold)
        ds_p, ds_r = score(theirs, truth, docs, shingling, settings.threshold)
        print(f"{what}:")
        print(f"  synthforge: precision {ours_p:.3f} recall {ours_r:.3f} on {len(ours)} pairs")
        print(f"  datasketch: precision {ds_p:.3f} recall {ds_r:.3f} on {len(theirs)} pairs")
    print(f"throughput ratio synthforge (verification included) / datasketch (without): {ds_s / ours_s:.1f}x")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
