"""Architecture diagrams drawn from the traced forward pass: the overview (components by group with
their data flow), the forward pass step by step, and the conditioning pathways."""

from __future__ import annotations

import os

from .analysis import Analysis
from .drawing import COLORS, arrow, box, canvas, human, kind_color, save, shape_text
from .graph import ancestors, arg_edges, edges, nodes, trunk_group


def _node_text(n, a: Analysis) -> str:
    out = shape_text(n.call.output) if n.call else "not called"
    each = f" ({n.count} x {human(n.params / n.count)})" if n.count > 1 else ""
    return f"{n.title}\n{n.kind} | {human(n.params)} params{each}\n-> {out}"


def architecture_overview(a: Analysis, path: str) -> str:
    """The trunk (the group producing the output) on the right, the other groups stacked on the left;
    inputs beside their first consumer; arrows = data flow, between groups through vertical lanes."""
    all_nodes = nodes(a)
    flow = edges(a, all_nodes)
    trunk = trunk_group(all_nodes)
    members = {g: [n for n in all_nodes if n.group == g] for g, _ in a.parts.groups}
    side = [g for g, _ in a.parts.groups if g != trunk and members[g]]
    trunk_labels = {n.label for n in members[trunk]}
    skips = [lbl for lbl in dict.fromkeys(n.label for n in members[trunk])  # sources that skip rows in the trunk
             if any(s == lbl and t in trunk_labels for s, t in flow)
             and any(s == lbl and t in trunk_labels and members[trunk].index(next(n for n in members[trunk] if n.label == t))
                     - members[trunk].index(next(n for n in members[trunk] if n.label == lbl)) > 1 for s, t in flow)]
    cross = sorted({s for s, t in flow if not s.startswith("input:") and t in {n.label for n in members[trunk]}
                    and s not in {n.label for n in members[trunk]}})
    in_w, box_w, row = 1.9, 3.4, 1.15
    lane_w = 0.5 + 0.22 * len(cross) if side else 0.0
    side_w = in_w + 0.3 + box_w if side else 0.0
    trunk_x = side_w + lane_w
    left_rows = sum(len(members[g]) + 0.6 for g in side)
    rows = max(left_rows, len(members[trunk]) + 1.0)
    width, height = trunk_x + in_w + 0.3 + box_w + 0.6 + 0.25 * len(skips), rows * row + 1.2
    fig, ax = canvas(width * 0.95, height * 0.95 + 0.5, width, height,
                     f"{a.name}: {type(a.model).__name__}, {a.parameters:,} parameters")
    where = {}

    def column(g: str, x0: float, top: float) -> float:
        gparams = sum(n.params for n in members[g]) + a.parts.own.get(g, 0)
        ax.text(x0 + in_w + 0.3 + box_w / 2, top - 0.35, f"{g}  ({human(gparams)} params)", ha="center",
                fontsize=11, weight="bold")
        y = top - 0.6
        for n in members[g]:
            y -= row
            where[n.label] = box(ax, x0 + in_w + 0.3, y, box_w, 0.9, _node_text(n, a), kind_color(n.kind), fontsize=8.5)
            fresh = sorted(src for src, t in flow if t == n.label and src.startswith("input:") and src not in where)
            if fresh:  # every input first read here, in one box
                names = [s.split(":", 1)[1] for s in fresh]
                text = "\n".join(f"{nm} {shape_text(a.inputs.get(nm))}" for nm in names) if len(names) > 1 else \
                    f"{names[0]}\n{shape_text(a.inputs.get(names[0]))}"
                b = box(ax, x0, y + 0.15, in_w, 0.6, text, COLORS["input"], fontsize=8 if len(names) < 3 else 7)
                where.update({s: b for s in fresh})
        return y - 0.25

    top = height - 0.1
    for g in side:
        top = column(g, 0.0, top)
    column(trunk, trunk_x, height - 0.1)
    # the topmost source takes the rightmost lane and arrives highest: no two routes cross
    cross.sort(key=lambda lbl: -where[lbl].y if lbl in where else 0)
    for s, t in sorted(flow):
        if s not in where or t not in where:
            continue
        a_box, b_box = where[s], where[t]
        if s.startswith("input:"):
            if abs(a_box.y - 0.15 - b_box.y) > 1e-6:  # an input read again further down
                arrow(ax, a_box.bottom, b_box.left, color="#999999", rad=0.25)
            else:
                arrow(ax, a_box.right, b_box.left)
        elif s in cross and t in trunk_labels:  # right, down the source's lane, right into the target
            lane = side_w + 0.25 + 0.22 * (len(cross) - 1 - cross.index(s))
            (sx, sy), (tx, ty) = a_box.right, b_box.left
            ty += 0.3 - 0.6 * cross.index(s) / max(len(cross) - 1, 1)
            ax.plot([sx, lane, lane, trunk_x + 0.05], [sy, sy, ty, ty], color="#cc7a00", lw=1.1)
            arrow(ax, (trunk_x, ty), (tx, ty), color="#cc7a00")
        elif abs(a_box.x - b_box.x) < 1e-6 and abs(a_box.y - b_box.y - row) < 1e-6:
            arrow(ax, a_box.bottom, b_box.top)
        elif s in skips and t in trunk_labels:  # right, down the source's lane on the right, left into the target
            k = skips.index(s)
            lane = a_box.x + a_box.w + 0.3 + 0.25 * k
            (sx, sy), (tx, ty) = a_box.right, b_box.right
            ty += 0.25 - 0.5 * k / max(len(skips) - 1, 1)
            ax.plot([sx, lane, lane], [sy, sy, ty], color="#3d85c6", lw=1.1)
            arrow(ax, (lane, ty), (tx, ty), color="#3d85c6")
        elif abs(a_box.x - b_box.x) < 1e-6:
            arrow(ax, a_box.right, b_box.right, color="#3d85c6", rad=-0.35)
        else:
            arrow(ax, a_box.right, b_box.left, color="#cc7a00", rad=0.12)
    last = all_nodes[-1] if all_nodes[-1].call else None
    if last is not None:  # the model output under the trunk's last component
        b = where[last.label]
        ax.text(b.x + b.w / 2, b.y - 0.45, f"output {shape_text(last.call.output)}", ha="center", fontsize=9, weight="bold")
        arrow(ax, b.bottom, (b.x + b.w / 2, b.y - 0.3))
    ax.text(0, 0.05, "black: next step  |  blue: skips ahead within a group  |  orange: from another group  |  "
            "grey: an input read again", fontsize=8, color="#555555")
    return save(fig, path)


