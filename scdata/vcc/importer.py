"""``scdata vcc import``: perturbation data (Virtual Cell Challenge layout) into a store.

The result has the store contract (cells x the pretraining gene axis, int16 counts, chunked,
manifest, crash-safe) so every reader, the statistics and the training loader work on it, plus
per-cell ``target_gene``, ``guide_id``, ``batch`` (categoricals), ``is_control`` and
``target_gene_index`` (the target's position on the gene axis, -1 for controls), and in
``uns/perturbation`` the source's own gene table (symbols in the file's order, their Ensembl IDs
and axis positions) so a prediction can be written back in the challenge's gene order.

The file is cut into blocks of whole chunk rows, in the file's order; one Dask task per block
reads its rows (CSR slices, nothing else), maps the genes and writes its chunks, which no other
block touches. Blocks commit in order: obs rows, then the manifest. A killed import leaves at
most scratch rows past the last commit; the rerun truncates them and continues.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..runtime import remote
from ..store.chunks import ChunkWriter
from ..runtime.cluster import ClusterConfig, dask_client, recomputable
from ..store.int16_counts import CountsError, to_store_counts
from .gene_map import GeneMapping, map_genes, map_targets
from ..source.h5ad import frame_column
from ..store.writer import StoreWriter
from ..store.manifest import Manifest, read_manifest, write_manifest
from ..store.layout import (
    ARRAY_ATTRS, DICT_ATTRS, StoreLayout, _string_array, create_store, gene_axis_digest, open_array, open_root,
    read_strings, scratch_view, truncate,
)

KIND = "perturbation"
NUMERIC_COLUMNS = {"is_control": "bool", "target_gene_index": "int32"}
CATEGORICAL_COLUMNS = ("target_gene", "guide_id", "batch")


class VCCImportError(ValueError):
    """The perturbation file cannot be imported; the message names the file and what is wrong."""

    def __init__(self, message: str):
        super().__init__(remote.redact(message))  # the file's URL may carry credentials


@dataclass(frozen=True, kw_only=True)
class VCCImportConfig:
    input: str
    """``adata_Training.h5ad``: a local path, ``gs://`` or any fsspec URL."""
    store: str
    genes_from: str | None = None
    """The scBaseCount store the model was pretrained on: its gene axis (and HVGs) are used."""
    gene_source: str | None = None
    """Without ``genes_from``: a release root whose h5ad gene table is the axis."""
    control_label: str = "non-targeting"
    target_column: str = "target_gene"
    guide_column: str = "guide_id"
    batch_column: str = "batch"
    sign: int = -1
    """Direction of every perturbation in the file: -1 knockdown (CRISPRi), +1 activation."""
    name: str | None = None
    """The dataset's name in ``srx_accession`` (default: the file's name without extension)."""
    block_chunks: int = 4
    """Chunk rows per block (one task and one commit each): 4,096 cells by default, so a file of a
    few tens of thousands of cells already keeps every worker busy."""
    layout: StoreLayout = field(default_factory=StoreLayout)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    hvg_output_dir: str | None = None
    """Where the import's ``hvg_info.json`` goes (default: beside the store)."""

    def __post_init__(self) -> None:
        if self.sign not in (-1, 1):
            raise ValueError(f"sign must be -1 (knockdown) or +1 (activation), got {self.sign}")
        if self.block_chunks <= 0:
            raise ValueError("block_chunks must be positive")

    @property
    def dataset(self) -> str:
        return self.name or os.path.splitext(os.path.basename(self.input.rstrip("/")))[0]


@dataclass(frozen=True, slots=True)
class SourceTable:
    """What the driver reads from the file before anything is written."""

    n_cells: int
    symbols: np.ndarray
    gene_ids: np.ndarray | None
    barcodes: np.ndarray
    obs: pd.DataFrame
    file_size: int


def _open(url: str) -> h5py.File:
    try:
        if remote.is_local(url):
            path = remote.local_path(url)
            if not os.path.exists(path):
                raise VCCImportError(f"{url}: no such file")
            return h5py.File(path, "r")
        fs, path = remote.url_to_fs(url)
        if not fs.exists(path):
            raise VCCImportError(f"{url}: no such object")
        return h5py.File(fs.open(path, "rb", block_size=1 << 22), "r")
    except (OSError, ValueError) as exc:
        if isinstance(exc, VCCImportError):
            raise
        raise VCCImportError(f"{url}: not a readable h5ad/HDF5 file (truncated or corrupt?): {exc}") from exc


