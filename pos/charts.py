"""Chart geometry for the dashboard's inline SVG: plain numbers the template draws, no script, no CDN.

Column charts use a fixed viewBox (WIDTH × HEIGHT) that the browser scales to the card; bar lists
are percentages of the largest value.
"""

import math
from dataclasses import dataclass
from decimal import Decimal

WIDTH, HEIGHT = 520, 200
LEFT, RIGHT, TOP, BOTTOM = 46, 8, 10, 22  # room for the axis figures and the labels under the columns


@dataclass
class Column:
    x: float
    y: float
    width: float
    height: float
    label: str
    title: str
    muted: bool = False

    @property
    def center(self) -> float:
        return round(self.x + self.width / 2, 1)


def axis_step(value: float, ticks: int = 4) -> float:
    """A round gridline step (1, 2, 2.5 or 5 × 10^n) giving about `ticks` lines up to value."""
    if value <= 0:
        return 1
    raw = value / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(step * magnitude for step in (1, 2, 2.5, 5, 10) if step * magnitude >= raw)


def short_money(value: float) -> str:
    """An axis figure: 950, 12k, 1.5M."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1_000:
        return f"{value / 1_000:g}k"
    return f"{value:g}"


def column_chart(points: list[tuple[str, Decimal, str]], *, line: list[Decimal] | None = None,
                 muted: set[int] = frozenset()) -> dict:
    """Columns for (label, value, tooltip) points, with a y axis of round gridlines; `line` adds a
    polyline (a comparison such as the week's average) over the same x positions."""
    values = [float(value) for _, value, _ in points] + [float(v) for v in (line or [])]
    step = axis_step(max(values, default=0))
    lines = max(1, math.ceil(max(values, default=0) / step))
    top = step * lines
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_width / max(len(points), 1)
    gap = min(slot * 0.25, 6)

    def y_of(value) -> float:
        return TOP + plot_height * (1 - float(value) / top)

    columns = []
    for i, (label, value, title) in enumerate(points):
        y = y_of(value)
        columns.append(Column(x=round(LEFT + i * slot + gap / 2, 1), y=round(y, 1), width=round(slot - gap, 1),
                              height=round(TOP + plot_height - y, 1), label=label, title=title, muted=i in muted))
    grid = [{"y": round(y_of(step * k), 1), "label": short_money(step * k)} for k in range(lines + 1)]
    polyline = ""
    if line:
        polyline = " ".join(f"{LEFT + (i + 0.5) * slot:.1f},{y_of(v):.1f}" for i, v in enumerate(line))
    return {"width": WIDTH, "height": HEIGHT, "columns": columns, "grid": grid, "polyline": polyline,
            "left": LEFT, "right": WIDTH - RIGHT, "axis_x": LEFT - 6, "baseline": TOP + plot_height, "label_y": HEIGHT - 6,
            "label_every": 1 if len(points) <= 12 else 2}


def percentages(values: list[Decimal]) -> list[float]:
    """Each value as a percentage of the largest (bar lengths)."""
    largest = max((float(v) for v in values), default=0)
    return [round(float(v) * 100 / largest, 1) if largest else 0 for v in values]
