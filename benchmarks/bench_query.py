"""Query benchmark: an sczarr store against a TileDB-SOMA experiment holding the same cells.

Both are built from the same h5ad files (sczarr by `scdata ingest`; TileDB-SOMA by reading the
files with anndata, giving cells the store's unique IDs and sample metadata, concatenating and
`tiledbsoma.io.from_anndata`). Each query uses the tool's own idiomatic API and returns the same
thing from both (checked): (a) one gene across every cell, as a dense vector; (b) 100 genes x the
cells of one tissue, dense; (c) the per-experiment mean of 100 genes; (d) one experiment's full
rows as an AnnData (CSR float32); plus (e) bytes on disk and time to build.

Warm: one process per tool opens its store once and runs each query ``--repeats`` times (median).
Cold: a fresh process per query and tool after dropping the page cache (root only; otherwise a
fresh process with a warm cache, and the results say so); its time includes opening the store.

    python benchmarks/bench_query.py                  # ~100k cells: results/bench_query_100000.{json,md}
    python benchmarks/bench_query.py --cells 1000000  # the HVG benchmark's ~1M-cell bucket
    python benchmarks/bench_query.py --cells 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.common import (  # noqa: E402
    LARGE_BUCKET_CELLS, WORK, du, ensure_bucket,
    md_table, million_bucket, run_checked, write_results,
)

PY = sys.executable
QUERIES = ("a_one_gene", "b_tissue_x_100_genes", "c_experiment_means_100_genes", "d_experiment_rows")
DESCRIPTION = {
    "a_one_gene": "(a) one gene, every cell",
    "b_tissue_x_100_genes": "(b) 100 genes x one tissue's cells",
    "c_experiment_means_100_genes": "(c) per-experiment mean of 100 genes",
    "d_experiment_rows": "(d) one experiment's full rows (AnnData)",
}


# ---------------------------------------------------------------- the queries, per tool


def params_for(store: str) -> dict:
    """The genes, tissue and experiment every query uses (fixed by seed, from the store)."""
    import numpy as np

    import scdata

    ds = scdata.open_store(store)
    rng = np.random.default_rng(0)
    genes = sorted(rng.choice(ds.gene.values.astype(str), size=100, replace=False).tolist())
    one = str(ds.gene.values[list(ds.gene_symbol.values).index("ACTB")])
    tissues, counts = np.unique(ds.tissue.values, return_counts=True)
    accessions, sizes = np.unique(ds.srx_accession.values, return_counts=True)
    return {"gene": one, "genes": genes, "tissue": str(tissues[np.argsort(counts)[len(counts) // 2]]),
            "experiment": str(accessions[np.argsort(sizes)[len(sizes) // 2]])}


class Sczarr:
    def __init__(self, store: str):
        import scdata

        self.ds = scdata.open_store(store)

    def a_one_gene(self, p):
        return self.ds.counts.sel(gene=p["gene"]).values

    def b_tissue_x_100_genes(self, p):
        from scdata import query

        return query.select_genes(query.select_cells(self.ds, tissue=p["tissue"]), p["genes"]).counts.values

    def c_experiment_means_100_genes(self, p):
        from scdata import query

        means = query.select_genes(self.ds, p["genes"]).counts.groupby("srx_accession").mean().compute()
        return means.sortby("srx_accession").values

    def d_experiment_rows(self, p):
        import numpy as np

        import scdata

        cells = np.flatnonzero(self.ds.srx_accession.values == p["experiment"])
        return scdata.to_anndata(self.ds, cells=slice(int(cells[0]), int(cells[-1]) + 1))


class Soma:
    """TileDB-SOMA at its defaults."""

    TILEDB_CONFIG: dict = {}

    def __init__(self, uri: str):
        import tiledbsoma

        self.soma = tiledbsoma
        context = tiledbsoma.SOMATileDBContext(tiledb_config=self.TILEDB_CONFIG) if self.TILEDB_CONFIG else None
        self.exp = tiledbsoma.Experiment.open(uri, context=context)

    def _query(self, obs=None, var=None):
        from tiledbsoma import AxisQuery

        return self.exp.axis_query("RNA", obs_query=AxisQuery(value_filter=obs) if obs else None,
                                   var_query=AxisQuery(value_filter=var) if var else None)

    def _dense(self, q):
        """The query's X as a dense (cells, genes) array, in obs/var join-id order."""
        import numpy as np

        table = q.X("data").tables().concat()
        rows = q.indexer.by_obs(table["soma_dim_0"])
        cols = q.indexer.by_var(table["soma_dim_1"])
        out = np.zeros((q.n_obs, q.n_vars), dtype=np.float32)
        out[rows, cols] = table["soma_data"].to_numpy()
        return out

    def _genes(self, genes):
        return "var_id in [" + ", ".join(repr(g) for g in genes) + "]"

    def a_one_gene(self, p):
        with self._query(var=f"var_id == '{p['gene']}'") as q:
            return self._dense(q)[:, 0]

    def b_tissue_x_100_genes(self, p):
        with self._query(obs=f"tissue == '{p['tissue']}'", var=self._genes(p["genes"])) as q:
            out = self._dense(q)
            order = q.var(column_names=["var_id"]).concat()["var_id"].to_numpy()
        import numpy as np

        return out[:, np.argsort(order)]  # the genes in sorted ID order, as sczarr returns them

    def c_experiment_means_100_genes(self, p):
        import numpy as np
        import pandas as pd
        import scipy.sparse as sp

        with self._query(var=self._genes(p["genes"])) as q:
            table = q.X("data").tables().concat()
            obs = q.obs(column_names=["soma_joinid", "srx_accession"]).concat().to_pandas()
            order = q.var(column_names=["var_id"]).concat()["var_id"].to_numpy()
            rows = q.indexer.by_obs(table["soma_dim_0"])
            cols = q.indexer.by_var(table["soma_dim_1"])
            x = sp.csr_matrix((table["soma_data"].to_numpy(), (rows, cols)), shape=(q.n_obs, q.n_vars))
        groups = pd.Categorical(obs["srx_accession"].astype(str))
        indicator = sp.csr_matrix((np.ones(len(groups)), (groups.codes, np.arange(len(groups)))))
        sums = np.asarray((indicator @ x).todense())
        means = sums / np.bincount(groups.codes)[:, None]
        return means[np.argsort(groups.categories)][:, np.argsort(order)]

    def d_experiment_rows(self, p):
        with self._query(obs=f"srx_accession == '{p['experiment']}'") as q:
            return q.to_anndata(X_name="data")


