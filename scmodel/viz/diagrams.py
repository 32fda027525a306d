"""Architecture diagrams drawn from the traced forward pass: the overview (components by group with
their data flow), the forward pass step by step, and the conditioning pathways."""

from __future__ import annotations

import os

from .analysis import Analysis
from .drawing import COLORS, arrow, box, canvas, human, kind_color, save, shape_text
from .graph import ancestors, arg_edges, edges, nodes, trunk_group


def _node_text(n, a: Analysis) -> str:
    out = shape_text(n.call.output) if n.call else "not called"
    return f"{n.title}\n{n.kind} | {human(n.params)} params\n-> {out}"


def architecture_overview(a: Analysis, path: str) -> str:
    """One column per group (the trunk last), inputs beside their first consumer, arrows = data flow."""
    all_nodes = nodes(a)
    flow = edges(a, all_nodes)
    trunk = trunk_group(all_nodes)
    groups = [g for g, _ in a.parts.groups if g != trunk] + [trunk]
    columns = {g: [n for n in all_nodes if n.group == g] for g in groups}
    inputs = sorted({s for s, _ in flow if s.startswith("input:")})
    rows = max(len(c) for c in columns.values()) + 1
    in_w, box_w, gap = 1.9, 3.4, 1.2
    col_w = in_w + 0.3 + box_w + gap
    width, height = col_w * len(groups), rows * 1.15 + 0.6
    fig, ax = canvas(width * 0.95, height * 0.95 + 0.6, width, height,
                     f"{a.name}: {type(a.model).__name__}, {a.parameters:,} parameters")
    where = {}
    for ci, g in enumerate(groups):
        x0 = ci * col_w
        gparams = sum(n.params for n in columns[g]) + a.parts.own.get(g, 0)
        ax.text(x0 + in_w + 0.3 + box_w / 2, height - 0.25, f"{g}  ({human(gparams)} params)", ha="center",
                fontsize=11, weight="bold")
        for ri, n in enumerate(columns[g]):
            y = height - 0.6 - (ri + 1) * 1.15
            where[n.label] = box(ax, x0 + in_w + 0.3, y, box_w, 0.9, _node_text(n, a), kind_color(n.kind), fontsize=8.5)
        for s in inputs:  # an input sits beside the first component of this column that reads it
            consumers = [n for n in columns[g] if (s, n.label) in flow]
            if consumers and s not in where:
                target = where[consumers[0].label]
                name = s.split(":", 1)[1]
                where[s] = box(ax, x0, target.y + 0.15, in_w, 0.6, f"{name}\n{shape_text(a.inputs.get(name))}",
                               COLORS["input"], fontsize=8)
    last = all_nodes[-1] if all_nodes[-1].call else None
    for s, t in sorted(flow):
        if s not in where or t not in where:
            continue
        a_box, b_box = where[s], where[t]
        same_col = abs(a_box.x - b_box.x) < 1e-6
        if s.startswith("input:") and abs(a_box.y - 0.15 - b_box.y) > 1e-6:  # an input read again further down
            arrow(ax, a_box.bottom, b_box.left, color="#999999", rad=0.25)
        elif s.startswith("input:"):
            arrow(ax, a_box.right, b_box.left)
        elif same_col and abs(a_box.y - b_box.y - 1.15) < 1e-6:
            arrow(ax, a_box.bottom, b_box.top)
        elif same_col:
            arrow(ax, a_box.right, b_box.right, color="#3d85c6", rad=-0.35)
        else:
            arrow(ax, a_box.right, b_box.left, color="#cc7a00", rad=0.12)
    if last is not None:  # the model output under the trunk's last component
        b = where[last.label]
        ax.text(b.x + b.w / 2, b.y - 0.45, f"output {shape_text(last.call.output)}", ha="center", fontsize=9, weight="bold")
        arrow(ax, b.bottom, (b.x + b.w / 2, b.y - 0.3))
    ax.text(0, 0.05, "black: next step in a group  |  blue: skips ahead within a group  |  orange: between groups  |  "
            "grey: an input read again", fontsize=8, color="#555555")
    return save(fig, path)