def _column(f: h5py.File, name: str, url: str, what: str) -> np.ndarray:
    obs = f["obs"]
    if name not in obs:
        columns = [c for c in obs.attrs.get("column-order", list(obs))]
        raise VCCImportError(f"{url}: obs has no {name!r} column ({what}); its columns are {list(columns)}")
    try:
        return frame_column(obs, name, "vcc", url).astype(str)
    except Exception as exc:
        raise VCCImportError(f"{url}: cannot read obs column {name!r}: {exc}") from exc


def read_source_table(config: VCCImportConfig) -> SourceTable:
    """The file's genes and per-cell labels, validated: the errors a user can fix before writing."""
    url = config.input
    with _open(url) as f:
        for key in ("X", "obs", "var"):
            if key not in f:
                raise VCCImportError(f"{url}: missing {key!r} (an h5ad has X, obs and var)")
        symbols = frame_column(f["var"], None, "vcc", url).astype(str)
        gene_ids = frame_column(f["var"], "gene_id", "vcc", url).astype(str) if "gene_id" in f["var"] else None
        barcodes = frame_column(f["obs"], None, "vcc", url).astype(str)
        obs = pd.DataFrame({"target_gene": _column(f, config.target_column, url, "the perturbed gene of each cell")})
        for column, name in (("guide_id", config.guide_column), ("batch", config.batch_column)):
            obs[column] = _column(f, name, url, column) if name in f["obs"] else "unknown"
        shape = _x_shape(f["X"], url)
    if shape != (len(barcodes), len(symbols)):
        raise VCCImportError(f"{url}: X has shape {shape} but obs has {len(barcodes)} cells and var {len(symbols)} genes")
    if shape[0] == 0:
        raise VCCImportError(f"{url}: the file has no cells")
    labels = obs["target_gene"]
    if not (labels == config.control_label).any():
        common = labels.value_counts().index[:5].tolist()
        raise VCCImportError(
            f"{url}: no control cells: obs[{config.target_column!r}] has no {config.control_label!r} value "
            f"(most common: {common}); name the control label with --control-label")
    return SourceTable(shape[0], symbols, gene_ids, barcodes, obs, remote.object_size(url))


def _x_shape(node, url: str) -> tuple[int, int]:
    if isinstance(node, h5py.Dataset):
        return tuple(int(v) for v in node.shape)
    if node.attrs.get("encoding-type") != "csr_matrix":
        raise VCCImportError(f"{url}: X is {node.attrs.get('encoding-type')!r}; the import reads CSR or dense X")
    return tuple(int(v) for v in node.attrs["shape"])


def axis_genes(config: VCCImportConfig) -> tuple[np.ndarray, np.ndarray]:
    """Gene IDs and symbols of the axis: the pretraining store's, or a release's gene table."""
    if config.genes_from:
        root = open_root(config.genes_from)
        return read_strings(root["var/_index"]), read_strings(root["var/gene_symbol"])
    if config.gene_source:
        from ..source.bucket import SourceConfig, read_sample_metadata, select_experiments
        from ..source.h5ad import gene_table_task

        source = SourceConfig(config.gene_source)
        table = read_sample_metadata(source)
        experiments = select_experiments(table, source, 1, 42, {})
        gene_table = gene_table_task(experiments[0])
        return gene_table.gene_ids, gene_table.gene_symbols
    raise VCCImportError("name the gene axis: --genes-from STORE (the pretraining store) or --source RELEASE")


# ---- worker side ---------------------------------------------------------------------------------


