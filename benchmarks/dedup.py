"""MinHash dedup benchmark: synthforge vs datasketch's own fast path on one seeded near-duplicate corpus.

    python benchmarks/dedup.py                       # 100k documents of ~100 words (about a minute)
    python benchmarks/dedup.py --docs 1000000 --only-ours   # the 1M-document memory check

The corpus is made here: base texts of Zipf-distributed pseudo-words, and for some of them variants
with word swaps, insertions, deletions, substitutions and truncation at known rates. Ground truth is
the exact Jaccard similarity of the same word 5-gram shingles. Both sides use the same shingles,
threshold and num_perm; datasketch runs ``MinHash.bulk`` + ``MinHashLSH`` insertion session + one query
per document. Prints documents/s of each and the ratio, pair precision and recall of each, peak RSS.
"""

from __future__ import annotations

import argparse
import random
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


def make_corpus(n_docs: int, seed: int, words: int = 100) -> tuple[list[str], list[int]]:
    """Documents and the group (base text) each came from; about 30 % are edited copies of a base."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(50000)]
    zipf = np.minimum(np_rng.zipf(1.3, size=n_docs * words * 2), len(vocab)) - 1
    stream = iter(zipf.tolist())
    docs, groups = [], []
    group = 0
    while len(docs) < n_docs:
        base = [vocab[next(stream)] for _ in range(rng.randint(words // 2, words * 3 // 2))]
        docs.append(" ".join(base))
        groups.append(group)
        if rng.random() < 0.12:  # this base gets 1-5 near-duplicate variants
            for _ in range(rng.randint(1, 5)):
                if len(docs) < n_docs:
                    docs.append(" ".join(_edit(base, rng, vocab)))
                    groups.append(group)
        group += 1
    return docs, groups


def _edit(words: list[str], rng: random.Random, vocab: list[str]) -> list[str]:
    """A copy with each word deleted, substituted or followed by an insertion at rate q/3 each, some
    adjacent swaps, and sometimes the tail cut; q is drawn in [0, 0.25] so similarities span the threshold."""
    q = rng.uniform(0.0, 0.25)
    out: list[str] = []
    for word in words:
        roll = rng.random()
        if roll < q / 3:
            continue
        out.append(rng.choice(vocab) if roll < 2 * q / 3 else word)
        if roll > 1 - q / 3:
            out.append(rng.choice(vocab))
    for i in range(len(out) - 1):
        if rng.random() < q / 4:
            out[i], out[i + 1] = out[i + 1], out[i]
    if rng.random() < 0.2:
        out = out[: max(1, int(len(out) * rng.uniform(0.8, 1.0)))]
    return out


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


def run_ours(docs: list[str], settings: DedupSettings) -> tuple[float, set[tuple[int, int]], int]:
    started = time.perf_counter()
    clusters = find_clusters(docs, settings)
    seconds = time.perf_counter() - started
    # Pairs for scoring: every verified same-bucket pair (what our clusters are built from).
    sigs, _ = signatures(docs, settings)
    bands, rows = settings.bands()
    pairs = bucket_pairs(band_keys(sigs, bands, rows))
    if settings.verify == "signature":
        floor = settings.threshold - settings.tolerance
        pairs = {(a, b) for a, b in pairs if (sigs[a] == sigs[b]).mean() >= floor}
    removed = int((clusters.labels != np.arange(len(docs))).sum())
    return seconds, pairs, removed


def run_datasketch(docs: list[str], settings: DedupSettings) -> tuple[float, set[tuple[int, int]]]:
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
    return time.perf_counter() - started, pairs


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
    ours_s, ours_pairs, removed = run_ours(docs, settings)
    print(f"synthforge: {len(docs) / ours_s:,.0f} docs/s ({ours_s:.2f} s), {removed} documents in others' clusters")
    if args.only_ours:
        print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        return
    ds_s, ds_pairs = run_datasketch(docs, settings)
    print(f"datasketch: {len(docs) / ds_s:,.0f} docs/s ({ds_s:.2f} s)")
    truth = ground_truth(docs, groups, shingling, settings.threshold)
    ours_p, ours_r = score(ours_pairs, truth, docs, shingling, settings.threshold)
    ds_p, ds_r = score(ds_pairs, truth, docs, shingling, settings.threshold)
    print(f"true pairs (exact Jaccard >= {settings.threshold}): {len(truth)}")
    print(f"synthforge ({settings.verify}): precision {ours_p:.3f} recall {ours_r:.3f} on {len(ours_pairs)} pairs")
    print(f"datasketch (LSH candidates): precision {ds_p:.3f} recall {ds_r:.3f} on {len(ds_pairs)} pairs")
    print(f"throughput ratio synthforge / datasketch: {ds_s / ours_s:.1f}x")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
