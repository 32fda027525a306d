"""Per-gene statistics of a store in one Dask pass: chunk / combine / aggregate, tree-reduced.

A fixed number of tasks per worker thread each read a contiguous run of chunk rows of X (all
genes of ``chunk_cells`` cells at a time) and merge what they read into one partial: moments of
the raw counts, of normalize_total(target_sum) values and of their log1p (the three scales the
HVG flavors use), non-zero counts, maxima, and the same moments per batch (experiment, or any
categorical obs column) when asked. Partials merge with Chan's formula (``moments``), so memory
depends on genes and batches, never on cells. Per-batch moments are kept only on the scales
asked for (``batch_scales``). Seurat v3's clipped sums come from the largest counts kept per gene
(``top_counts``) or, per batch, from a second pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..store.chunks import ChunkReader
from ..store.manifest import open_committed
from .moments import Moments, merge_moments, variance
from .moments import mean as mean_of
from .nonzeros import gene_nonzeros
from .kernels import clipped_gene_sums, gene_moments
from ..store.layout import categorical_columns, open_root, read_categories, read_strings

SCALES = ("counts", "normalized", "log1p")


@dataclass(frozen=True, kw_only=True)
class StatsConfig:
    """What one statistics pass computes."""

    target_sum: float = 1e4
    """normalize_total's target: every cell scaled to this many counts (scanpy's 1e4)."""
    batch_key: str | None = None
    """A categorical obs column (e.g. ``srx_accession``): moments per category as well."""
    split_every: int = 8
    """Fan-in of the tree reduction."""
    tasks_per_thread: int = 4
    """Leaf tasks per worker thread, each reading a contiguous run of chunk rows and merging
    them as it goes: a fixed number of partials (a few MB each) exist at once, however many
    cells the store holds, and the threads still finish together."""
    batch_scales: tuple[str, ...] = SCALES
    """Scales with per-batch moments (each costs batches x genes x 2 float64 in every partial)."""
    per_batch: bool = True
    """False: keep only the between-batch sum of squares on ``batch_scales`` (what the batch-effect
    panel shows). A batch's sums are folded into it once all its cells are seen (experiments are
    contiguous in the store), so memory no longer grows with the number of batches."""
    top_counts: int = 0
    """Per gene, keep this many of the largest counts (int16; 0: none). Seurat v3 clips counts at
    a cut-off known only after this pass; with the few counts above it at hand, it needs no
    second pass over X."""

    def __post_init__(self) -> None:
        if self.top_counts < 0:
            raise ValueError(f"top_counts must be >= 0, got {self.top_counts}")
        unknown = set(self.batch_scales) - set(SCALES)
        if unknown or not self.batch_scales:
            raise ValueError(f"batch_scales must be a non-empty subset of {SCALES}, got {self.batch_scales}")
        if self.target_sum <= 0:
            raise ValueError(f"target_sum must be positive, got {self.target_sum}")
        if self.split_every < 2:
            raise ValueError(f"split_every must be at least 2, got {self.split_every}")
        if self.tasks_per_thread < 1:
            raise ValueError(f"tasks_per_thread must be at least 1, got {self.tasks_per_thread}")


@dataclass(slots=True)
class GeneStats:
    """Aggregated statistics of the committed cells of one manifest version."""

    manifest_version: int
    n_cells: int
    gene_ids: np.ndarray
    target_sum: float
    moments: dict[str, Moments]
    n_cells_expressed: np.ndarray
    max_count: np.ndarray
    cell_totals: np.ndarray
    """Each cell's total count (``obs/total_counts``, the stored row's sum: normalize_total's divisor)."""
    batch_key: str | None = None
    batches: list[str] = field(default_factory=list)
    batch_moments: list[dict[str, Moments]] = field(default_factory=list)
    batch_expressed: list[np.ndarray] = field(default_factory=list)
    between_batch_ss: dict[str, np.ndarray] = field(default_factory=dict)
    """Per scale, sum over batches of n_b * (batch mean - mean)**2 (``per_batch`` or not)."""
    count_squares: np.ndarray | None = None
    """Per gene, the sum of squared counts (exact in float64 below 2**53)."""
    top_counts: np.ndarray | None = None
    """(genes, M) int16: per gene its M largest counts, unordered, 0 filling unused slots."""

    def mean(self, scale: str = "counts") -> np.ndarray:
        return mean_of(self.moments[scale])

    def var(self, scale: str = "counts", ddof: int = 1) -> np.ndarray:
        return variance(self.moments[scale], ddof)

    def dispersion(self, unexpressed: float = 0.0) -> np.ndarray:
        """The seed's dispersion: variance / mean of raw counts (``unexpressed`` where the mean is 0)."""
        mean, var = self.mean("counts"), self.var("counts")
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(mean > 0, var / mean, unexpressed)

    def pct_cells(self) -> np.ndarray:
        """Per gene, the % of cells with a non-zero count."""
        return 100.0 * self.n_cells_expressed / max(self.n_cells, 1)

    def require_batch_scale(self, scale: str) -> None:
        """Fail clearly when per-batch moments on ``scale`` were not computed."""
        if not self.batch_moments:
            raise ValueError("these statistics have no per-batch moments: compute them with a batch_key and "
                             "StatsConfig(per_batch=True)")
        if scale not in self.batch_moments[0]:
            raise ValueError(f"these statistics have per-batch moments on {sorted(self.batch_moments[0])} only, not "
                             f"{scale!r}: compute them with StatsConfig(batch_scales=...) including {scale!r}")