class SomaLargeBuffers(Soma):
    """TileDB-SOMA with the read buffers CELLxGENE Census's documentation recommends for large
    queries (``soma.init_buffer_bytes`` of 1 GiB; its default is 32 MiB), the same store."""

    TILEDB_CONFIG = {"soma.init_buffer_bytes": 1 << 30}


TOOLS = {"sczarr": Sczarr, "tiledbsoma": Soma, "tiledbsoma-1GiB": SomaLargeBuffers}
SOMA_TOOLS = ("tiledbsoma", "tiledbsoma-1GiB")
BUILT_AS = {"tiledbsoma-1GiB": "tiledbsoma"}
"""Tools that read another tool's store: the tuned TileDB-SOMA reads the one built for the default."""
IMPORTS = {"sczarr": ["scdata", "scdata.read.xarray_view", "scdata.query", "anndata", "flox.xarray", "distributed"],
           "tiledbsoma": ["tiledbsoma", "anndata", "pandas", "scipy.sparse"],
           "tiledbsoma-1GiB": ["tiledbsoma", "anndata", "pandas", "scipy.sparse"]}


def best_soma(results: dict, query: str, kind: str) -> tuple[str, float]:
    """The fastest TileDB-SOMA setting measured for ``query`` (``kind``: "warm" or "cold"), and its
    median seconds: each ratio is taken against the peer at its best."""
    def median(tool: str) -> float:
        runs = results[tool][kind][query]
        return statistics.median(runs["seconds"] if kind == "warm" else runs)

    measured = [t for t in SOMA_TOOLS if query in results.get(t, {}).get(kind, {})]
    tool = min(measured, key=median)
    return tool, median(tool)