def import_block_task(url: str, lo: int, hi: int, columns: np.ndarray, n_axis: int, store: str) -> dict:
    """Read rows ``[lo, hi)`` of the file, map them onto the axis and write them at the same rows."""
    with _open(url) as f:
        node = f["X"]
        if isinstance(node, h5py.Dataset):
            block = sp.csr_matrix(node[lo:hi])
        else:
            indptr = np.asarray(node["indptr"][lo : hi + 1], dtype=np.int64)
            a, b = int(indptr[0]), int(indptr[-1])
            block = sp.csr_matrix((node["data"][a:b], node["indices"][a:b], indptr - a),
                                  shape=(hi - lo, int(node.attrs["shape"][1])))
    try:
        counts = to_store_counts(block, columns, n_axis)
    except CountsError as exc:
        raise VCCImportError(f"{url}: rows {lo}-{hi}: {exc}") from exc
    if counts.repairs.n_fractional:
        example = block.data[np.flatnonzero(block.data != np.rint(block.data))[:1]]
        raise VCCImportError(
            f"{url}: X holds non-integer values ({counts.repairs.n_fractional} in rows {lo}-{hi}, e.g. "
            f"{float(example[0]):g}): the import stores raw UMI counts, not normalized or log values")
    # past X's committed shape (the commit grows it), so readers see committed rows only
    writer = ChunkWriter(scratch_view(open_array(store, "X", mode="r+"), hi))
    for start in range(lo, hi, writer.chunk_rows):
        stop = min(start + writer.chunk_rows, hi)
        writer.write_rows(start, counts.matrix[start - lo : stop - lo])
    return {"umi_count": counts.umi_count, "total_counts": counts.total_counts, "gene_count": counts.gene_count,
            "nnz": int(counts.matrix.nnz), "rows_digest": counts.checksum(), "repairs": counts.repairs.as_dict()}


# ---- driver ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class VCCImportReport:
    manifest: Manifest
    mapping: dict
    targets: dict
    blocks_added: int


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _create(config: VCCImportConfig, table: SourceTable, gene_ids, symbols, mapping: GeneMapping,
            positions: dict[str, int], missing_targets: list[str]) -> Manifest:
    attrs = {"kind": KIND, "values": "counts",
             "perturbation": {"input": remote.redact(config.input), "file_size": table.file_size,
                              "control_label": config.control_label,
                              "sign": config.sign, "dataset": config.dataset, "genes_from": config.genes_from}}
    root = create_store(config.store, gene_ids, symbols, list(CATEGORICAL_COLUMNS), config.layout,
                        numeric_columns=NUMERIC_COLUMNS, attrs=attrs)
    group = root["uns"].create_group("perturbation", attributes={
        **DICT_ATTRS, "control_label": config.control_label, "sign": config.sign,
        "target_positions": positions, "unplaced_targets": missing_targets, "gene_mapping": mapping.summary()})
    _string_array(group, "source_genes", table.symbols, max(1, len(table.symbols)), "source_gene")
    if table.gene_ids is not None:
        _string_array(group, "source_gene_ids", table.gene_ids, max(1, len(table.symbols)), "source_gene")
    pos = group.create_array("axis_position", shape=(len(table.symbols),), chunks=(max(1, len(table.symbols)),),
                             dtype="int64", dimension_names=("source_gene",), attributes=ARRAY_ATTRS)
    pos[:] = mapping.columns
    manifest = Manifest(n_genes=len(gene_ids), gene_axis_digest=gene_axis_digest(np.asarray(gene_ids)))
    write_manifest(config.store, manifest)
    return manifest


def _obs_frame(config: VCCImportConfig, table: SourceTable, positions: dict[str, int], lo: int, hi: int,
               result: dict) -> pd.DataFrame:
    obs = table.obs.iloc[lo:hi]
    target = obs["target_gene"].to_numpy()
    return pd.DataFrame({
        "_index": table.barcodes[lo:hi], "barcode": table.barcodes[lo:hi], "srx_accession": config.dataset,
        "umi_count": result["umi_count"], "total_counts": result["total_counts"], "gene_count": result["gene_count"],
        "is_control": target == config.control_label,
        "target_gene_index": np.asarray([positions.get(t, -1) for t in target], dtype=np.int32),
        "target_gene": target, "guide_id": obs["guide_id"].to_numpy(), "batch": obs["batch"].to_numpy(),
    })