@dataclass(slots=True)
class _TaskInputs:
    """What a task's chunk rows are read from, opened once per task; the per-cell columns are
    read once for all its rows (one read instead of one per chunk row)."""

    reader: ChunkReader
    offset: int
    """First row of the task: ``totals[i]``/``codes[i]`` belong to row ``offset + i``."""
    totals: np.ndarray | None
    """obs/total_counts: each cell's stored-row total, what normalize_total divides by (None
    for the clipped-sums pass, which works on raw counts)."""
    codes: np.ndarray | None
    """The batch key's category codes (None without a batch key)."""

    def rows(self, column: np.ndarray, start: int, stop: int) -> np.ndarray:
        return column[start - self.offset : stop - self.offset]


def _open_for_task(store: str, batch_key: str | None, ranges: list[tuple[int, int]], totals: bool = True) -> _TaskInputs:
    root = open_root(store, mode="r")
    lo, hi = ranges[0][0], ranges[-1][1]  # a task's chunk rows are contiguous
    totals = np.asarray(root["obs/total_counts"][lo:hi], dtype=np.float64) if totals else None
    codes = np.asarray(root[f"obs/{batch_key}/codes"][lo:hi]) if batch_key else None
    return _TaskInputs(ChunkReader(root["X"]), lo, totals, codes)


def stats_task(store: str, ranges: list[tuple[int, int]], target_sum: float, batch_key: str | None,
               batch_scales: tuple[str, ...] = SCALES, top_counts: int = 0, batch_sizes: np.ndarray | None = None) -> dict:
    """One task's partial over several chunk rows, merged where they are read: fewer, larger
    tasks send fewer partials (megabytes each) between worker processes. One top-counts heap
    per task collects the largest counts of all its rows."""
    inputs = _open_for_task(store, batch_key, ranges)
    top = np.zeros((inputs.reader.array.shape[1], top_counts), dtype=np.int16)
    partial = None
    for lo, hi in ranges:  # merged as read: one chunk row's partial exists beside the running one
        part = stats_chunk(inputs, lo, hi, target_sum, batch_scales, top, per_batch=batch_sizes is None)
        partial = part if partial is None else stats_combine(partial, part, batch_sizes=batch_sizes)
    return {**partial, "top": top} if top_counts else partial


def clipped_task(store: str, ranges: list[tuple[int, int]], batch_key: str | None, clips: dict[int, np.ndarray],
                 gene_chunks: list[int] | None = None) -> dict:
    inputs = _open_for_task(store, batch_key, ranges, totals=False)
    total: dict = {}
    for lo, hi in ranges:
        total = clipped_combine(total, clipped_chunk(inputs, lo, hi, clips, gene_chunks))
    return total


def _split(blocks: list[tuple[int, int]], n_tasks: int) -> list[list[tuple[int, int]]]:
    """``blocks`` in at most ``n_tasks`` contiguous runs of near-equal length."""
    bounds = np.linspace(0, len(blocks), min(n_tasks, len(blocks)) + 1).round().astype(int)
    return [blocks[a:b] for a, b in zip(bounds, bounds[1:])]


def _threads(client) -> int:
    """Worker threads the passes can use: the cluster's, or this machine's cores."""
    if client is None:
        return os.cpu_count() or 1
    return max(1, sum(client.nthreads().values()))


