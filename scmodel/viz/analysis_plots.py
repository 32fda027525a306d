"""parameter_breakdown.png and computational_analysis.png: charts of the measured numbers."""

from __future__ import annotations

import numpy as np

from .analysis import Analysis
from .drawing import human, plt, save
from .graph import nodes

GROUP_COLORS = ["#3d85c6", "#e69138", "#6aa84f", "#a64d79", "#cc0000", "#674ea7", "#45818e", "#bf9000"]



def _labelled_bars(ax, labels: list[str], values: list, color, texts: list[str], fontsize: float, room: float) -> None:
    """Horizontal bars top to bottom in the given order, each with its value written after it."""
    y = np.arange(len(values))
    ax.barh(y, values, color=color)
    ax.set_yticks(y, labels, fontsize=fontsize)
    ax.invert_yaxis()
    top = max(list(values) + [1])
    ax.set_xlim(0, top * room)
    for i, (v, text) in enumerate(zip(values, texts)):
        ax.text(v + top * 0.01, i, text, va="center", fontsize=8)

def _group_colors(a: Analysis) -> dict[str, str]:
    return {g: GROUP_COLORS[i % len(GROUP_COLORS)] for i, (g, _) in enumerate(a.parts.groups)}


def _component_rows(a: Analysis) -> list[tuple[str, str, list[str], int]]:
    rows = []
    for group, members in a.parts.groups:
        for label, names in a.collapsed(members):
            rows.append((group, label + (f" x{len(names)}" if len(names) > 1 else ""), names, a.component_params(names)))
        if group in a.parts.own:
            rows.append((group, f"{group} (own tensors)", [], a.parts.own[group]))
    return rows


def parameter_breakdown(a: Analysis, path: str) -> str:
    rows = _component_rows(a)
    colors = _group_colors(a)
    fig, (ax_c, ax_g, ax_k) = plt.subplots(1, 3, figsize=(18, max(5.5, 0.36 * len(rows) + 2)),
                                            gridspec_kw={"width_ratios": [2.2, 1.3, 1.3]})
    values = [p for *_, p in rows]
    _labelled_bars(ax_c, [label for _, label, _, _ in rows], values, [colors[g] for g, *_ in rows],
                   [f"{v:,} ({v / a.parameters:.1%})" for v in values], fontsize=9, room=1.35)
    ax_c.set_xlabel("parameters")
    ax_c.set_title("By component (tree order)", fontsize=11)
    by_group = {}
    for g, _, _, p in rows:
        by_group[g] = by_group.get(g, 0) + p
    wedge_colors = [colors[g] for g in by_group]
    if len(by_group) == 1:  # one group (the mini model): its components instead
        by_group = {label: p for _, label, _, p in rows}
        wedge_colors = [GROUP_COLORS[i % len(GROUP_COLORS)] for i in range(len(by_group))]
    wedges, _ = ax_g.pie(list(by_group.values()), colors=wedge_colors, startangle=90,
                         wedgeprops=dict(width=0.45, edgecolor="white"))
    ax_g.legend(wedges, [f"{g}: {human(p)} ({p / a.parameters:.1%})" for g, p in by_group.items()],
                loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=9, frameon=False)
    ax_g.set_title("By group" if len(a.parts.groups) > 1 else "By component", fontsize=11)
    by_kind = {}
    for r in a.rows:
        if r.own:
            by_kind[r.kind] = by_kind.get(r.kind, 0) + r.own
    kinds = sorted(by_kind, key=lambda k: -by_kind[k])
    ax_k.bar(range(len(kinds)), [by_kind[k] for k in kinds], color="#999999")
    ax_k.set_xticks(range(len(kinds)), kinds, rotation=30, ha="right", fontsize=9)
    top = max(by_kind.values())
    ax_k.set_ylim(0, top * 1.15)
    for i, k in enumerate(kinds):
        ax_k.text(i, by_kind[k] + top * 0.01, human(by_kind[k]), ha="center", fontsize=8)
    ax_k.set_title("By layer type (tensors held directly)", fontsize=11)
    fig.suptitle(f"{a.name}: {a.parameters:,} parameters ({a.parameters * 4 / 2**20:,.1f} MiB fp32)",
                 fontsize=13, weight="bold")
    fig.tight_layout()
    return save(fig, path)


def _loglog(ax, xs, series: dict[str, list[float]], xlabel: str, ylabel: str, title: str) -> None:
    for label, ys in series.items():
        ax.plot(xs, ys, "o-", label=label, ms=4)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10.5)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)


