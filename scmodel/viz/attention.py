"""The layers up close: parameters and FLOPs inside each repeated layer, and every attention
module (self or cross, query heads vs shared key/value heads, tensor shapes) from the trace."""

from __future__ import annotations

from dataclasses import dataclass

from .analysis import Analysis
from .drawing import COLORS, arrow, box, human, plt, save, shape_text
from .graph import nodes


def _layer_types(a: Analysis):
    """Repeated components (``blocks.0-5``) first; else every component with submodules."""
    all_nodes = nodes(a)
    repeated = [n for n in all_nodes if n.count > 1]
    chosen = repeated or [n for n in all_nodes if len(list(a.modules[n.names[0]].children()))]
    return sorted(chosen, key=lambda n: -n.params)[:4]


def layer_breakdown(a: Analysis, path: str) -> str:
    types = _layer_types(a)
    if not types:
        types = nodes(a)[:1]
    rows_per = [max(1, len(_leaves(a, n.names[0]))) for n in types]
    fig, axes = plt.subplots(len(types), 2, figsize=(15, 1.4 + sum(0.33 * r + 0.9 for r in rows_per)),
                             gridspec_kw={"height_ratios": rows_per}, squeeze=False)
    for (ax_p, ax_f), n in zip(axes, types):
        leaves = _leaves(a, n.names[0])
        labels = [rel for rel, _, _ in leaves]
        params = [p for _, p, _ in leaves]
        flops = [f for _, _, f in leaves]
        y = range(len(leaves))
        ax_p.barh(y, params, color="#6fa8dc")
        ax_f.barh(y, flops, color="#e69138")
        for ax, values, unit in ((ax_p, params, ""), (ax_f, flops, "FLOP")):
            ax.set_yticks(list(y), labels, fontsize=9)
            ax.invert_yaxis()
            top = max(values + [1])
            ax.set_xlim(0, top * 1.28)
            for i, v in enumerate(values):
                ax.text(v + top * 0.01, i, human(v, unit) if v else "0", va="center", fontsize=8)
            ax.tick_params(axis="x", labelsize=8)
        each = a.component_params(n.names[:1])
        ax_p.set_title(f"{n.title} ({n.kind}): {each:,} parameters each", fontsize=10, loc="left")
        ax_f.set_title(f"Forward FLOPs per instance ({a.batch} x {a.genes:,}); '(ops)': the module's own ops, "
                       "e.g. QK^T and AV", fontsize=10, loc="left")
    fig.suptitle(f"{a.name}: inside each repeated layer", fontsize=13, weight="bold")
    fig.tight_layout()
    return save(fig, path)


def _leaves(a: Analysis, root: str) -> list[tuple[str, int, int]]:
    """(relative path, parameters held directly, forward FLOPs of its own ops) for the modules under
    ``root`` that hold parameters or run counted ops outside their children (attention's QK^T and AV).
    Forward only: the flop counter's split of backward FLOPs between sibling modules is approximate."""
    out = []
    for name, module in a.modules.items():
        if name == root or name.startswith(root + "."):
            own = sum(p.numel() for p in module.parameters(recurse=False))
            total = a.flops.by_module.get(name, (0, 0))[0]
            inner = sum(a.flops.by_module.get(f"{name}.{c}", (0, 0))[0] for c, _ in module.named_children())
            rel = name[len(root) + 1:] or "(own)"
            if own or total - inner > 0:
                out.append((rel if own else f"{rel} (ops)", own, total - inner))
    return out


@dataclass
class Site:
    label: str
    count: int
    kind: str
    heads: int
    kv_heads: int
    head_dim: int
    query: tuple
    source: tuple
    params: int
    flops: int
    output: tuple


def attention_sites(a: Analysis) -> list[Site]:
    """Modules with ``n_heads`` and ``head_dim`` (any attention), grouped by where they sit."""
    sites = []
    for n in nodes(a):
        first = n.names[0]
        for name, module in a.modules.items():
            if not (name == first or name.startswith(first + ".")) or not hasattr(module, "n_heads") or not hasattr(module, "head_dim"):
                continue
            rel = name[len(first):].lstrip(".")
            call = a.first_call(name)
            if call is None:
                continue
            shapes = list(call.inputs.items())
            query = shapes[0][1]
            context = call.inputs.get("context")
            kv = getattr(module, "n_kv", getattr(module, "n_kv_heads", module.n_heads))
            full = [f"{m}.{rel}" if rel else m for m in n.names]
            sites.append(Site(n.label + (f" > {rel}" if rel else ""), n.count, "cross" if context else "self",
                              module.n_heads, kv, module.head_dim, query, context or query,
                              sum(p.numel() for p in module.parameters()) * n.count,
                              sum(a.flops.by_module.get(f, (0, 0))[0] for f in full), call.output))
    return sorted(sites, key=lambda s: -s.flops)  # the heaviest (the trunk's) first


def _heads(ax, y: float, heads: int, kv: int, title: str) -> None:
    """Query heads on top, key/value heads below, a line for each sharing."""
    width = 10.0
    qw = min(0.8, width / heads - 0.1)
    ax.text(0, y + 1.55, title, fontsize=9.5, weight="bold")
    q_x = [i * width / heads for i in range(heads)]
    group = heads // kv
    k_x = [sum(q_x[j * group:(j + 1) * group]) / group for j in range(kv)]  # under its group of query heads
    for i, x in enumerate(q_x):
        box(ax, x, y + 0.85, qw, 0.45, f"Q{i}", COLORS["attention"], fontsize=9)
        j = i // group
        ax.plot([x + qw / 2, k_x[j] + qw / 2], [y + 0.85, y + 0.5], color="#888888", lw=0.8)
    for j, x in enumerate(k_x):
        box(ax, x, y, qw, 0.5, f"K/V{j}" if kv > 1 else "K/V", COLORS["embedding"], fontsize=9)