def worker(tool: str, path: str, params: dict, queries: list[str], repeats: int, warmup: int = 0) -> dict:
    """Run in a fresh process: open the store, then each query ``warmup`` times untimed and
    ``repeats`` times timed. The tool's modules are imported first (a cold query measures reading
    the store, not importing Python). Warm runs take one untimed run first: the run before them
    drops the page cache, and with 3 repeats a cold first run would make the median the slower
    of the two warm ones."""
    import importlib

    def peak() -> int:
        """This process's peak resident set so far, in bytes: the kernel's VmHWM, which starts
        afresh at exec (``ru_maxrss`` does not: it keeps the peak of the parent that forked it)."""
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

    for module in IMPORTS[tool]:
        importlib.import_module(module)
    imported = peak()
    t0 = time.perf_counter()
    handle = TOOLS[tool](path)
    opened = time.perf_counter() - t0
    out = {"open_s": opened, "peak_rss_imported": imported, "peak_rss_opened": peak(), "queries": {}}
    for name in queries:
        for _ in range(warmup):
            getattr(handle, name)(params)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            result = getattr(handle, name)(params)
            times.append(time.perf_counter() - t)
        peak_rss = peak()  # before the checksum, whose float64 temporaries are the benchmark's, not the tool's
        out["queries"][name] = {"seconds": times, "digest": digest(result), "peak_rss": peak_rss}
        del result
    return out


def digest(result) -> list:
    """A checksum of a result that both tools must agree on (shape and sums)."""
    import numpy as np

    if hasattr(result, "X"):  # AnnData
        x = result.X
        return [list(result.shape), round(float(x.sum()), 3), int((x != 0).sum())]
    arr = np.asarray(result, dtype=np.float64)
    return [list(arr.shape), round(float(arr.sum()), 3), round(float((arr * np.arange(arr.size).reshape(arr.shape) % 97).sum()), 1)]


# ---------------------------------------------------------------- building both


def build_sczarr(source: str, cells: int) -> tuple[str, float]:
    store = os.path.join(WORK, f"query-{cells}.zarr")
    shutil.rmtree(store, ignore_errors=True)
    m = run_checked([PY, "-m", "scdata", "ingest", "--source", source, "--store", store, "--cell-count", str(cells),
                     "--workers", "2", "--no-progress"])
    return store, m.seconds


def build_soma(store: str) -> tuple[str, float]:
    """From the h5ad files the store was ingested from, in a fresh process (timed whole)."""
    uri = store.replace(".zarr", ".soma")
    shutil.rmtree(uri, ignore_errors=True)
    t = time.perf_counter()
    run_checked([PY, __file__, "--build-soma", store, uri])
    return uri, time.perf_counter() - t


SOMA_IN_MEMORY_CELLS = 300_000
"""Up to this many cells TileDB-SOMA is built in one ``from_anndata`` of the concatenated files
(its fastest way); above it the concatenation does not fit in 24 GiB (~12 GiB of CSR, copied
once by ``anndata.concat``), and it is built the way its docs give for many files: register
every file's obs and var, then append one file at a time. That leaves a fragment per file and
array; tiledbsoma's ``consolidate_and_vacuum`` write option merges only their metadata (it made
no difference to the queries here), and merging the fragments needs tiledb-py, which
tiledbsoma 2.x does not install."""


def _soma_part(e: dict, with_x: bool = True):
    """One experiment's h5ad as the SOMA experiment holds it: unique cell IDs (barcodes repeat
    across experiments), the store's accession and tissue, the counts' QC columns."""
    import anndata as ad
    import pandas as pd

    a = ad.read_h5ad(e["source_url"]) if with_x else ad.read_h5ad(e["source_url"], backed="r")
    names = [f"{e['accession']}:{b}" for b in a.obs_names]
    obs = pd.DataFrame({"srx_accession": pd.Categorical([e["accession"]] * a.n_obs),
                        "tissue": pd.Categorical([e["metadata"].get("tissue") or ""] * a.n_obs),
                        "umi_count": a.obs["umi_count"].to_numpy(), "gene_count": a.obs["gene_count"].to_numpy()},
                       index=pd.Index(names))
    var = a.var[[]]
    if not with_x:
        a.file.close()
        return ad.AnnData(obs=obs, var=var)
    a.obs, a.var = obs, var
    return a


