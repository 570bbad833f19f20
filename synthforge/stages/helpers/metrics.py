"""Named counters and per-group statistics that a stage reports about its own work.

A stage reads its own trace steps (``Stage.tally``) into a :class:`Metrics`; the engine only aggregates
and shows what stages report, so adding a stage with new metrics touches nothing in ``engine/``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GroupSpec:
    """How a stage's group statistics are shown: the counts, the rates (name → numerator, denominator; shown as
    percentages) and the means (name → sum, count; shown as numbers), with their human labels (for the run log
    and the dataset card)."""

    counts: tuple[str, ...]
    rates: dict[str, tuple[str, str]]
    labels: dict[str, str] = field(default_factory=dict)
    means: dict[str, tuple[str, str]] = field(default_factory=dict)

    def fields(self) -> tuple[str, ...]:
        return (*self.counts, *self.rates, *self.means)


@dataclass
class Metrics:
    """What one stage counted: plain counters, and sums per member of a group (e.g. per principle)."""

    counters: Counter = field(default_factory=Counter)
    groups: dict[str, dict[str, Counter]] = field(default_factory=dict)

    def count(self, name: str, n: float = 1) -> None:
        self.counters[name] += n

    def add(self, group: str, member: str, **values: float) -> None:
        """Add ``values`` to ``member`` of ``group`` (e.g. ``add("principle", "harm", critiques=1)``)."""
        tally = self.groups.setdefault(group, {}).setdefault(member, Counter())
        for key, value in values.items():
            tally[key] += value

    def summary(self, specs: dict[str, GroupSpec]) -> dict[str, Any]:
        """Counters, and per group and member the counts and rates its spec names (None: nothing counted)."""
        groups = {}
        for group, members in self.groups.items():
            spec = specs[group]
            groups[group] = {
                member: {
                    **{c: _number(sums[c]) for c in spec.counts},
                    **{r: _rate(sums[n], sums[d]) for r, (n, d) in spec.rates.items()},
                    **{m: _mean(sums[n], sums[d]) for m, (n, d) in spec.means.items()},
                }
                for member, sums in sorted(members.items())
            }
        return {"counters": dict(self.counters), "groups": groups}


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 4)


def _mean(total: float, count: float) -> float | None:
    return round(total / count, 2) if count else None


def _rate(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def merge_groups(summaries: list[tuple[dict[str, Any], dict[str, GroupSpec]]], group: str) -> dict[str, Any]:
    """One table for ``group`` across stages: each member's fields from every stage that reported it (a field
    a stage reported for no member shows as 0 or None)."""
    fields: list[str] = []
    for _, specs in summaries:
        if group in specs:
            fields += [f for f in specs[group].fields() if f not in fields]
    merged: dict[str, dict[str, Any]] = {}
    for summary, _ in summaries:
        for member, values in summary["groups"].get(group, {}).items():
            merged.setdefault(member, {}).update(values)
    counts = {c for _, specs in summaries if group in specs for c in specs[group].counts}
    return {
        member: {f: values.get(f, 0 if f in counts else None) for f in fields}
        for member, values in sorted(merged.items())
    }
