"""Pipeline stages, one file each. ``STAGES`` maps a stage kind to ``module:Class`` (imported on use)."""

from __future__ import annotations

from synthforge.resolve import resolve

STAGES: dict[str, str] = {
    "respond": "synthforge.stages.respond:Respond",
    "generate": "synthforge.stages.generate:Generate",
    "critique_revise": "synthforge.stages.critique_revise:CritiqueRevise",
    "judge": "synthforge.stages.judge:Judge",
    "filter_empty": "synthforge.stages.filters.empty:EmptyFilter",
    "filter_length": "synthforge.stages.filters.length:LengthFilter",
    "filter_repetition": "synthforge.stages.filters.repetition:RepetitionFilter",
    "filter_refusal": "synthforge.stages.filters.refusal:RefusalFilter",
    "filter_pairs": "synthforge.stages.filters.pairs:PairFilter",
    "filter_predicate": "synthforge.stages.filters.predicate:PredicateFilter",
    "decontaminate": "synthforge.stages.filters.decontaminate:Decontaminate",
    "minhash_dedup": "synthforge.stages.minhash_dedup:MinHashDedup",
    "self_instruct": "synthforge.stages.self_instruct:SelfInstruct",
    "evol_instruct": "synthforge.stages.evol_instruct:EvolInstruct",
    "magpie": "synthforge.stages.magpie:Magpie",
    "reward_rank": "synthforge.stages.reward_rank:RewardRank",
    "answer": "synthforge.stages.answer:Answer",
    "compare_judge": "synthforge.stages.compare_judge:CompareJudge",
    "verify_pairs": "synthforge.stages.verify_pairs:VerifyPairs",
    "reward_score": "synthforge.stages.reward_score:RewardScore",
    "grow_dialogue": "synthforge.stages.grow_dialogue:GrowDialogue",
    "pool": "synthforge.stages.pool:Pool",
    "rate": "synthforge.stages.rate:Rate",
    "pair_by_score": "synthforge.stages.pair_by_score:PairByScore",
}


def stage_class(kind: str) -> type:
    """The stage class registered for ``kind``, or a user's own stage named ``module:Class`` (KeyError if
    neither)."""
    if kind not in STAGES and ":" not in kind:
        raise KeyError(kind)
    return resolve(STAGES.get(kind, kind), f"stage {kind}")
