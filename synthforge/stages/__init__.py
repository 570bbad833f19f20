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


ENTRY_POINTS = "synthforge.stages"  # the entry-point group an installed package registers its own stages in


def stage_class(kind: str) -> type:
    """The stage class registered for ``kind``, a user's own stage named ``module:Class``, or one an installed
    package registers under ``kind`` in the ``synthforge.stages`` entry-point group (KeyError if none)."""
    if kind in STAGES or ":" in kind:
        return resolve(STAGES.get(kind, kind), f"stage {kind}")
    found = installed_stages().get(kind)
    if found is None:
        raise KeyError(kind)
    return resolve(found, f"stage {kind} (entry point of {ENTRY_POINTS})")


def installed_stages() -> dict[str, str]:
    """Stages installed packages register, kind -> ``module:Class`` (a built-in kind can't be taken over)."""
    from importlib.metadata import entry_points

    return {e.name: e.value for e in entry_points(group=ENTRY_POINTS) if e.name not in STAGES}