def _commit(config, manifest: Manifest, writer: StoreWriter, table, positions, k: int, lo: int, hi: int,
            result: dict) -> None:
    manifest.categories = writer.write_obs_rows(lo, _obs_frame(config, table, positions, lo, hi, result))
    writer.grow_rows(hi)
    manifest.experiments.append({
        "accession": f"{config.dataset}/{k:05d}", "row_start": lo, "row_stop": hi, "n_cells": hi - lo,
        "source_url": config.input, "kind": KIND, "source_rows": [lo, hi], "file_size": table.file_size,
        "rows_digest": result["rows_digest"], "nnz": result["nnz"], "counters": result["repairs"], "committed_at": _now()})
    manifest.nnz += result["nnz"]
    manifest.max_value = max(manifest.max_value, result["repairs"]["max_value"])
    manifest.n_committed = hi
    manifest.version += 1
    write_manifest(config.store, manifest, writer)


def _check_resumable(config: VCCImportConfig, table: SourceTable, gene_ids) -> None:
    attrs = open_root(config.store).attrs.asdict().get("sczarr", {})
    recorded = attrs.get("perturbation")
    if attrs.get("kind") != KIND or recorded is None:
        raise VCCImportError(f"{config.store} is a store but not a perturbation import; choose another --store")
    same_input = recorded["input"] in (remote.redact(config.input), config.input)  # stores from before redaction
    if not same_input or recorded["file_size"] != table.file_size:
        raise VCCImportError(f"{config.store} was imported from {recorded['input']} ({recorded['file_size']:,} bytes), "
                             f"not {config.input} ({table.file_size:,} bytes); choose another --store")
    if attrs.get("gene_axis_digest") != gene_axis_digest(np.asarray(gene_ids)):
        raise VCCImportError(f"{config.store} has another gene axis than {config.genes_from or config.gene_source}")


def import_vcc(config: VCCImportConfig, echo=print) -> VCCImportReport:
    """Import (or resume importing) the file; then the target effects and the HVG matrix."""
    echo = remote.redacting(echo)
    table = read_source_table(config)
    gene_ids, symbols = axis_genes(config)
    mapping = map_genes(table.gene_ids, table.symbols, gene_ids, symbols)
    if mapping.n_mapped == 0:
        raise VCCImportError(f"{config.input}: none of its {len(table.symbols):,} genes is on the axis of "
                             f"{config.genes_from or config.gene_source} (by Ensembl ID or symbol)")
    targets = table.obs["target_gene"].unique()
    positions, missing = map_targets(targets, config.control_label, table.symbols, mapping)
    for target in missing:  # a target outside the file's own genes may still be on the axis by symbol
        hits = np.flatnonzero(np.char.upper(symbols.astype(str)) == target.upper())
        if len(hits) == 1:
            positions[target] = int(hits[0])
    missing = [t for t in missing if t not in positions]
    summary = mapping.summary()
    echo(f"{config.input}: {table.n_cells:,} cells x {len(table.symbols):,} genes; {summary['mapped']:,} genes on the axis "
         f"({summary['by_ensembl_id']:,} by Ensembl ID, {summary['by_symbol']:,} by symbol), {summary['unmapped']} unmapped, "
         f"{summary['ambiguous']} ambiguous, {summary['duplicated']} duplicated; {len(targets) - 1} perturbations, "
         f"{len(missing)} targets not on the axis{': ' + ', '.join(missing[:5]) if missing else ''}")
    manifest = read_manifest(config.store)
    if manifest is None:
        manifest = _create(config, table, gene_ids, symbols, mapping, positions, missing)
    else:
        _check_resumable(config, table, gene_ids)
    root = open_root(config.store, mode="r+")
    truncate(root, manifest.n_committed, manifest.categories)
    block = config.layout.chunk_cells * config.block_chunks if manifest.n_committed == 0 else \
        root["X"].chunks[0] * config.block_chunks
    bounds = [(lo, min(lo + block, table.n_cells)) for lo in range(manifest.n_committed, table.n_cells, block)]
    if manifest.n_committed:
        echo(f"Resuming at cell {manifest.n_committed:,}: {len(bounds)} blocks to go")
    first = len(manifest.experiments)
    writer = StoreWriter(config.store)
    with dask_client(config.cluster, echo=echo) as client:
        columns = recomputable(client, mapping.columns)
        futures = [client.submit(import_block_task, config.input, lo, hi, columns, len(gene_ids), config.store,
                                 pure=False) for lo, hi in bounds]
        try:
            for k, ((lo, hi), future) in enumerate(zip(bounds, futures), start=first):
                _commit(config, manifest, writer, table, positions, k, lo, hi, future.result())
                future.release()
        finally:
            for future in futures:
                future.cancel()
        echo(f"Committed {manifest.n_committed:,} cells in {config.store} ({len(bounds)} blocks this run)")
        from .effects import target_effects

        effects = target_effects(config.store)
        echo(f"Target knockdown (median log2 fold change vs same-batch controls): {np.nanmedian(effects['log2fc']):.2f} "
             f"over {effects['target_gene'].nunique()} targets")
        if config.genes_from:
            _materialize_hvgs(config, positions, table, mapping, client, echo)
    return VCCImportReport(manifest, summary, {"placed": len(positions) - 1, "missing": missing}, len(bounds))