def _compact(sources) -> str:
    """{"perturbation.gene", "perturbation.sign"} -> "perturbation.{gene, sign}"."""
    by_prefix: dict[str, list[str]] = {}
    for src in sorted(sources):
        src = src.replace("input:", "input ")
        prefix, _, last = src.rpartition(".") if "." in src and not src.startswith("input ") else ("", "", src)
        by_prefix.setdefault(prefix, []).append(last)
    parts = [(f"{p}.{{{', '.join(v)}}}" if len(v) > 1 else f"{p}.{v[0]}") if p else ", ".join(v) for p, v in by_prefix.items()]
    return ", ".join(parts)


def forward_pass_flow(a: Analysis, path: str) -> str:
    """Every component in execution order with its input and output shapes and forward FLOPs."""
    all_nodes = [n for n in nodes(a) if n.call]
    args = arg_edges(a, all_nodes)
    height = len(all_nodes) * 1.0 + 0.9
    fig, ax = canvas(15, height * 0.62 + 0.8, 15, height,
                     f"{a.name}: forward pass, {a.batch} cell(s) x {a.genes:,} gene positions "
                     f"({human(a.flops.forward, 'FLOP')} forward; a repeated layer's FLOPs: all instances)")
    ax.text(0.1, height - 0.35, "step / component", fontsize=9.5, weight="bold")
    ax.text(5.3, height - 0.35, "inputs (shape <- from)", fontsize=9.5, weight="bold")
    ax.text(12.0, height - 0.35, "output", fontsize=9.5, weight="bold")
    ax.text(14.9, height - 0.35, "fwd FLOPs", fontsize=9.5, weight="bold", ha="right")
    prev = None
    for i, n in enumerate(all_nodes):
        y = height - 1.2 - i * 1.0
        b = box(ax, 0.1, y, 4.8, 0.72, f"{i + 1}. {n.title}\n{n.kind}", kind_color(n.kind), fontsize=8.5)
        if prev is not None:
            arrow(ax, prev.bottom, b.top, lw=0.9)
        prev = b
        parts = []
        for arg, shape in n.call.inputs.items():
            src_txt = _compact(args.get(n.label, {}).get(arg, ()))
            if len(src_txt) > 72:
                src_txt = src_txt[:70] + "..."
            parts.append(f"{arg} {shape_text(shape)}" + (f" <- {src_txt}" if src_txt else ""))
        ax.text(5.3, y + 0.36, "\n".join(parts[:3]), fontsize=8, va="center")
        ax.text(12.0, y + 0.36, shape_text(n.call.output), fontsize=8.5, va="center")
        fw, _ = a.component_flops(n.names)
        ax.text(14.9, y + 0.36, human(fw), fontsize=8.5, va="center", ha="right")
    return save(fig, path)