def stats_chunk(inputs: _TaskInputs, start: int, stop: int, target_sum: float,
                batch_scales: tuple[str, ...] = SCALES, top: np.ndarray | None = None, per_batch: bool = True) -> dict:
    """Partial for rows ``[start, stop)``: one chunk row of X, per batch when ``inputs.codes`` is
    set (per-batch moments on ``batch_scales``).

    Each gene chunk's non-zeros are read once (``nonzeros.gene_nonzeros``);
    ``stat_kernels.gene_moments`` gives every group's moments on the three scales (normalize_total
    divides by the cells' stored totals, ``obs/total_counts``). ``top`` (genes, M), when given, is updated
    with the rows' largest counts.
    """
    reader, batch_codes = inputs.reader, inputs.codes
    n, n_genes = stop - start, reader.array.shape[1]
    totals = inputs.rows(inputs.totals, start, stop)
    codes = inputs.rows(batch_codes, start, stop) if batch_codes is not None else np.zeros(n, dtype=np.int32)
    present, group = np.unique(codes, return_inverse=True)
    group_n = np.bincount(group, minlength=len(present)).astype(np.float64)
    sums = np.zeros((len(SCALES), len(present), n_genes))
    m2 = np.zeros_like(sums)
    nnz = np.zeros((len(present), n_genes), dtype=np.int64)
    squares = np.zeros((len(present), n_genes))
    max_count = np.zeros(n_genes, dtype=np.int64)
    top = np.zeros((n_genes, 0), dtype=np.int16) if top is None else top
    divisor = totals / target_sum  # scanpy: x / (total / target_sum)
    group = group.astype(np.int64)
    for g0, chunk in gene_nonzeros(reader, start, stop):
        g1 = g0 + len(chunk.starts) - 1
        gene_moments(chunk, divisor, group, group_n, sums[:, :, g0:g1], m2[:, :, g0:g1], nnz[:, g0:g1], max_count[g0:g1],
                     squares[:, g0:g1], top[g0:g1])
    groups = [
        {"moments": {scale: {"n": int(group_n[k]), "sum": sums[s, k], "m2": m2[s, k]}
                     for s, scale in enumerate(SCALES)},
         "expressed": nnz[k]}
        for k in range(len(present))
    ]
    partial = groups[0] if len(groups) == 1 else {
        "moments": {scale: _merge_all([g["moments"][scale] for g in groups]) for scale in SCALES},
        "expressed": nnz.sum(axis=0),
    }
    partial = {**partial, "max": max_count, "squares": squares.sum(axis=0), "batches": {}, "open": {}, "between": {}}
    if batch_codes is not None:
        for k, (code, g) in enumerate(zip(present, groups)):
            if per_batch:
                partial["batches"][int(code)] = {"moments": {s: g["moments"][s] for s in batch_scales},
                                                 "expressed": g["expressed"]}
            else:  # only sums, until the batch is complete
                partial["open"][int(code)] = (int(group_n[k]), {s: g["moments"][s]["sum"] for s in batch_scales})
    return partial


def _merge_all(parts: list[Moments]) -> Moments:
    out = parts[0]
    for part in parts[1:]:
        out = merge_moments(out, part)
    return out


def _merge_block_partials(a: dict, b: dict) -> dict:
    return {
        "moments": {s: merge_moments(a["moments"][s], b["moments"][s]) for s in a["moments"]},
        "expressed": a["expressed"] + b["expressed"],
    }


def stats_combine(*partials: dict, batch_sizes: np.ndarray | None = None) -> dict:
    """Merge partials (any order, any grouping). ``batch_sizes`` (cells per batch code): fold the
    open batches that are now complete into the between-batch sums."""
    out = partials[0]
    for p in partials[1:]:
        merged = _merge_block_partials(out, p)
        batches = dict(out["batches"])
        for code, part in p["batches"].items():
            batches[code] = _merge_block_partials(batches[code], part) if code in batches else part
        merged.update({"max": np.maximum(out["max"], p["max"]), "squares": out["squares"] + p["squares"],
                       "batches": batches, "open": _merge_open(out["open"], p["open"]),
                       "between": _add_arrays(out["between"], p["between"])})
        if "top" in out:
            merged["top"] = merge_top_counts(out["top"], p["top"])
        out = merged
    if batch_sizes is not None:
        out = {**out, **_fold_complete(out["open"], out["between"], batch_sizes)}
    return out


def _merge_open(a: dict, b: dict) -> dict:
    out = dict(a)
    for code, (n, sums) in b.items():
        out[code] = (out[code][0] + n, _add_arrays(out[code][1], sums)) if code in out else (n, sums)
    return out


