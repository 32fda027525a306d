"""``scdata info``: the seed's config.json fields, computed from the store's manifest."""

from __future__ import annotations

from dataclasses import asdict

from .manifest import open_committed
from .manifest import rejection_kind
from .layout import layout_of, store_nbytes


def store_info(store: str) -> dict:
    """Summary of a store with the seed's ``config.json`` keys plus storage figures."""
    root, manifest = open_committed(store)
    n_cells, n_genes = manifest.n_committed, manifest.n_genes
    nbytes = store_nbytes(store)
    requested = max((r.get("cell_count", 0) for r in manifest.runs), default=0)
    return {
        "store": store,
        "manifest_version": manifest.version,
        "total_cells_requested": requested,
        "total_cells_downloaded": n_cells,
        "total_samples": len(manifest.experiments),
        "download_timestamp": manifest.runs[-1].get("finished", manifest.runs[-1]["started"]) if manifest.runs else None,
        "n_genes": n_genes,
        "gene_list": [str(g) for g in root["var/_index"][:]],
        "max_expression_value": manifest.max_value,
        "sparsity": 1.0 - manifest.nnz / (n_cells * n_genes) if n_cells and n_genes else None,
        "saturated_values": sum(e["counters"]["n_saturated"] for e in manifest.experiments),
        "rounded_values": sum(e["counters"]["n_fractional"] for e in manifest.experiments),
        "bytes_on_disk": nbytes,
        "bytes_per_cell": nbytes / n_cells if n_cells else None,
        "chunk_shape": list(root["X"].chunks),
        "layout": asdict(layout_of(root)),
        "samples": [
            {"srx_accession": e["accession"], "file_path": e["source_url"], "obs_count": e["n_cells"],
             "rows": [e["row_start"], e["row_stop"]], "counters": e["counters"],
             **{k: e.get("metadata", {}).get(k) for k in ("tissue", "tech_10x", "cell_prep", "disease", "perturbation")}}
            for e in manifest.experiments
        ],
        "rejected": manifest.rejected,
        **_perturbation_summary(root, manifest),
    }


def _perturbation_summary(root, manifest) -> dict:
    """For a perturbation store (``scdata vcc import``): its labels and the gene mapping."""
    if root.attrs.asdict().get("sczarr", {}).get("kind") != "perturbation" or not manifest.n_committed:
        return {}
    n = manifest.n_committed
    attrs = root["uns/perturbation"].attrs.asdict()
    controls = int(root["obs/is_control"][:n].sum())
    return {"perturbation": {"control_label": attrs["control_label"], "sign": attrs["sign"],
                             "perturbations": len(attrs["target_positions"]) - 1, "control_cells": controls,
                             "targets_not_on_axis": attrs["unplaced_targets"], "gene_mapping": attrs["gene_mapping"]}}


def _codec(layout: dict) -> str:
    blocks = layout["blocksize"]
    size = f"{blocks // 1024} KiB blocks" if blocks else "automatic blocks"
    return f"{layout['cname']}-{layout['clevel']} {layout['shuffle']}, {size}"


def format_info(info: dict) -> str:
    """Human-readable summary (the JSON form has every field)."""
    lines = [
        f"store:            {info['store']} (manifest v{info['manifest_version']})",
        f"cells:            {info['total_cells_downloaded']:,} committed ({info['total_cells_requested']:,} requested)",
        f"experiments:      {info['total_samples']} committed, {len(info['rejected'])} rejected",
        f"genes:            {info['n_genes']:,}",
        f"chunk shape:      {tuple(info['chunk_shape'])} {_codec(info['layout'])}",
        f"max expression:   {info['max_expression_value']:g} ({info['saturated_values']} values saturated at 32767, "
        f"{info['rounded_values']} rounded)",
    ]
    if info["sparsity"] is not None:
        lines.append(f"sparsity:         {info['sparsity']:.2%} zeros")
    lines.append(f"bytes on disk:    {info['bytes_on_disk']:,}")
    if info["bytes_per_cell"]:
        lines.append(f"bytes per cell:   {info['bytes_per_cell']:,.0f}")
    if "perturbation" in info:
        p = info["perturbation"]
        m = p["gene_mapping"]
        lines.append(f"perturbations:    {p['perturbations']} ({p['control_cells']:,} control cells, label {p['control_label']!r}, "
                     f"sign {p['sign']:+d}); {len(p['targets_not_on_axis'])} targets not on the axis")
        lines.append(f"source genes:     {m['mapped']:,} on the axis ({m['by_ensembl_id']:,} by Ensembl ID, {m['by_symbol']:,} by "
                     f"symbol), {m['unmapped']} unmapped, {m['ambiguous']} ambiguous, {m['duplicated']} duplicated")
    for r in info["rejected"]:
        lines.append(f"rejected:         {r['accession']} ({rejection_kind(r)}): {r['reason']}")
    return "\n".join(lines)
