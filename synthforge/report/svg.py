"""Small SVG charts drawn by us (no library, no network): horizontal bars and histograms."""

from __future__ import annotations

from html import escape

COLOR = "#4c72b0"


def bar_chart(items: list[tuple[str, float]], width: int = 520, unit: str = "", percent: bool = False) -> str:
    """Horizontal bars, one per (label, value); labels escaped, values printed at the bar's end."""
    if not items:
        return ""
    row, label_w = 22, min(220, 8 * max(len(label) for label, _ in items) + 10)
    top = max((v for _, v in items), default=0) or 1
    height = row * len(items) + 6
    bars = []
    for i, (label, value) in enumerate(items):
        length = (width - label_w - 70) * (value / top if top else 0)
        y = 3 + i * row
        text = f"{100 * value:.0f}%" if percent else f"{value:g}{unit}"
        bars.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{max(length, 0):.1f}" height="{row - 6}" fill="{COLOR}"/>'
            f'<text x="{label_w + length + 4:.1f}" y="{y + 15}">{escape(text)}</text>'
        )
    return (
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" xmlns="http://www.w3.org/2000/svg">{"".join(bars)}</svg>'
    )


def histogram(
    values: list[float],
    bins: int = 20,
    width: int = 520,
    height: int = 140,
    low: float | None = None,
    high: float | None = None,
) -> str:
    """A histogram of ``values`` as vertical bars, with the range and count under it."""
    if not values:
        return '<p class="muted">no values</p>'
    low = min(values) if low is None else low
    high = max(values) if high is None else high
    span = (high - low) or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(int((v - low) / span * bins), bins - 1)] += 1
    peak = max(counts) or 1
    bar_w = (width - 20) / bins
    bars = "".join(
        f'<rect x="{10 + i * bar_w:.1f}" y="{height - 20 - (height - 30) * c / peak:.1f}" width="{bar_w - 1:.1f}" '
        f'height="{(height - 30) * c / peak:.1f}" fill="{COLOR}"><title>{c}</title></rect>'
        for i, c in enumerate(counts)
    )
    axis = (
        f'<text x="10" y="{height - 4}">{low:g}</text>'
        f'<text x="{width - 10}" y="{height - 4}" text-anchor="end">{high:g}</text>'
        f'<text x="{width / 2}" y="{height - 4}" text-anchor="middle">n = {len(values)}</text>'
    )
    return (
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg">{bars}{axis}</svg>'
    )


def line_chart(series: dict[str, list[tuple[float, float]]], width: int = 520, height: int = 180) -> str:
    """Lines (e.g. loss against step), one per named series, with a legend."""
    points = [p for values in series.values() for p in values]
    if not points:
        return '<p class="muted">nothing logged</p>'
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx = (width - 60) / ((x1 - x0) or 1)
    sy = (height - 40) / ((y1 - y0) or 1)
    colors = [COLOR, "#dd8452", "#55a868", "#c44e52"]
    lines, legend = [], []
    for k, (name, values) in enumerate(series.items()):
        if not values:
            continue
        path = " ".join(f"{50 + (x - x0) * sx:.1f},{height - 25 - (y - y0) * sy:.1f}" for x, y in values)
        lines.append(f'<polyline fill="none" stroke="{colors[k % 4]}" stroke-width="2" points="{path}"/>')
        legend.append(f'<text x="{60 + 130 * k}" y="12" fill="{colors[k % 4]}">{escape(name)}</text>')
    axis = (
        f'<text x="4" y="{height - 25}">{y0:.3g}</text><text x="4" y="30">{y1:.3g}</text>'
        f'<text x="50" y="{height - 6}">step {x0:g}</text>'
        f'<text x="{width - 10}" y="{height - 6}" text-anchor="end">{x1:g}</text>'
    )
    return (
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(lines)}{"".join(legend)}{axis}</svg>'
    )