def _build_soma(store: str, uri: str) -> None:
    import anndata as ad
    import tiledbsoma.io

    import scdata

    manifest = scdata.read_manifest(store)
    if manifest.n_committed <= SOMA_IN_MEMORY_CELLS:
        adata = ad.concat([_soma_part(e) for e in manifest.experiments], join="outer", merge=None)
        for column in ("srx_accession", "tissue"):
            adata.obs[column] = adata.obs[column].astype("category")
        tiledbsoma.io.from_anndata(uri, adata, measurement_name="RNA")
        return
    part = _soma_part(manifest.experiments[0])  # read once: the schema, then the first append
    tiledbsoma.io.from_anndata(uri, part, measurement_name="RNA", ingest_mode="schema_only")
    mapping = tiledbsoma.io.register_anndatas(uri, [_soma_part(e, with_x=False) for e in manifest.experiments],
                                              measurement_name="RNA", obs_field_name="obs_id", var_field_name="var_id")
    mapping.prepare_experiment(uri)
    for i, e in enumerate(manifest.experiments):
        tiledbsoma.io.from_anndata(uri, part if i == 0 else _soma_part(e), measurement_name="RNA",
                                   registration_mapping=mapping)


# ---------------------------------------------------------------- orchestration


def saturation_note(manifest, accession: str) -> str:
    """Why (d) can differ: the store saturates counts above int16 (and counts them), the
    h5ad files, and so TileDB-SOMA, keep them."""
    n = next(e["counters"]["n_saturated"] for e in manifest.experiments if e["accession"] == accession)
    return (f"(d)'s experiment has {n} counts above 32,767: the store holds them saturated at 32,767 (and counts "
            "them in its manifest), TileDB-SOMA holds the h5ad's float32 values, so the sums may differ by those "
            "values while shapes and non-zeros agree.")


TILE_ABOVE_CELLS = 2_000_000
"""Above this many cells the store is the 1M-cell run's store repeated (``tile_store.py``): an
ingest of ten million cells takes hours here, and their h5ad files do not fit this disk."""


def build_tiled(cells: int) -> dict:
    """The ~1M-cell query store (built by ``--cells 1000000``) repeated to about ``cells`` cells."""
    import scdata
    from benchmarks.tile_store import tile

    source = os.path.join(WORK, "query-1000000.zarr")
    if not os.path.exists(source):
        raise SystemExit(f"{source} does not exist: run `bench_query.py --cells 1000000` first")
    n_source = scdata.read_manifest(source).n_committed
    copies = max(1, round(cells / n_source))
    store = os.path.join(WORK, f"query-{cells}.zarr")
    t = time.perf_counter()
    n = tile(source, store, copies)
    return {"path": store, "build_s": time.perf_counter() - t, "tiled_from": source, "copies": copies, "cells": n}


