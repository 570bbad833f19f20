"""Aggregate what stages report about their own work (``Stage.tally``) for the manifest, log and card.

Nothing here knows a stage: each stage says what it counts and how its groups are shown (``metric_groups``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from synthforge.records import Record
from synthforge.stages.base import Stage
from synthforge.stages.helpers.metrics import Metrics, merge_groups


def collect_metrics(stages: list[Stage], records: Iterable[Record]) -> list[dict[str, Any]]:
    """Each stage's counters and group statistics, tallied from the trace steps it wrote into ``records``."""
    by_name = {stage.name: (stage, Metrics()) for stage in stages}
    for record in records:
        for step in record.steps:
            found = by_name.get(step.get("stage"))
            if found is not None:
                found[0].tally(step, found[1])
    return [metrics.summary(stage.metric_groups) for stage, metrics in by_name.values()]


def group_tables(stages: list[Stage], summaries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per group (e.g. "principle"): one table merged across the stages that report it, with its labels."""
    pairs = [(summary, stage.metric_groups) for stage, summary in zip(stages, summaries, strict=True)]
    tables: dict[str, dict[str, Any]] = {}
    for group in dict.fromkeys(g for stage in stages for g in stage.metric_groups):
        members = merge_groups(pairs, group)
        if not members:
            continue
        labels: dict[str, str] = {}
        rates: set[str] = set()
        for stage in stages:
            spec = stage.metric_groups.get(group)
            if spec is not None:
                labels.update(spec.labels)
                rates.update(spec.rates)
        tables[group] = {"members": members, "labels": labels, "rates": sorted(rates)}
    return tables


def format_table(group: str, table: dict[str, Any]) -> list[str]:
    """One line per member of a group table, for the run log."""
    lines = [f"per {group}:"]
    for member, values in table["members"].items():
        parts = [
            f"{table['labels'].get(field, field.replace('_', ' '))} "
            + (percent(value) if field in table["rates"] else str(value))
            for field, value in values.items()
            if value not in (0, None)
        ]
        lines.append(f"  {member}: " + ", ".join(parts))
    return lines


def percent(rate: float | None) -> str:
    """A rate as a whole percentage; "–" when there was nothing to count."""
    return "–" if rate is None else f"{100 * rate:.0f}%"


def format_drop_reasons(reasons: dict[str, int]) -> str:
    """Drop counts by reason kind, e.g. "near-duplicate ×2, prompt too long ×1" (log line and card)."""
    return ", ".join(f"{kind} ×{count}" for kind, count in reasons.items())
