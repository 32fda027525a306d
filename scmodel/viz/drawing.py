"""Small matplotlib helpers shared by the diagrams: boxes, arrows, number formats, saving."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

COLORS = {
    "input": "#e8e8e8", "embedding": "#cfe2f3", "block": "#d9ead3", "attention": "#fce5cd", "norm": "#ead1dc",
    "head": "#f4cccc", "conditioning": "#fff2cc", "other": "#ffffff", "tensor": "#f3f3f3",
}


def kind_color(kind: str) -> str:
    """A fill colour by module class name (any model: matched on words in the name)."""
    k = kind.lower()
    for word, color in (("embedding", "embedding"), ("attention", "attention"), ("norm", "norm"), ("block", "block"),
                        ("layer", "block"), ("expert", "block"), ("encoder", "conditioning")):
        if word in k:
            return COLORS[color]
    return COLORS["other"]


def human(n: float, unit: str = "") -> str:
    """1,234,567 -> '1.23M' (params), with an optional unit."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def shape_text(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")" if shape is not None else "-"


class Box:
    def __init__(self, x: float, y: float, w: float, h: float):
        self.x, self.y, self.w, self.h = x, y, w, h

    @property
    def top(self):
        return (self.x + self.w / 2, self.y + self.h)

    @property
    def bottom(self):
        return (self.x + self.w / 2, self.y)

    @property
    def left(self):
        return (self.x, self.y + self.h / 2)

    @property
    def right(self):
        return (self.x + self.w, self.y + self.h / 2)


def box(ax, x: float, y: float, w: float, h: float, text: str, color: str = "#ffffff", fontsize: float = 9,
        weight: str = "normal", edge: str = "#444444", style: str = "round,pad=0.02,rounding_size=0.08") -> Box:
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle=style, facecolor=color, edgecolor=edge, linewidth=1.0))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, weight=weight, wrap=False)
    return Box(x, y, w, h)


def arrow(ax, start, end, color: str = "#333333", rad: float = 0.0, label: str | None = None, fontsize: float = 7.5,
          style: str = "-|>", lw: float = 1.1) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=11, color=color, lw=lw,
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=2, shrinkB=2))
    if label:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, label, fontsize=fontsize, ha="center", va="center",
                bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.9))


def canvas(width: float, height: float, xlim: float, ylim: float, title: str | None = None):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(0, xlim)
    ax.set_ylim(0, ylim)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=13, weight="bold")
    return fig, ax


def save(fig, path: str) -> str:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


__all__ = ["COLORS", "Box", "arrow", "box", "canvas", "human", "kind_color", "plt", "save", "shape_text"]