def conditioning_pipeline(a: Analysis, path: str) -> str:
    """Side inputs (everything but the value tokens) -> their components -> the arguments of the
    first component that also reads the tokens (the trunk's first block)."""
    all_nodes = nodes(a)
    flow = edges(a, all_nodes)
    by_label = {n.label: n for n in all_nodes}
    token_fed = {t for s, t in flow if s == "input:tokens"}
    token_fed |= {t for t in by_label if ancestors(flow, t) & token_fed}
    side = {n.label for n in all_nodes if n.label not in token_fed}
    joins = sorted({t for s, t in flow if s in side and t in token_fed}, key=lambda lbl: by_label[lbl].order)
    join = joins[0] if joins else None
    args = arg_edges(a, all_nodes).get(join, {}) if join else {}
    side_args = {arg: src for arg, src in args.items() if src and not (src & ({"input:tokens"} | token_fed))}
    keep = set().union(*side_args.values()) if side_args else set()
    for lbl in list(keep):
        keep |= ancestors(flow, lbl)
    depth: dict[str, int] = {}

    def level(lbl: str) -> int:
        if lbl.startswith("input:"):
            return 0
        if lbl not in depth:
            depth[lbl] = 1 + max((level(s) for s, t in flow if t == lbl and s in keep), default=0)
        return depth[lbl]

    # one row per chain: an input opens a row (in the order its consumer runs), a component takes the
    # row of its first source (a fresh row if that cell is taken), an argument the mean of its sources'
    first_use = {s: min(by_label[t].order for s2, t in flow if s2 == s and t in by_label) for s in keep if s.startswith("input:")}
    row: dict[str, float] = {}
    taken: set[tuple[int, int]] = set()
    for lbl in sorted(keep, key=lambda lbl: (level(lbl), first_use.get(lbl, by_label[lbl].order if lbl in by_label else 0))):
        sources = sorted((row[s] for s, t in flow if t == lbl and s in row))
        r = int(sources[0]) if sources else sorted(first_use, key=first_use.get).index(lbl) if lbl in first_use else 0
        while (level(lbl), r) in taken:
            r = max(rr for _, rr in taken) + 1
        row[lbl] = r
        taken.add((level(lbl), r))
    arg_rows = {}
    for arg, sources in sorted(side_args.items(), key=lambda kv: min(row.get(s, 0) for s in kv[1])):
        r = sum(row.get(s, 0) for s in sources) / len(sources)
        while any(abs(r - other) < 1 for other in arg_rows.values()):
            r = max(arg_rows.values()) + 1
        arg_rows[arg] = r
    n_cols = max([level(lbl) for lbl in keep] + [0]) + 3
    n_rows = max(list(row.values()) + list(arg_rows.values()) + [0]) + 1
    col_w, row_h = 3.9, 1.25
    width, height = n_cols * col_w, n_rows * row_h + 1.7
    names = ", ".join(a.conditioning) if a.conditioning else "none: the timestep is the only side input"
    fig, ax = canvas(width * 0.9, height * 0.9 + 0.5, width, height, f"{a.name}: conditioning pathways ({names})")

    def y_of(r: float) -> float:
        return height - 0.4 - (r + 1) * row_h

    where = {}
    for lbl, r in row.items():
        c, y = level(lbl), y_of(r)
        if lbl.startswith("input:"):
            name = lbl.split(":", 1)[1]
            where[lbl] = box(ax, c * col_w + 0.1, y, col_w - 0.9, 0.9,
                             f"input {name}\n{shape_text(a.inputs.get(name))}", COLORS["input"], fontsize=8.5)
        else:
            n = by_label[lbl]
            module = a.modules[n.names[0]]
            extra = f"\nvocabulary {module.num_embeddings:,}" if hasattr(module, "num_embeddings") else ""
            where[lbl] = box(ax, c * col_w + 0.1, y, col_w - 0.9, 0.9,
                             f"{n.title}\n{n.kind} | {human(n.params)}\n-> {shape_text(n.call.output)}{extra}",
                             kind_color(n.kind) if n.kind != "Linear" else COLORS["conditioning"], fontsize=8)
    c_args = n_cols - 2
    join_node = by_label.get(join)
    for arg, r in arg_rows.items():
        shape = join_node.call.inputs.get(arg) if join_node and join_node.call else None
        b = box(ax, c_args * col_w + 0.1, y_of(r), col_w - 0.9, 0.9, f"{arg}\n{shape_text(shape)}", COLORS["tensor"],
                fontsize=9, weight="bold")
        for s in side_args[arg]:
            if s in where:
                arrow(ax, where[s].right, b.left)
        where[f"arg:{arg}"] = b
    for s, t in flow:
        if s in where and t in where:
            arrow(ax, where[s].right, where[t].left)
    if join_node:
        arg_boxes = [where[f"arg:{arg}"] for arg in side_args]
        y = sum(b.y + b.h / 2 for b in arg_boxes) / len(arg_boxes) if arg_boxes else height / 2
        jb = box(ax, (n_cols - 1) * col_w + 0.1, y - 0.8, col_w - 0.5, 1.6,
                 f"{join_node.title}\n{join_node.kind}\nreads the value tokens\nand these arguments", COLORS["block"], fontsize=9)
        for arg in side_args:
            arrow(ax, where[f"arg:{arg}"].right, jb.left, rad=0.05)
    ax.text(0.1, 0.1, "Shapes from a traced forward pass; arrows follow the data through every torch operation "
            "(concatenations included).", fontsize=8, color="#555555")
    return save(fig, path)


def write_diagrams(a: Analysis, out: str) -> list[str]:
    from .attention import attention_mechanism, layer_breakdown

    return [architecture_overview(a, os.path.join(out, "architecture_overview.png")),
            layer_breakdown(a, os.path.join(out, "layer_breakdown.png")),
            forward_pass_flow(a, os.path.join(out, "forward_pass_flow.png")),
            attention_mechanism(a, os.path.join(out, "attention_mechanism.png")),
            conditioning_pipeline(a, os.path.join(out, "conditioning_pipeline.png"))]