def report_tiled(a, built: dict, manifest, params: dict, queries: list[str]) -> None:
    """sczarr alone on the tiled store (TileDB-SOMA cannot be built at this size here), beside
    TileDB-SOMA's times at 1M projected linearly in cells, from ``bench_query_1000000.json``."""
    store = built["sczarr"]["path"]
    warm = run_worker("sczarr", store, params, queries, a.repeats, warmup=1)
    cold, peaks = {}, {}
    for q in queries:
        cold[q], peaks[q] = [], []
        for _ in range(a.cold_repeats):
            drop_caches()
            r = run_worker("sczarr", store, params, [q], 1)
            cold[q].append(r["open_s"] + r["queries"][q]["seconds"][0])
            peaks[q].append(r["queries"][q]["peak_rss"] - r["peak_rss_imported"])
        print("sczarr cold", q, cold[q], flush=True)
    reference = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_query_1000000.json")
    with open(reference) as f:
        million = json.load(f)
    scale = manifest.n_committed / million["cells"]
    rows = []
    for q in queries:
        soma_warm = best_soma(million["results"], q, "warm")[1] * scale
        soma_cold = best_soma(million["results"], q, "cold")[1] * scale
        w, c = statistics.median(warm["queries"][q]["seconds"]), statistics.median(cold[q])
        rows.append([DESCRIPTION[q], f"{w * 1e3:,.0f}", f"{c * 1e3:,.0f}", f"{max(peaks[q]) / 2**20:,.0f}",
                     f"{soma_warm * 1e3:,.0f}", f"{soma_cold * 1e3:,.0f}", f"{soma_warm / w:.1f}x", f"{soma_cold / c:.1f}x"])
    cold_kind = "page cache dropped" if drop_caches() else "fresh process, page cache warm (not root)"
    load = os.getloadavg()
    table = (
        f"### Queries at {manifest.n_committed:,} cells (the {million['cells']:,}-cell store's whole chunk rows repeated "
        f"{built['sczarr']['copies']} times)\n\n"
        + md_table(["query", "sczarr warm (ms)", f"sczarr cold (ms, {cold_kind}, incl. open)",
                    "sczarr peak RSS, cold (MiB above the imported modules)", "TileDB-SOMA warm, projected (ms)",
                    "TileDB-SOMA cold, projected (ms)", "projected SOMA / sczarr, warm", "cold"], rows)
        + f"\n\nThe store is `benchmarks/tile_store.py`'s: real copies of the 1M-cell store's chunk files (a cold read is "
        "cold for every copy), each copy's cell IDs and accessions made distinct. Its counts repeat, so it times queries, "
        "not results. TileDB-SOMA is not built at this size (its 1M-cell build took "
        f"{million['built']['tiledbsoma']['build_s']:,.0f} s); its times are its 1M-cell times (the faster of its settings) from "
        "`bench_query_1000000.json` scaled by the ratio of cells, a projection that assumes it scales linearly, as it did "
        f"from 100k to 1M. Warm: median of {a.repeats} runs in one process after an untimed first run; "
        f"cold: median of {a.cold_repeats} fresh "
        f"processes. Load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}."
    )
    write_results(f"bench_query_{a.cells}", {"cells": manifest.n_committed, "params": {k: v for k, v in params.items() if k != "genes"},
                                             "built": built, "warm": warm, "cold": cold, "cold_peak_rss_above_imports": peaks,
                                             "soma_projected_from": reference, "scale": scale, "load_avg": load}, table)


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def run_worker(tool: str, path: str, params: dict, queries: list[str], repeats: int, warmup: int = 0) -> dict:
    m = run_checked([PY, __file__, "--worker", json.dumps([tool, path, params, queries, repeats, warmup])])
    return json.loads(m.output.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=100_000)
    p.add_argument("--experiments", type=int, default=16,
                   help="experiments in the synthetic bucket (above 380k cells: the 1M-cell bucket's 125)")
    p.add_argument("--repeats", type=int, default=5, help="warm runs per query (median)")
    p.add_argument("--cold-repeats", type=int, default=3, help="cold runs per query (median)")
    p.add_argument("--reuse", action="store_true", help="reuse stores built by an earlier run (build times from it)")
    p.add_argument("--build-only", action="store_true", help="build both stores and stop (then run with --reuse)")
    p.add_argument("--queries", nargs="+", choices=QUERIES, default=list(QUERIES), help="the queries to time (default: all)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--build-soma", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(*json.loads(a.worker))))
        return
    if a.build_soma:
        _build_soma(*a.build_soma)
        return

    os.makedirs(WORK, exist_ok=True)
    tiled = a.cells > TILE_ABOVE_CELLS
    previous = os.path.join(WORK, f"query-{a.cells}-build.json")
    if a.reuse and os.path.exists(previous):
        with open(previous) as f:
            built = json.load(f)
    elif tiled:
        built = {"sczarr": build_tiled(a.cells)}
    else:
        source = (million_bucket() if a.cells > LARGE_BUCKET_CELLS  # the HVG benchmark's 1M-cell bucket
                  else ensure_bucket(os.path.join(WORK, "bucket-query"), a.experiments))
        store, scz_s = build_sczarr(source, a.cells)
        uri, soma_s = build_soma(store)
        built = {"sczarr": {"path": store, "build_s": scz_s}, "tiledbsoma": {"path": uri, "build_s": soma_s}}
    with open(previous, "w") as f:
        json.dump(built, f)
    if a.build_only:
        print(built)
        return
    for b in built.values():
        b["bytes"] = du(b["path"])
    import scdata

    store = built["sczarr"]["path"]
    manifest = scdata.read_manifest(store)
    n_cells, n_genes = manifest.n_committed, manifest.n_genes
    params = params_for(store)
    tools = [t for t in TOOLS if BUILT_AS.get(t, t) in built]
    path_of = {t: built[BUILT_AS.get(t, t)]["path"] for t in tools}
    queries = [q for q in QUERIES if q in a.queries]
    if tiled:
        report_tiled(a, built, manifest, params, queries)
        return
    results: dict = {tool: {"warm": {}, "cold": {}} for tool in tools}
    for tool in tools:
        warm = run_worker(tool, path_of[tool], params, queries, a.repeats, warmup=1)
        results[tool]["open_s"] = warm["open_s"]
        results[tool]["warm"] = warm["queries"]
        print(tool, "warm", {q: statistics.median(v["seconds"]) for q, v in warm["queries"].items()}, flush=True)
    cold_kind = "page cache dropped" if drop_caches() else "fresh process, page cache warm (not root)"
    for q in queries:
        for tool in tools:
            runs, peaks = [], []
            for _ in range(a.cold_repeats):
                drop_caches()
                r = run_worker(tool, path_of[tool], params, [q], 1)
                runs.append(r["open_s"] + r["queries"][q]["seconds"][0])
                peaks.append(r["queries"][q]["peak_rss"] - r["peak_rss_imported"])
            results[tool]["cold"][q] = runs
            results[tool].setdefault("cold_peak_rss_above_imports", {})[q] = peaks
            print(tool, "cold", q, runs, flush=True)
    agree = {q: all(results["sczarr"]["warm"][q]["digest"] == results[t]["warm"][q]["digest"] for t in tools if t in SOMA_TOOLS)
             for q in queries}

    rows, ratio_rows = [], []
    for q in queries:
        med = {t: (statistics.median(results[t]["warm"][q]["seconds"]), statistics.median(results[t]["cold"][q])) for t in tools}
        for t in tools:
            rss = max(results[t]["cold_peak_rss_above_imports"][q]) / 2**20
            rows.append([DESCRIPTION[q], t, f"{med[t][0] * 1e3:,.0f}", f"{med[t][1] * 1e3:,.0f}", f"{rss:,.0f}"])
        (warm_tool, warm_best), (cold_tool, cold_best) = best_soma(results, q, "warm"), best_soma(results, q, "cold")
        ratio_rows.append([DESCRIPTION[q], warm_tool, f"{warm_best / med['sczarr'][0]:.2f}x", cold_tool,
                           f"{cold_best / med['sczarr'][1]:.2f}x", "yes" if agree[q] else "NO"])
    build_rows = [[t, f"{built[t]['build_s']:.1f}", f"{built[t]['bytes']:,}", f"{built[t]['bytes'] / n_cells:,.0f}",
                   f"{results[t]['open_s'] * 1e3:,.0f}"] for t in tools if t in built]
    ratio_rows.append(["(e) build time", "", f"{built['tiledbsoma']['build_s'] / built['sczarr']['build_s']:.2f}x", "", "", ""])
    bytes_ratio = built["sczarr"]["bytes"] / built["tiledbsoma"]["bytes"]
    ratio_rows.append(["(e) bytes on disk (sczarr / TileDB-SOMA)", "", f"{bytes_ratio:.2f}", "", "", ""])
    load = os.getloadavg()
    table = (
        f"### Queries, sczarr vs TileDB-SOMA ({n_cells:,} cells x {n_genes:,} genes, same h5ad files, same cores)\n\n"
        + md_table(["query", "tool", "warm median (ms)", f"cold median (ms, {cold_kind}, incl. open)",
                    "peak RSS, cold (MiB above the imported modules; open and query)"], rows)
        + "\n\n" + md_table(["query", "fastest TileDB-SOMA, warm", "its time / sczarr time, warm", "fastest TileDB-SOMA, cold",
                                "its time / sczarr time, cold", "same result (every setting)"], ratio_rows)
        + "\n\n`tiledbsoma`: TileDB-SOMA at its defaults; `tiledbsoma-1GiB`: the same store read with "
        "`soma.init_buffer_bytes` of 1 GiB, the setting CELLxGENE Census's documentation recommends for large queries "
        "(the default is 32 MiB). Each ratio is against the faster of the two for that query."
        + "\n\n" + md_table(["tool", "build (s)", "bytes on disk", "bytes/cell", "open (ms, warm)"], build_rows)
        + f"\n\n{saturation_note(manifest, params['experiment'])}"
        + f"\n\nWarm: median of {a.repeats} runs in one process after an untimed first run; "
        f"cold: median of {a.cold_repeats} fresh processes. Load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}."
    )
    write_results(f"bench_query_{a.cells}", {"cells": n_cells, "params": {k: v for k, v in params.items() if k != "genes"},
                                  "n_genes_queried": len(params["genes"]), "cold": cold_kind, "load_avg": load,
                                  "built": built, "results": results, "same_result": agree}, table)


if __name__ == "__main__":
    main()