def forward_pass_flow(a: Analysis, path: str) -> str:
    """Every component in execution order with its input and output shapes and forward FLOPs."""
    all_nodes = [n for n in nodes(a) if n.call]
    args = arg_edges(a, all_nodes)
    height = len(all_nodes) * 1.0 + 0.9
    fig, ax = canvas(15, height * 0.62 + 0.8, 15, height,
                     f"{a.name}: forward pass, {a.batch} cell(s) x {a.genes:,} gene positions "
                     f"({human(a.flops.forward, 'FLOP')} forward)")
    ax.text(0.1, height - 0.35, "step / component", fontsize=9.5, weight="bold")
    ax.text(5.3, height - 0.35, "inputs (shape <- from)", fontsize=9.5, weight="bold")
    ax.text(12.0, height - 0.35, "output", fontsize=9.5, weight="bold")
    ax.text(14.9, height - 0.35, "fwd FLOPs (all instances)", fontsize=9.5, weight="bold", ha="right")
    prev = None
    for i, n in enumerate(all_nodes):
        y = height - 1.2 - i * 1.0
        b = box(ax, 0.1, y, 4.8, 0.72, f"{i + 1}. {n.title}\n{n.kind}", kind_color(n.kind), fontsize=8.5)
        if prev is not None:
            arrow(ax, prev.bottom, b.top, lw=0.9)
        prev = b
        parts = []
        for arg, shape in n.call.inputs.items():
            src = sorted(args.get(n.label, {}).get(arg, ()))
            src_txt = ", ".join(s.replace("input:", "input ") for s in src)
            if len(src_txt) > 46:
                src_txt = src_txt[:44] + "..."
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
    keep_nodes = [by_label[lbl] for lbl in keep if lbl in by_label]
    depth: dict[str, int] = {}

    def level(lbl: str) -> int:
        if lbl.startswith("input:"):
            return 0
        if lbl not in depth:
            depth[lbl] = 1 + max((level(s) for s, t in flow if t == lbl and s in keep), default=0)
        return depth[lbl]

    columns: dict[int, list[str]] = {}
    for lbl in sorted(keep, key=lambda lbl: (by_label[lbl].order if lbl in by_label else -1, lbl)):
        columns.setdefault(level(lbl), []).append(lbl)
    n_cols = (max(columns) + 1 if columns else 1) + 2
    n_rows = max([len(v) for v in columns.values()] + [len(side_args), 1])
    col_w, row_h = 3.9, 1.25
    width, height = n_cols * col_w, n_rows * row_h + 1.7
    names = ", ".join(a.conditioning) if a.conditioning else "none: the timestep is the only side input"
    fig, ax = canvas(width * 0.9, height * 0.9 + 0.5, width, height, f"{a.name}: conditioning pathways ({names})")
    where = {}
    for c, labels in sorted(columns.items()):
        for r, lbl in enumerate(labels):
            y = height - 1.0 - (r + 1) * row_h + (n_rows - len(labels)) * row_h / 2
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
    for r, (arg, sources) in enumerate(sorted(side_args.items())):
        y = height - 1.0 - (r + 1) * row_h + (n_rows - len(side_args)) * row_h / 2
        shape = join_node.call.inputs.get(arg) if join_node and join_node.call else None
        b = box(ax, c_args * col_w + 0.1, y, col_w - 0.9, 0.9, f"{arg}\n{shape_text(shape)}", COLORS["tensor"],
                fontsize=9, weight="bold")
        for s in sources:
            if s in where:
                arrow(ax, where[s].right, b.left, rad=0.05)
        where[f"arg:{arg}"] = b
    for s, t in flow:
        if s in where and t in where:
            arrow(ax, where[s].right, where[t].left, rad=0.05)
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
