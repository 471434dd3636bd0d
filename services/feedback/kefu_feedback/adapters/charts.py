"""The report's charts, drawn headless with matplotlib (Agg) as SVG or PNG bytes.

Each chart takes the KPI document (the JSON of ``GET /kpis``), so the service and the report
command draw the same pictures from the same numbers.
"""

from __future__ import annotations

import io
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

ImageFormat = Literal["svg", "png"]
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
DIMENSION_LABELS = {
    "product_quality": "Product quality",
    "service_efficiency": "Service efficiency",
    "price": "Price",
    "user_experience": "User experience",
    "after_sales_service": "After-sales service",
}


def _render(fig: Figure, fmt: ImageFormat) -> bytes:
    buffer = io.BytesIO()
    # A fixed creation date keeps SVG output stable for the same numbers.
    metadata = {"Date": None} if fmt == "svg" else {}
    fig.savefig(buffer, format=fmt, bbox_inches="tight", dpi=110, metadata=metadata)
    plt.close(fig)
    return buffer.getvalue()


def peak_hours_heatmap(kpis: dict[str, Any], fmt: ImageFormat) -> bytes:
    grid = kpis["peak_hours"]["grid"]
    fig, ax = plt.subplots(figsize=(10, 3.2))
    image = ax.imshow(grid, aspect="auto", cmap="YlOrRd")
    ax.set_yticks(range(7), WEEKDAYS)
    ax.set_xticks(range(0, 24, 2), [f"{h:02d}" for h in range(0, 24, 2)])
    ax.set_xlabel(f"Hour ({kpis['peak_hours']['timezone']})")
    ax.set_title("Customer messages by weekday and hour")
    fig.colorbar(image, ax=ax, label="messages")
    return _render(fig, fmt)


def csat_by_dimension(kpis: dict[str, Any], fmt: ImageFormat) -> bytes:
    dims = kpis["csat"]["by_dimension"]
    names = list(DIMENSION_LABELS)
    values = [(dims[n]["rate"] or 0.0) * 100 for n in names]
    answered = [dims[n]["denominator"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    colours = ["#c0392b" if v < 70 else "#e67e22" if v < 85 else "#27ae60" for v in values]
    bars = ax.barh([DIMENSION_LABELS[n] for n in names], values, color=colours)
    for bar, value, n in zip(bars, values, answered, strict=True):
        label = f"{value:.0f} % (n={n})" if n else "no answers"
        ax.text(min(value + 1, 101), bar.get_y() + bar.get_height() / 2, label, va="center")
    ax.set_xlim(0, 115)
    ax.invert_yaxis()
    ax.set_xlabel("satisfied (4-5 of 5), %")
    ax.set_title("Satisfaction by dimension")
    return _render(fig, fmt)


def _bucket_label(bound: float | None) -> str:
    if bound is None:
        return "longer"
    if bound < 60:
        return f"≤{bound:.0f}s"
    if bound < 3600:
        return f"≤{bound / 60:.0f}m"
    if bound < 86400:
        return f"≤{bound / 3600:.0f}h"
    return f"≤{bound / 86400:.0f}d"


def response_time_distribution(kpis: dict[str, Any], fmt: ImageFormat) -> bytes:
    fig, ax = plt.subplots(figsize=(9, 3.2))
    series = (("first_response", "first response"), ("next_response", "next response"))
    width = 0.4
    labels: list[str] = []
    for i, (key, label) in enumerate(series):
        buckets = kpis[key]["distribution"]
        labels = [_bucket_label(b["le_seconds"]) for b in buckets]
        xs = [x + (i - 0.5) * width for x in range(len(buckets))]
        ax.bar(xs, [b["count"] for b in buckets], width=width, label=label)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("replies")
    ax.set_title("Response-time distribution")
    ax.legend()
    return _render(fig, fmt)


CHARTS = {
    "peak_hours": ("Peak hours", peak_hours_heatmap),
    "csat_by_dimension": ("Satisfaction by dimension", csat_by_dimension),
    "response_times": ("Response-time distribution", response_time_distribution),
}