def computational_analysis(a: Analysis, path: str) -> str:
    fig, axes = plt.subplots(2, 4, figsize=(22, 10))
    (ax_c, ax_o, ax_g, ax_b), (ax_ag, ax_ab, ax_m, ax_txt) = axes
    drawn = [n for n in nodes(a) if n.call]
    fw = [a.component_flops(n.names)[0] for n in drawn]
    _labelled_bars(ax_c, [n.title for n in drawn], fw, "#3d85c6",
                   [f"{human(f)} ({f / max(a.flops.forward, 1):.1%})" for f in fw], fontsize=8.5, room=1.3)
    ax_c.set_xlabel("forward FLOPs (all instances)")
    ax_c.set_title(f"Forward FLOPs by component ({a.batch} x {a.genes:,})", fontsize=10.5)
    ops = sorted(a.flops.by_op.items(), key=lambda kv: -sum(kv[1]))
    ax_o.bar(range(len(ops)), [f for _, (f, _) in ops], color="#3d85c6", label="forward")
    ax_o.bar(range(len(ops)), [b for _, (_, b) in ops], bottom=[f for _, (f, _) in ops], color="#e69138", label="backward")
    ax_o.set_xticks(range(len(ops)), [op.replace("aten.", "") for op, _ in ops], fontsize=9)
    ax_o.set_ylabel("FLOPs")
    ax_o.legend(fontsize=8)
    ax_o.set_title("By operator (bmm = attention scores and mixing)", fontsize=10.5)
    if a.sweep_genes:
        g = [p.genes for p in a.sweep_genes]
        _loglog(ax_g, g, {"forward": [p.flops_forward for p in a.sweep_genes],
                          "forward + backward": [p.flops_forward + p.flops_backward for p in a.sweep_genes]},
                "gene positions", "FLOPs per cell", "FLOPs vs gene positions (batch 1)")
        _loglog(ax_ag, g, {"fp32 activations": [p.activation_bytes / 2**20 for p in a.sweep_genes]},
                "gene positions", "MiB", "Activation memory vs positions (batch 1)")
    if a.sweep_batch:
        b = [p.batch for p in a.sweep_batch]
        _loglog(ax_b, b, {"forward + backward": [p.flops_forward + p.flops_backward for p in a.sweep_batch]},
                "batch (cells)", "FLOPs", f"FLOPs vs batch ({a.genes:,} positions)")
        _loglog(ax_ab, b, {"fp32 activations": [p.activation_bytes / 2**20 for p in a.sweep_batch]},
                "batch (cells)", "MiB", f"Activation memory vs batch ({a.genes:,} positions)")
    if not a.sweep_genes:
        for ax in (ax_g, ax_ab, ax_ag, ax_b):
            ax.axis("off")
            ax.text(0.5, 0.5, "no sweep: this model's forward pass\ndoes not run on the meta device",
                    ha="center", va="center", fontsize=10, transform=ax.transAxes)
    parts = ["weights", "gradients", "adamw_state", "activations"]
    bottoms = np.zeros(len(a.memory))
    for i, part in enumerate(parts):
        vals = np.array([a.memory[p][part] / 2**20 for p in a.memory])
        ax_m.bar([k.replace(", ", "\n").replace(" attention", "") for k in a.memory], vals, bottom=bottoms, label=part,
                 color=["#6fa8dc", "#93c47d", "#ffd966", "#e06666"][i])
        bottoms += vals
    for i, p in enumerate(a.memory):
        total = a.memory[p]["total"]
        label = f"{total / 2**30:.2f} GiB" if total >= 2**30 else f"{total / 2**20:.1f} MiB"
        ax_m.text(i, bottoms[i] * 1.01, label, ha="center", fontsize=8.5)
    ax_m.set_ylim(0, bottoms.max() * 1.15)
    ax_m.set_ylabel("MiB")
    handles, labels = ax_m.get_legend_handles_labels()
    ax_m.set_title(f"Training step memory ({a.batch} x {a.genes:,}, AdamW; attention kernel)", fontsize=10.5)
    ax_txt.axis("off")
    f = a.flops
    lines = [f"{a.name}", f"{a.parameters:,} parameters", "",
             f"one step, {a.batch} cell(s) x {a.genes:,} positions:", f"  forward   {f.forward:,} FLOPs",
             f"  backward  {f.backward:,} FLOPs", f"  total     {f.total:,} FLOPs", "",
             f"per cell: {human(f.forward / a.batch, 'FLOP')} forward,", f"          {human(f.total / a.batch, 'FLOP')} fwd+bwd",
             "", "torch.utils.flop_counter (matmuls,", "attention via the math kernel)"]
    ax_txt.text(0.0, 1.0, "\n".join(lines), va="top", family="monospace", fontsize=10.5, transform=ax_txt.transAxes)
    ax_txt.legend(handles, [f"training memory: {lbl.replace('_', ' ')}" for lbl in labels], loc="lower left", fontsize=9,
                  frameon=False)
    fig.suptitle(f"{a.name}: computation and memory", fontsize=13, weight="bold")
    fig.tight_layout()
    return save(fig, path)
