"""Per-principle statistics of a run, read from the records' trace steps (for the manifest and summary)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from synthforge.records import Record


@dataclass
class PrincipleTally:
    """Counts for one principle across a run."""

    critiques: int = 0
    asked_change: int = 0
    revisions: int = 0
    changed: int = 0
    edit_total: float = 0.0
    judged: int = 0
    swap_agreed: int = 0

    def summary(self) -> dict[str, Any]:
        """Rates (None when there was nothing to count) next to the raw counts."""
        return {
            "critiques": self.critiques,
            "critique_change_rate": _rate(self.asked_change, self.critiques),
            "revisions": self.revisions,
            "revision_change_rate": _rate(self.changed, self.revisions),
            "mean_edit_fraction": _rate(self.edit_total, self.revisions),
            "judged_swapped": self.judged,
            "swap_agreement": _rate(self.swap_agreed, self.judged),
        }


def _rate(part: float, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def principle_statistics(records: Iterable[Record]) -> dict[str, dict[str, Any]]:
    """Per principle: how often its critique asked for a change, how often and how much the revision
    changed the answer (share of words edited), and how often the judge agreed with itself across orders."""
    tallies: dict[str, PrincipleTally] = {}
    for record in records:
        for step in record.steps:
            _count(step, tallies)
    return {name: tallies[name].summary() for name in sorted(tallies)}


def _count(step: dict[str, Any], tallies: dict[str, PrincipleTally]) -> None:
    role = step.get("role")
    if role == "critique" and "principle" in step:
        tally = tallies.setdefault(step["principle"], PrincipleTally())
        tally.critiques += 1
        tally.asked_change += bool(step.get("asks_change", True))
    elif role == "revision" and "principle" in step and "changed" in step:
        tally = tallies.setdefault(step["principle"], PrincipleTally())
        tally.revisions += 1
        tally.changed += bool(step["changed"])
        tally.edit_total += float(step.get("edit_fraction", 0.0))
    elif role == "judgement":
        for name, agreed in (step.get("swap_agreement") or {}).items():
            tally = tallies.setdefault(name, PrincipleTally())
            tally.judged += 1
            tally.swap_agreed += bool(agreed)


def format_statistics(stats: dict[str, dict[str, Any]]) -> list[str]:
    """One summary line per principle, for the run log."""
    lines = []
    for name, s in stats.items():
        parts = []
        if s["critiques"]:
            parts.append(f"critique asked for change {percent(s['critique_change_rate'])} of {s['critiques']}")
        if s["revisions"]:
            parts.append(
                f"revision changed answer {percent(s['revision_change_rate'])} of {s['revisions']}, "
                f"mean edit {percent(s['mean_edit_fraction'])} of words"
            )
        if s["judged_swapped"]:
            parts.append(f"judge agreed across orders {percent(s['swap_agreement'])} of {s['judged_swapped']}")
        lines.append(f"  {name}: " + "; ".join(parts))
    return lines


def percent(rate: float | None) -> str:
    """A rate as a whole percentage; "–" when there was nothing to count."""
    return "–" if rate is None else f"{100 * rate:.0f}%"


def format_drop_reasons(reasons: dict[str, int]) -> str:
    """Drop counts by reason kind, e.g. "near-duplicate ×2, prompt too long ×1" (log line and card)."""
    return ", ".join(f"{kind} ×{count}" for kind, count in reasons.items())
