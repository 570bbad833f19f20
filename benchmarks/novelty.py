"""Self-Instruct novelty filter: synthforge's indexed ROUGE-L test vs the rouge-score package.

    python benchmarks/novelty.py                    # 20k instructions; reference on the first 2k (minutes)
    python benchmarks/novelty.py --reference-on 20000   # the full reference run (hours)

Both sides offer the same instructions in the same order to a growing pool and keep one only if its
ROUGE-L F1 against every pool member is <= 0.7. The reference is how Self-Instruct does it: tokenize
once, then rouge_scorer._score_lcs against every pool member. The reference is quadratic, so it runs on
the first ``--reference-on`` instructions; our filter runs on those (for the ratio and identical-decision
check) and on all of them (throughput).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthforge.dedup.rouge import NoveltyIndex  # noqa: E402

VERBS = ["Write", "Explain", "Describe", "List", "Summarize", "Give", "Suggest", "Compare", "Create", "Classify"]
OBJECTS = ["a poem", "three tips", "a short story", "the main steps", "an email", "two examples", "a plan", "a recipe"]
TOPICS = [
    "the ocean",
    "climate change",
    "a job interview",
    "photosynthesis",
    "the French revolution",
    "budgeting",
    "machine learning",
    "a birthday party",
    "healthy sleep",
    "electric cars",
    "volcanoes",
    "chess openings",
]
EXTRAS = [
    "for a child",
    "in one sentence",
    "using simple words",
    "with a table",
    "for a beginner",
    "in a formal tone",
    "as a list",
    "with an example",
    "in under 50 words",
    "for a newsletter",
    "step by step",
    "with humour",
]


def make_instructions(n: int, seed: int) -> list[str]:
    """Instruction-like texts built from parts, so near-duplicates occur at a realistic rate."""
    rng = random.Random(seed)
    words = [f"{a}{b}" for a in "bcdfghklmnprst" for b in ["ar", "el", "is", "on", "up", "ent", "ix"]]
    out = []
    for _ in range(n):
        topic = rng.choice(TOPICS) if rng.random() < 0.5 else " ".join(rng.choice(words) for _ in range(2))
        parts = [rng.choice(VERBS), rng.choice(OBJECTS), "about", topic, rng.choice(EXTRAS)]
        if rng.random() < 0.5:
            parts.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 6))))
        out.append(" ".join(parts) + ".")
    return out


def ours(texts: list[str]) -> tuple[list[bool], float]:
    index = NoveltyIndex(0.7)
    started = time.perf_counter()
    decisions = [index.offer(t).novel for t in texts]
    return decisions, time.perf_counter() - started


def reference(texts: list[str]) -> tuple[list[bool], float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    started = time.perf_counter()
    pool, decisions = [], []
    for text in texts:
        tokens = scorer._tokenizer.tokenize(text)
        novel = all(rouge_scorer._score_lcs(tokens, p).fmeasure <= 0.7 for p in pool)
        decisions.append(novel)
        if novel:
            pool.append(tokens)
    return decisions, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instructions", type=int, default=20_000)
    parser.add_argument("--reference-on", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    texts = make_instructions(args.instructions, args.seed)
    head = texts[: args.reference_on]
    ref_decisions, ref_s = reference(head)
    our_decisions, our_s = ours(head)
    same = ref_decisions == our_decisions
    print(
        f"first {len(head)}: rouge-score {ref_s:.2f} s, synthforge {our_s:.3f} s -> {ref_s / our_s:.0f}x faster; "
        f"identical decisions: {same} ({sum(our_decisions)} kept)"
    )
    all_decisions, all_s = ours(texts)
    print(
        f"all {len(texts)}: synthforge {all_s:.2f} s ({len(texts) / all_s:,.0f} instructions/s), "
        f"{sum(all_decisions)} kept in the pool"
    )
    if not same:
        raise SystemExit("decisions differ from the reference")


if __name__ == "__main__":
    main()
