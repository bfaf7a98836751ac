"""The demo's picture: each link's throughput over time, stacked, with the story's events.

matplotlib is the demo's optional dependency (pip install 'wanhooks[demo]'),
never wanhooks' own: without it the demo says so and draws nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .watch import Timeline

COLOURS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def draw(timeline: Timeline, speeds: dict[str, float], labels: dict[str, str], path: Path) -> None:
    """Write the PNG to `path` (its directory must exist)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, none touched
    import matplotlib.pyplot as plt

    with timeline.lock:
        samples = list(timeline.samples)
        events = list(timeline.events)
        weights = list(timeline.weights)
    times = [t for t, _ in samples]
    series = [[rates.get(name, 0.0) for _, rates in samples] for name in speeds]
    fig, (ax, below) = plt.subplots(
        2, 1, figsize=(11, 7.5), dpi=100, sharex=True, gridspec_kw={"height_ratios": [3, 1.2]}
    )
    ax.stackplot(
        times,
        series,
        labels=[
            f"{name}: {speed:g} Mbit/s {labels.get(name, '')}".rstrip() for name, speed in speeds.items()
        ],
        colors=COLOURS[: len(speeds)],
        alpha=0.85,
    )
    top = max((sum(column) for column in zip(*series)), default=1.0) or 1.0
    for n, (at, text) in enumerate(events):
        ax.axvline(at, color="black", linestyle="--", linewidth=0.8)
        ax.annotate(
            text,
            xy=(at, top * (1.12 - 0.07 * (n % 4))),
            xytext=(3, 0),
            textcoords="offset points",
            fontsize=8,
            va="center",
        )
    ax.set_ylim(0, top * 1.2)
    ax.set_xlim(0, max(times, default=1.0))
    ax.set_ylabel("Mbit/s sent by the router, per link")
    ax.set_title("wanhooks demo: traffic over each link, and what happened")
    ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    ax.grid(alpha=0.3)
    _draw_shares(below, weights, list(speeds), max(times, default=1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _draw_shares(ax: Any, weights: list[tuple[float, dict[str, int]]], names: list[str], end: float) -> None:
    """Each link's share of the group's weights over time (weight: auto at work), as steps."""
    for colour, name in zip(COLOURS, names):
        xs, ys = [], []
        for at, members in weights:
            total = sum(members.values())
            xs.append(at)
            ys.append(100 * members.get(name, 0) / total if total else 0.0)
        if xs:
            xs.append(end)
            ys.append(ys[-1])
            ax.step(xs, ys, where="post", color=colour, linewidth=1.5, label=name)
    ax.set_ylim(0, 100)
    ax.set_xlabel("seconds")
    ax.set_ylabel("share of weight, %")
    ax.grid(alpha=0.3)