def _flow(ax, y: float, s: Site) -> None:
    hd, h, kv = s.head_dim, s.heads, s.kv_heads
    b, q_len = s.query[0], s.query[1] if len(s.query) > 2 else s.query[0]
    src_len = s.source[1] if len(s.source) > 2 else s.source[0]
    ax.text(0, y + 2.15, f"{s.label}  ({s.kind}-attention, x{s.count})", fontsize=9.5, weight="bold")
    x_box = box(ax, 0, y + 1.1, 2.3, 0.75, f"x\n{shape_text(s.query)}", COLORS["tensor"], fontsize=8)
    q_box = box(ax, 3.0, y + 1.1, 2.6, 0.75, f"Q: {h} heads\n{shape_text((b, h, q_len, hd))}", COLORS["attention"], fontsize=8)
    src_name = "context" if s.kind == "cross" else "x"
    c_box = box(ax, 0, y, 2.3, 0.75, f"{src_name}\n{shape_text(s.source)}", COLORS["tensor"], fontsize=8)
    kv_box = box(ax, 3.0, y, 2.6, 0.75, f"K, V: {kv} head{'s' if kv > 1 else ''}\n{shape_text((b, kv, src_len, hd))}",
                 COLORS["embedding"], fontsize=8)
    sc_box = box(ax, 6.4, y + 0.55, 2.9, 0.75, f"QK^T / sqrt({hd}), softmax\n{shape_text((b, h, q_len, src_len))}",
                 COLORS["attention"], fontsize=8)
    o_box = box(ax, 10.0, y + 0.55, 2.9, 0.75, f"weights x V, merge heads,\nout projection {shape_text(s.output)}",
                COLORS["tensor"], fontsize=8)
    arrow(ax, x_box.right, q_box.left)
    arrow(ax, c_box.right, kv_box.left)
    arrow(ax, q_box.right, sc_box.left)
    arrow(ax, kv_box.right, sc_box.left, label=f"x{h // kv} shared" if h != kv else None)
    arrow(ax, sc_box.right, o_box.left)


def attention_mechanism(a: Analysis, path: str) -> str:
    sites = attention_sites(a)
    distinct = []
    for s in sites:
        key = (s.kind, s.heads, s.kv_heads, s.query, s.source)
        if key not in [(d.kind, d.heads, d.kv_heads, d.query, d.source) for d in distinct]:
            distinct.append(s)
    distinct = distinct[:4]
    sharing = list(dict.fromkeys((s.heads, s.kv_heads) for s in sites))  # the trunk's first
    n_flow = max(len(distinct), 1)
    fig = plt.figure(figsize=(15, 2.2 + 1.0 * len(sites) + 1.8 * len(sharing) + 2.6 * n_flow))
    grid = fig.add_gridspec(3, 1, height_ratios=[0.7 + 0.45 * len(sites), 1.9 * len(sharing) + 0.2, 2.6 * n_flow])
    ax_t = fig.add_subplot(grid[0])
    ax_t.axis("off")
    cols = ["where", "kind", "Q heads", "K/V heads", "head dim", "query", "keys from", "params", "fwd FLOPs"]
    xs = [0.0, 0.33, 0.40, 0.47, 0.55, 0.62, 0.73, 0.84, 0.93]
    n_rows = len(sites) + 1
    for x, c in zip(xs, cols):
        ax_t.text(x, 1 - 0.5 / n_rows, c, fontsize=9, weight="bold", transform=ax_t.transAxes, va="center")
    for r, s in enumerate(sites, start=1):
        vals = [f"{s.label} (x{s.count})", s.kind, s.heads, s.kv_heads, s.head_dim, shape_text(s.query),
                shape_text(s.source), human(s.params), human(s.flops)]
        for x, v in zip(xs, vals):
            ax_t.text(x, 1 - (r + 0.5) / n_rows, str(v), fontsize=8.5, transform=ax_t.transAxes, va="center")
    ax_t.set_title(f"{a.name}: attention modules ({a.batch} cell(s) x {a.genes:,} positions; "
                   f"multi-query = one K/V head shared by all query heads)", fontsize=12, weight="bold", loc="left")
    ax_h = fig.add_subplot(grid[1])
    ax_h.axis("off")
    ax_h.set_xlim(-0.2, 13)
    ax_h.set_ylim(0, 1.9 * len(sharing) + 0.2)
    for i, (h, kv) in enumerate(sharing):
        where = ", ".join(sorted({s.label.split(" > ")[0] for s in sites if (s.heads, s.kv_heads) == (h, kv)}))
        kind = "multi-query" if kv == 1 else "multi-head" if kv == h else "grouped-query"
        _heads(ax_h, 1.9 * (len(sharing) - 1 - i) + 0.1, h, kv, f"{kind}: {h} query heads, {kv} key/value head(s)  [{where}]")
    ax_f = fig.add_subplot(grid[2])
    ax_f.axis("off")
    ax_f.set_xlim(-0.2, 13)
    ax_f.set_ylim(0, 2.6 * n_flow)
    for i, s in enumerate(distinct):
        _flow(ax_f, 2.6 * (n_flow - 1 - i) + 0.1, s)
    if not sites:
        ax_f.text(0, 1, "no attention modules (no module with n_heads and head_dim)", fontsize=11)
    fig.tight_layout()
    return save(fig, path)