def _add_arrays(a: dict, b: dict) -> dict:
    return {k: a[k] + b[k] if k in a and k in b else a.get(k, b.get(k)) for k in {*a, *b}}


def _fold_complete(open_batches: dict, between: dict, batch_sizes: np.ndarray | None) -> dict:
    """Move batches whose cells are all seen (all, when ``batch_sizes`` is None) from ``open`` into
    ``between`` as ``sum_b**2 / n_b`` per gene, their share of sum_b n_b * mean_b**2."""
    still_open, between = {}, dict(between)
    for code, (n, sums) in open_batches.items():
        if batch_sizes is None or n >= batch_sizes[code]:
            between = _add_arrays(between, {s: v * v / n for s, v in sums.items()})
        else:
            still_open[code] = (n, sums)
    return {"open": still_open, "between": between}


def merge_top_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per gene, the M largest of two sets of M largest counts."""
    m = a.shape[1]
    both = np.concatenate([a, b], axis=1)
    return np.partition(both, m, axis=1)[:, m:] if m else both


def clipped_chunk(inputs: _TaskInputs, start: int, stop: int, clips: dict[int, np.ndarray],
                  gene_chunks: list[int] | None = None) -> dict:
    """Seurat v3's second pass: per batch, sums and squared sums of counts clipped per gene (over
    the chunks of ``gene_chunks`` only, when given; other genes' sums stay 0)."""
    reader, batch_codes = inputs.reader, inputs.codes
    n, n_genes = stop - start, reader.array.shape[1]
    codes = inputs.rows(batch_codes, start, stop) if batch_codes is not None else np.zeros(n, dtype=np.int32)
    present, group = np.unique(codes, return_inverse=True)
    group = group.astype(np.int64)
    clip_rows = np.stack([clips[int(code)] for code in present])
    sums = np.zeros((len(present), n_genes))
    squares = np.zeros_like(sums)
    for g0, chunk in gene_nonzeros(reader, start, stop, gene_chunks):
        g1 = g0 + len(chunk.starts) - 1
        clipped_gene_sums(chunk, group, clip_rows[:, g0:g1], sums[:, g0:g1], squares[:, g0:g1])
    return {int(code): (sums[k], squares[k]) for k, code in enumerate(present)}


def clipped_combine(*parts: dict) -> dict:
    out: dict = {}
    for part in parts:
        for code, (s, s2) in part.items():
            if code in out:
                out[code] = (out[code][0] + s, out[code][1] + s2)
            else:
                out[code] = (s, s2)
    return out


def tree_reduce(leaves: list, combine, split_every: int, **shared):
    """A Dask tree reduction of delayed partials (``split_every`` children per node); ``shared``
    keyword arguments (delayed values allowed) go to every combine."""
    import dask

    level = leaves
    while len(level) > 1:
        level = [dask.delayed(combine)(*level[i : i + split_every], **shared) for i in range(0, len(level), split_every)]
    return level[0]


def _blocks(store: str):
    """The committed chunk rows as (start, stop), the manifest version, and the opened root."""
    root, manifest = open_committed(store)
    n = manifest.n_committed
    step = root["X"].chunks[0]
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)], manifest.version, root


def _compute(client, graph):
    if client is None:
        return graph.compute(scheduler="threads")
    return client.compute(graph).result()