def _materialize_hvgs(config: VCCImportConfig, positions, table: SourceTable, mapping: GeneMapping, client,
                      echo) -> None:
    """The pretraining store's HVGs as ``obsm/X_hvg``, taken from the store itself (its var columns'
    selection, checked against its manifest); ``hvg_info.json`` gains ``gene_name_to_hvg_idx`` (the
    file's gene names -> HVG rank), as the seed's ``--process-vcc`` did."""
    from ..hvg.results import load_hvg, materialize, previous_info, write_json
    from ..store.layout import open_root, read_strings

    info_dir = config.hvg_output_dir or (os.path.dirname(os.path.abspath(remote.local_path(config.genes_from)))
                                         if remote.is_local(config.genes_from) else None)
    info_path = os.path.join(info_dir, "hvg_info.json") if info_dir else None
    pretrained = previous_info(info_path) if info_path else None
    try:
        selection = load_hvg(config.genes_from)
    except FileNotFoundError:  # a store whose selection predates var columns: its hvg_info.json, if found
        if pretrained is None or "hvg_indices" not in pretrained:
            echo(f"{config.genes_from} has no HVG selection: obsm/X_hvg not written (run `scdata hvg --store "
                 f"{config.genes_from}` first)")
            return
        selection = {"hvg_indices": pretrained["hvg_indices"], "params": {}}
    order = np.asarray(selection["hvg_indices"], dtype=np.int64)
    if pretrained is None or [int(i) for i in pretrained.get("hvg_indices", [])] != order.tolist():
        var = open_root(config.genes_from)["var"]
        ids, symbols = read_strings(var["_index"]), read_strings(var["gene_symbol"])
        pretrained = {"hvg_indices": order.tolist(), "hvg_names": [str(symbols[i]) for i in order],
                      "gene_to_hvg_idx": {str(ids[i]): k for k, i in enumerate(order)}, "total_genes": len(ids),
                      "params": selection.get("params", {}), "source_store": config.genes_from}
    manifest = read_manifest(config.store)
    materialize(config.store, order, manifest.version, client=client)
    rank = {int(p): k for k, p in enumerate(order)}
    by_name = {str(s): rank[int(c)] for s, c in zip(table.symbols, mapping.columns) if c >= 0 and int(c) in rank}
    by_id = {}
    if table.gene_ids is not None:
        by_id = {str(g): rank[int(c)] for g, c in zip(table.gene_ids, mapping.columns) if c >= 0 and int(c) in rank}
    pretrained.update({"gene_name_to_hvg_idx": by_name, "gene_id_to_hvg_idx": by_id,
                       "perturbation_store": {"store": config.store, "input": config.input,
                                              "control_label": config.control_label,
                                              "targets_on_hvgs": sorted(t for t, p in positions.items() if p in rank)}})
    if info_path is None:
        echo(f"obsm/X_hvg: the {len(order):,} HVGs of {config.genes_from} ({len(by_name):,} of them in the file); "
             f"hvg_info.json not written ({config.genes_from} is remote: pass --output-dir for it)")
        return
    write_json(info_path, pretrained)
    echo(f"obsm/X_hvg: the {len(order):,} HVGs of {config.genes_from} ({len(by_name):,} of them in the file); "
         f"{info_path} gained gene_name_to_hvg_idx")
