"""The text files: model_config.json / .txt, parameter_breakdown.txt, computational_analysis.txt.
Every number is read from an ``Analysis`` (the module tree, the flop counter, measured bytes)."""

from __future__ import annotations

import json
import os

from .analysis import Analysis
from .inspect import find_value

SEED_PARAMETERS, SEED_DIM, SEED_VOCAB, SEED_LAYERS = 24_752_265, 512, 36_601, 6
"""The conditional model of the visualization seed (seeds/003) as it describes itself, for comparison only."""


def _gb(n: float) -> str:
    return f"{n / 2**30:,.3f} GiB"


def _mb(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _g(n: float) -> str:
    return f"{n / 1e9:,.3f} GFLOP"


def _components_table(a: Analysis) -> list[tuple[str, str, int, int]]:
    """(group, label, instances, parameters of all instances) in tree order."""
    out = []
    for group, members in a.parts.groups:
        for label, names in a.collapsed(members):
            out.append((group, label, len(names), a.component_params(names)))
        if group in a.parts.own:
            out.append((group, f"{group} (own parameters)", 1, a.parts.own[group]))
    return out


def config_json(a: Analysis) -> dict:
    return {"name": a.name, "model_class": type(a.model).__name__, "config": a.config, "parameters": a.parameters,
            "size_bytes_fp32": 4 * a.parameters, "conditioning_inputs": a.conditioning,
            "components": [{"group": g, "component": c, "instances": n, "parameters": p} for g, c, n, p in _components_table(a)],
            **a.extra}


def config_text(a: Analysis) -> str:
    cfg = a.config
    lines = [f"Model: {a.name} ({type(a.model).__name__})", "=" * 60,
             f"Parameters: {a.parameters:,}", f"Size: {_mb(4 * a.parameters)} (fp32), {_mb(2 * a.parameters)} (bf16)",
             f"Sequence: {a.n_genes:,} gene positions, value vocabulary {a.n_tokens} tokens + mask token "
             f"(id {cfg.get('mask_id', a.n_tokens)})",
             f"Conditioning inputs: {', '.join(a.conditioning) or 'none (unconditional; the timestep modulates every block)'}",
             "", "Configuration:"]

    def walk(d: dict, indent: int) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                lines.append(" " * indent + f"{k}:")
                walk(v, indent + 2)
            else:
                lines.append(" " * indent + f"{k}: {v}")

    walk(cfg, 2)
    lines += ["", "Components (tree order; parameters of all instances):"]
    for group, label, n, p in _components_table(a):
        lines.append(f"  {label:<38} x{n:<3} {p:>14,}")
    for key, value in a.extra.items():
        lines += ["", f"{key}:"]
        if isinstance(value, dict):
            walk(value, 2)
        else:
            lines.append(f"  {value}")
    return "\n".join(lines) + "\n"


def parameter_text(a: Analysis) -> str:
    total = a.parameters
    lines = [f"Parameter breakdown: {a.name} ({type(a.model).__name__})", "=" * 72,
             f"Total: {total:,} parameters ({_mb(4 * total)} fp32)", "", "By component (tree order):",
             f"  {'component':<40}{'instances':>9}{'parameters':>15}{'share':>8}"]
    table = _components_table(a)
    for group, label, n, p in table:
        lines.append(f"  {label:<40}{n:>9}{p:>15,}{p / total:>8.1%}")
    lines.append(f"  {'sum':<40}{'':>9}{sum(p for *_, p in table):>15,}")
    lines += ["", "Module tree (every module to depth 3; 'own' = held directly, not by a child):",
              f"  {'module':<48}{'type':<22}{'parameters':>14}{'own':>12}"]
    for row in a.rows:
        if row.depth <= 3:
            name = ("  " * row.depth) + (row.name.rsplit(".", 1)[-1] if row.name else "(model)")
            lines.append(f"  {name:<48}{row.kind:<22}{row.params:>14,}{row.own:>12,}")
    by_kind: dict[str, int] = {}
    for row in a.rows:
        if row.own:
            by_kind[row.kind] = by_kind.get(row.kind, 0) + row.own
    lines += ["", "By layer type (parameters held directly):"]
    for kind, n in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {kind:<24}{n:>15,}{n / total:>8.1%}")
    lines += ["", *seed_comparison(a)]
    return "\n".join(lines) + "\n"


def seed_comparison(a: Analysis) -> list[str]:
    """Where this model's count differs from the seed's 24,752,265 (the largest pieces, from the tree)."""
    rows = sorted((r for r in a.rows if r.own), key=lambda r: -r.own)
    biggest = rows[0]
    lines = ["Compared with the seed's conditional model (24,752,265 parameters; 512-d, 6 layers, 36,601-gene vocabulary):",
             f"  this model: {a.parameters:,} ({a.parameters - SEED_PARAMETERS:+,}; {a.parameters / SEED_PARAMETERS:.2f}x)",
             f"  largest single module: {biggest.name} ({biggest.kind}) {biggest.own:,} "
             f"({biggest.own / a.parameters:.1%} of ours, {biggest.own / SEED_PARAMETERS:.1%} of the seed's total)"]
    repeated = []
    for _, members in a.parts.groups:
        for label, names in a.collapsed(members):
            if len(names) > 1:
                first = names[0]
                inner = [(r.name[len(first) + 1:], r.params) for r in a.rows
                         if r.name.startswith(first + ".") and r.depth == first.count(".") + 2]
                repeated.append((label, len(names), a.component_params(names[:1]), inner))
                lines.append(f"  {label}: {len(names)} x {repeated[-1][2]:,} = {len(names) * repeated[-1][2]:,} "
                             f"({', '.join(f'{k} {v:,}' for k, v in inner)})")
    vocab = a.config.get("gene_vocab")
    dim = find_value(a.config, "dim")
    embedding = next((r for r in rows if vocab and r.kind == "Embedding" and r.own == (vocab + 1) * (dim or 0)), None)
    if embedding is not None:
        seed_embedding = (SEED_VOCAB + 1) * SEED_DIM
        left = SEED_PARAMETERS - seed_embedding
        trunk = max(repeated, key=lambda r: r[1] * r[2]) if repeated else None
        lines.append(f"  the seed's {SEED_VOCAB:,}-gene target embedding at {SEED_DIM} dimensions (+1 'none' row) is "
                     f"{seed_embedding:,}, leaving {left:,} of its count for everything else")
        if trunk is not None and dim == SEED_DIM:
            label, n, each, inner = trunk
            lines.append(f"  our {n} {label} blocks alone are {n * each:,} ({n * each / max(left, 1):.1f}x what is left)")
        lines += ["  So the seed cannot have had both a 512-d embedding of the full vocabulary and six blocks like ours",
                  "  (adaLN modulation, self- and cross-attention, a 4x MLP): it must have used a smaller target-gene",
                  "  embedding or lighter blocks. The preset `conditional-seed` keeps the vocabulary and our block design",
                  "  and narrows the model (384 wide, 3 layers, control set pooled without self-attention blocks):",
                  "  `python -m scmodel.viz --config conditional-seed` shows its breakdown."]
    return lines


def compute_text(a: Analysis) -> str:
    f = a.flops
    cells = a.batch
    lines = [f"Computational analysis: {a.name} ({type(a.model).__name__})", "=" * 72,
             f"Measured with torch.utils.flop_counter.FlopCounterMode on one training step: {a.batch} cell(s) x "
             f"{a.genes:,} gene positions"
             + (f", {a.control_cells} control cells per set" if "control" in a.conditioning else "")
             + "; attention through the math kernel (the counter does not see the fused CPU kernel).",
             "", f"Forward FLOPs:  {f.forward:,}", f"Backward FLOPs: {f.backward:,}", f"Total FLOPs:    {f.total:,}",
             f"Per cell: forward {_g(f.forward / cells)}, forward+backward {_g(f.total / cells)}",
             f"Per parameter per gene position (forward): {f.forward / cells / a.genes / a.parameters:.2f}",
             "", "By component, forward FLOPs (all instances; the counter counts matrix products and attention, so",
             "embeddings, norms and activations count 0). Backward FLOPs are given as totals only: the counter's",
             "split of the backward pass between modules counts a block's backward under the blocks before it.",
             f"  {'component':<36}{'forward':>20}{'share':>8}"]
    for group, members in a.parts.groups:
        for label, names in a.collapsed(members):
            fw, _ = a.component_flops(names)
            lines.append(f"  {label:<36}{fw:>20,}{fw / max(f.forward, 1):>8.1%}")
    lines += ["", "By operator (forward / backward):"]
    for op, (fw, bw) in sorted(f.by_op.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"  {op:<36}{fw:>20,}{bw:>20,}")
    lines += ["", "Scaling (meta device, same counter; forward+backward FLOPs; fp32 activations saved for backward with",
              "the math attention kernel, which keeps every head's L x L probabilities):",
              f"  {'batch':>6}{'genes':>8}{'GFLOP':>14}{'activations':>16}"]
    if "sweeps" in a.extra:
        lines.append(f"  {a.extra['sweeps']}")
    for p in a.sweep_genes + a.sweep_batch:
        lines.append(f"  {p.batch:>6}{p.genes:>8}{(p.flops_forward + p.flops_backward) / 1e9:>14,.2f}{_mb(p.activation_bytes):>16}")
    lines += ["", f"Training memory for this step ({a.batch} x {a.genes:,}; AdamW, weights/gradients/moments in fp32;",
              " bf16 = autocast as train.py uses it, which also holds bf16 copies of the weights; activations measured",
              " on this machine's kernels: 'fused' = PyTorch's default attention kernel here, no L x L tensor kept):"]
    for precision, parts in a.memory.items():
        detail = ", ".join(f"{k} {_mb(v)}" for k, v in parts.items() if k != "total")
        lines.append(f"  {precision}: {_gb(parts['total'])} ({detail})")
    return "\n".join(lines) + "\n"


def write_text_files(a: Analysis, out: str) -> list[str]:
    paths = []
    for name, text in (("model_config.txt", config_text(a)), ("parameter_breakdown.txt", parameter_text(a)),
                       ("computational_analysis.txt", compute_text(a))):
        paths.append(os.path.join(out, name))
        with open(paths[-1], "w") as fh:
            fh.write(text)
    paths.append(os.path.join(out, "model_config.json"))
    with open(paths[-1], "w") as fh:
        json.dump(config_json(a), fh, indent=2)
    return paths