def compute_gene_stats(store: str, config: StatsConfig = StatsConfig(), client=None) -> GeneStats:
    """Statistics of the committed cells (``client``: a distributed Client; None runs threaded)."""
    import dask

    blocks, version, root = _blocks(store)
    gene_ids = read_strings(root["var/_index"])
    batches: list[str] = []
    if config.batch_key is not None:
        if config.batch_key not in categorical_columns(root):
            raise ValueError(
                f"batch_key {config.batch_key!r} is not a categorical obs column of {store}; "
                f"choose one of {categorical_columns(root)}"
            )
        batches = read_categories(root, config.batch_key)
    if not blocks:
        raise ValueError(f"{store} has no committed cells")
    sizes = seen = None
    if config.batch_key is not None and not config.per_batch:
        codes = np.asarray(root[f"obs/{config.batch_key}/codes"][: blocks[-1][1]])
        sizes = np.bincount(codes, minlength=len(batches))
        seen = np.flatnonzero(sizes).tolist()
        sizes = dask.delayed(sizes, traverse=False)
    leaves = [dask.delayed(stats_task)(store, group, config.target_sum, config.batch_key, config.batch_scales,
                                       config.top_counts, sizes)
              for group in _split(blocks, config.tasks_per_thread * _threads(client))]
    shared = {} if sizes is None else {"batch_sizes": sizes}
    total = _compute(client, tree_reduce(leaves, stats_combine, config.split_every, **shared))
    totals = np.asarray(root["obs/total_counts"][: blocks[-1][1]], dtype=np.float64)
    codes_present = sorted(total["batches"]) if seen is None else seen
    n_cells = int(total["moments"]["counts"]["n"])
    if config.batch_key is None:
        between = {}
    elif config.per_batch:
        between = {s: sum(m[s]["sum"] ** 2 / m[s]["n"] for m in (total["batches"][c]["moments"] for c in codes_present))
                   for s in config.batch_scales}
    else:
        between = _fold_complete(total["open"], total["between"], None)["between"]
    between = {s: np.maximum(v - total["moments"][s]["sum"] ** 2 / n_cells, 0.0) for s, v in between.items()}
    return GeneStats(
        manifest_version=version,
        n_cells=n_cells,
        gene_ids=gene_ids,
        target_sum=config.target_sum,
        moments=total["moments"],
        n_cells_expressed=total["expressed"],
        max_count=total["max"],
        cell_totals=totals,
        batch_key=config.batch_key,
        batches=[batches[c] for c in codes_present],
        batch_moments=[total["batches"][c]["moments"] for c in codes_present] if config.per_batch else [],
        batch_expressed=[total["batches"][c]["expressed"] for c in codes_present] if config.per_batch else [],
        between_batch_ss=between,
        count_squares=total["squares"],
        top_counts=total.get("top"),
    )


def clipped_sums_from_top(stats: GeneStats, clip: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seurat v3's clipped sums over all cells from the first pass alone, where they are exact.

    ``sum min(x, c) = sum x - sum over x > c of (x - c)`` (and likewise for squares): only the
    counts above the clip matter, and the kept largest counts hold all of them unless every kept
    count exceeds the clip (more such counts may exist). Returns the sums, the squared sums and
    a mask of those unresolved genes, which need ``compute_clipped_sums``.
    """
    if stats.top_counts is None or stats.count_squares is None:
        raise ValueError("these statistics kept no top counts: compute them with StatsConfig(top_counts=M)")
    top = stats.top_counts.astype(np.float64)
    above = top > clip[:, None]
    unresolved = (top > 0).all(axis=1) & above.all(axis=1) if top.shape[1] else np.ones(len(clip), dtype=bool)
    excess = np.where(above, top - clip[:, None], 0.0).sum(axis=1)
    excess_squares = np.where(above, top * top - (clip * clip)[:, None], 0.0).sum(axis=1)
    return stats.moments["counts"]["sum"] - excess, stats.count_squares - excess_squares, unresolved


def compute_clipped_sums(store: str, stats: GeneStats, clips: list[np.ndarray], client=None,
                         split_every: int = 8, batched: bool = True,
                         tasks_per_thread: int = StatsConfig.tasks_per_thread,
                         genes: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Clipped sums per batch (``stats.batches`` order, one clip vector each), or overall.

    ``genes`` (a boolean mask) limits the pass to the gene chunks holding those genes; the sums of
    genes outside those chunks are then 0.
    """
    import dask

    blocks, version, root = _blocks(store)
    if version != stats.manifest_version:
        from ..store.manifest import StaleError

        raise StaleError(f"statistics are from manifest v{stats.manifest_version}, the store is at v{version}")
    batch_key = stats.batch_key if batched else None
    if batch_key:
        categories = read_categories(root, stats.batch_key)
        code_of = {c: i for i, c in enumerate(categories)}
        by_code = {code_of[b]: clip for b, clip in zip(stats.batches, clips)}
    else:
        by_code = {0: clips[0]}
    shared = dask.delayed(by_code, traverse=False)
    gene_chunks = None
    if genes is not None:
        gene_chunks = sorted(set((np.flatnonzero(genes) // root["X"].chunks[1]).tolist()))
        if not gene_chunks:
            n_genes = len(stats.gene_ids)
            return [(np.zeros(n_genes), np.zeros(n_genes)) for _ in by_code]
    leaves = [dask.delayed(clipped_task)(store, group, batch_key, shared, gene_chunks)
              for group in _split(blocks, tasks_per_thread * _threads(client))]
    total = _compute(client, tree_reduce(leaves, clipped_combine, split_every))
    order = sorted(by_code)
    return [total[c] for c in order]


__all__ = ["GeneStats", "SCALES", "StatsConfig", "clipped_sums_from_top", "compute_clipped_sums", "compute_gene_stats"]
