"""Ingest on the embedded LocalCluster: rows against anndata, xarray/anndata readers, bad input."""

import json
import os

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import scdata
from scdata.source.bucket import MetadataError

from tests.conftest import h5ad_dir, ingest_config
from tests.helpers import assert_store_matches_sources, store_bytes
from tests.helpers import rewrite_h5ad as _rewrite

ALL = 10**9  # a budget that selects every experiment


def _order(release: str) -> list[str]:
    cfg = scdata.SourceConfig(release)
    return [e.accession for e in scdata.select_experiments(scdata.read_sample_metadata(cfg), cfg, ALL)]


def test_ingest_matches_sources_and_readers(demo_bucket, tmp_path):
    store = str(tmp_path / "store.zarr")
    report = scdata.ingest(ingest_config(demo_bucket, store, cell_count=ALL), echo=lambda *_: None)
    assert not report.rejected
    assert_store_matches_sources(store)

    ds = scdata.open_store(store)
    assert ds.counts.dims == ("cell", "gene") and ds.counts.dtype == np.int16
    assert ds.counts.chunks is not None  # lazy
    assert set(ds.srx_accession.values) == {e["accession"] for e in report.manifest.experiments}
    assert "tissue" in ds and "cell_type" in ds  # sample metadata and 2026 cell annotations
    assert ds.cell.to_index().is_unique

    # xarray opens the groups directly (dimension_names), anndata reads the layout directly.
    assert xr.open_zarr(store, consolidated=False)["X"].dims == ("cell", "gene")
    assert list(xr.open_zarr(store, group="var", consolidated=False)["_index"].values[:3]) == list(ds.gene.values[:3])
    adata = ad.read_zarr(store)
    assert adata.shape == (ds.sizes["cell"], ds.sizes["gene"])
    assert list(adata.obs_names[:5]) == list(ds.cell.values[:5])
    np.testing.assert_array_equal(adata.X[:50], ds.counts[:50].values)
    assert list(adata.obs["tissue"][:5]) == list(ds.tissue.values[:5])

    view = scdata.to_anndata(store, cells=slice(10, 60), genes=list(ds.gene.values[:20]))
    np.testing.assert_array_equal(view.X.toarray(), ds.counts[10:60, :20].values)
    assert list(view.obs_names) == list(ds.cell.values[10:60])

    info = scdata.store_info(store)
    assert info["total_cells_downloaded"] == ds.sizes["cell"]
    assert info["total_samples"] == len(report.manifest.experiments)
    assert info["saturated_values"] > 0 and info["max_expression_value"] > 32767
    assert 0.5 < info["sparsity"] < 1 and info["bytes_per_cell"] > 0


def test_selection_filters_and_2025_schema(demo_bucket_2025, tmp_path):
    cfg = scdata.SourceConfig(demo_bucket_2025)
    table = scdata.read_sample_metadata(cfg)
    assert table["file_path"].str.startswith("gs://arc-scbasecount/").all()  # the seed's old URLs
    tissue = table["tissue"].iloc[0]
    chosen = scdata.select_experiments(table, cfg, ALL, filters={"tissue": [tissue]})
    assert chosen and all(e.metadata["tissue"] == tissue for e in chosen)
    assert all(e.url.startswith(demo_bucket_2025) for e in chosen)  # resolved under the mirror
    store = str(tmp_path / "s.zarr")
    scdata.ingest(ingest_config(demo_bucket_2025, store, cell_count=ALL, filters={"tissue": [tissue]}), echo=lambda *_: None)
    ds = scdata.open_store(store)
    assert set(ds.tissue.values) == {tissue} and "cell_type" not in ds
    assert_store_matches_sources(store)


def test_seed_rule_takes_whole_experiments(demo_bucket):
    cfg = scdata.SourceConfig(demo_bucket)
    table = scdata.read_sample_metadata(cfg)
    chosen = scdata.select_experiments(table, cfg, 700, seed=42)
    shuffled = table.sample(frac=1.0, random_state=42)
    counts = shuffled["obs_count"].to_numpy()
    k = int(np.searchsorted(np.cumsum(counts), 700) + 1)
    assert [e.accession for e in chosen] == list(shuffled["srx_accession"][:k])
    assert scdata.select_experiments(table, cfg, 10**6)[: len(chosen)] == chosen  # a larger budget extends it


def test_append_equals_fresh_run(demo_bucket, tmp_path):
    grown, fresh = str(tmp_path / "grown.zarr"), str(tmp_path / "fresh.zarr")
    quiet = lambda *_: None  # noqa: E731
    scdata.ingest(ingest_config(demo_bucket, grown, cell_count=700), echo=quiet)
    first = scdata.read_manifest(grown)
    again = scdata.ingest(ingest_config(demo_bucket, grown, cell_count=700), echo=quiet)
    assert again.added == [] and scdata.read_manifest(grown).version == first.version  # rerun: nothing to do
    scdata.ingest(ingest_config(demo_bucket, grown, cell_count=ALL, batch_size=2), echo=quiet)
    scdata.ingest(ingest_config(demo_bucket, fresh, cell_count=ALL), echo=quiet)
    assert store_bytes(grown) == store_bytes(fresh)


def test_bad_inputs_are_rejected_or_repaired(mutable_bucket, tmp_path):
    order = _order(mutable_bucket)
    d = h5ad_dir(mutable_bucket)
    path = {acc: os.path.join(d, f"{acc}.h5ad") for acc in order}
    truncated, not_hdf5, missing_x, symbols, fractional, negative, empty, gone = order

    with open(path[truncated], "r+b") as f:
        f.truncate(os.path.getsize(path[truncated]) // 2)
    with open(path[not_hdf5], "w") as f:
        f.write("this is not an h5ad\n")
    with h5py.File(path[missing_x], "r+") as f:
        del f["X"]

    def to_symbols(a):
        a.var_names = [f"SYMBOL{i}" for i in range(a.n_vars)]

    def make_fractional(a):
        a.X = a.X.astype(np.float32)
        a.X.data[:5] += 0.4

    def make_negative(a):
        a.X.data[0] = -3

    _rewrite(path[symbols], to_symbols)
    _rewrite(path[fractional], make_fractional)
    _rewrite(path[negative], make_negative)
    _rewrite(path[empty], lambda a: a[:0].copy())
    os.remove(path[gone])

    store = str(tmp_path / "s.zarr")
    messages = []
    report = scdata.ingest(ingest_config(mutable_bucket, store, cell_count=ALL), echo=messages.append)
    reasons = {r["accession"]: r["reason"] for r in report.rejected}
    assert "not a readable HDF5 file" in reasons[truncated]
    assert "not a readable HDF5 file" in reasons[not_hdf5]
    assert "missing object 'X'" in reasons[missing_x]
    assert "not Ensembl gene IDs" in reasons[symbols] and "SYMBOL0" in reasons[symbols]
    assert "negative" in reasons[negative]
    assert "no cells" in reasons[empty]
    assert "missing object" in reasons[gone]
    kinds = {r["accession"]: r["kind"] for r in report.rejected}  # I/O faults are retried by a rerun
    assert {acc for acc, kind in kinds.items() if kind == "io"} == {truncated, not_hdf5, missing_x, gone}
    assert {acc for acc, kind in kinds.items() if kind == "content"} == {symbols, negative, empty}
    assert fractional not in reasons
    assert any(truncated in m for m in messages)  # the user is told which experiment failed

    manifest = scdata.read_manifest(store)
    committed = {e["accession"]: e for e in manifest.experiments}
    assert set(committed) == {fractional}
    assert committed[fractional]["counters"]["n_fractional"] == 5
    assert_store_matches_sources(store)
    assert scdata.store_info(store)["rejected"]  # info reports them too


def test_raise_policy_keeps_committed_rows(mutable_bucket, tmp_path):
    order = _order(mutable_bucket)
    store = str(tmp_path / "s.zarr")
    quiet = lambda *_: None  # noqa: E731
    scdata.ingest(ingest_config(mutable_bucket, store, cell_count=1), echo=quiet)  # first experiment only
    before = store_bytes(store)
    _rewrite(os.path.join(h5ad_dir(mutable_bucket), f"{order[2]}.h5ad"), lambda a: setattr(a.X, "data", -a.X.data))
    with pytest.raises(scdata.IngestError, match=f"{order[2]}.*negative.*committed rounds are intact"):
        scdata.ingest(ingest_config(mutable_bucket, store, cell_count=ALL, on_error="raise", batch_size=1), echo=quiet)
    manifest = scdata.read_manifest(store)
    assert [e["accession"] for e in manifest.experiments] == order[:2]  # round 2 committed before the fault
    ds = scdata.open_store(store)
    assert ds.sizes["cell"] == manifest.n_committed
    np.testing.assert_array_equal(ds.counts[: manifest.experiments[0]["row_stop"]].values,
                                  ad.read_zarr(store).X[: manifest.experiments[0]["row_stop"]])
    assert before  # first round's files existed; they were rewritten only with identical rows
    assert_store_matches_sources(store)


def test_genes_outside_axis_are_dropped_and_counted(mutable_bucket, tmp_path):
    order = _order(mutable_bucket)
    store = str(tmp_path / "s.zarr")
    quiet = lambda *_: None  # noqa: E731
    scdata.ingest(ingest_config(mutable_bucket, store, cell_count=1), echo=quiet)
    target = os.path.join(h5ad_dir(mutable_bucket), f"{order[1]}.h5ad")

    def new_gene(a):
        names = list(a.var_names)
        names[0] = "ENSG99999999999"
        a.var_names = names

    _rewrite(target, new_gene)
    source = ad.read_h5ad(target)
    lost = int(source.X[:, 0].sum())
    scdata.ingest(ingest_config(mutable_bucket, store, cell_count=ALL), echo=quiet)
    entry = next(e for e in scdata.read_manifest(store).experiments if e["accession"] == order[1])
    assert entry["counters"]["n_genes_dropped"] >= 1 and entry["counters"]["n_umis_dropped"] == lost
    assert "ENSG99999999999" not in set(scdata.open_store(store).gene.values)
    assert_store_matches_sources(store)


def test_metadata_faults(mutable_bucket, tmp_path):
    meta = os.path.join(mutable_bucket, "metadata", "GeneFull_Ex50pAS", "Homo_sapiens", "sample_metadata.parquet")
    table = pd.read_parquet(meta)
    acc = table["srx_accession"].iloc[0]
    table.loc[0, "obs_count"] = table.loc[0, "obs_count"] + 7
    table.to_parquet(meta, index=False)
    store = str(tmp_path / "s.zarr")
    messages = []
    scdata.ingest(ingest_config(mutable_bucket, store, cell_count=ALL), echo=messages.append)
    entry = next(e for e in scdata.read_manifest(store).experiments if e["accession"] == acc)
    assert "obs_count" in entry["warnings"][0]
    assert any(acc in m and "obs_count" in m for m in messages)

    pd.concat([table, table.iloc[:1]]).to_parquet(meta, index=False)
    with pytest.raises(MetadataError, match=f"duplicate srx_accession.*{acc}"):
        scdata.read_sample_metadata(scdata.SourceConfig(mutable_bucket))
    with pytest.raises(ValueError, match="retired bucket"):
        scdata.SourceConfig("gs://arc-scbasecount/2025-02-25")
    with pytest.raises(MetadataError, match="no sample metadata"):
        scdata.read_sample_metadata(scdata.SourceConfig(str(tmp_path)))


def test_refuses_to_overwrite_foreign_directory(demo_bucket, tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a sczarr store"):
        scdata.ingest(ingest_config(demo_bucket, str(target)), echo=lambda *_: None)
    assert (target / "notes.txt").read_text() == "keep me"


def test_cli_demo_ingest_info(tmp_path):
    from scdata.cli import main

    assert main(["demo-bucket", str(tmp_path / "b"), "--experiments", "3", "--min-cells", "100", "--max-cells", "200",
                 "--genes", "500", "--workers", "1"]) == 0
    source = str(tmp_path / "b" / "scbasecount" / "2026-01-12")
    store = str(tmp_path / "s.zarr")
    assert main(["ingest", "--source", source, "--store", store, "--cell-count", "150", "--workers", "1",
                 "--chunk-cells", "64", "--retry-rejected", "--no-progress"]) == 0
    assert main(["info", "--store", store]) == 0
    assert main(["info", "--store", str(tmp_path / "nothing.zarr")]) == 1


def test_info_json_fields(demo_bucket, tmp_path, capsys):
    from scdata.cli import main

    store = str(tmp_path / "s.zarr")
    scdata.ingest(ingest_config(demo_bucket, store, cell_count=500), echo=lambda *_: None)
    capsys.readouterr()
    assert main(["info", "--store", store, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for key in ("total_cells_requested", "total_cells_downloaded", "total_samples", "download_timestamp", "gene_list",
                "max_expression_value", "sparsity", "samples", "bytes_on_disk", "bytes_per_cell"):
        assert key in info
    assert len(info["gene_list"]) == info["n_genes"]


def _slow_commits(monkeypatch, seconds: float) -> list[int]:
    """Make every commit of the driver take ``seconds`` longer; returns a counter of commits."""
    import time

    from scdata.ingest import driver

    commits, commit_units = [0], driver.commit_units

    def slow_commit(*args):
        commits[0] += 1
        time.sleep(seconds)
        return commit_units(*args)

    monkeypatch.setattr(driver, "commit_units", slow_commit)
    return commits


def _ingest_every_experiment_on_threads(demo_bucket, tmp_path) -> str:
    """Ingest every demo experiment, one per commit unit, on an in-process cluster of two workers
    (so a test's patches and plugins reach the driver and the scheduler); returns the store."""
    store = str(tmp_path / "store.zarr")
    config = ingest_config(demo_bucket, store, cell_count=10**9, batch_size=1,
                           cluster=scdata.ClusterConfig(workers=2, processes=False, dashboard=False))
    scdata.ingest(config, echo=lambda *_: None)
    return store


def test_loads_send_the_driver_no_per_cell_columns(demo_bucket, tmp_path, monkeypatch):
    """A finished load sends the driver a few hundred bytes however many cells it has: its
    barcodes and per-cell counts wait on the workers for its unit's commit, so the driver's
    memory does not grow with the cells in the load window. The store is the same."""
    import pickle

    from scdata.ingest import driver

    sizes = []
    real = driver._finish_load

    def measured(config, manifest, window, selection, key, m, *rest):
        summary = m.summary.result()  # what came to the driver
        sizes.append((summary.n_cells, len(pickle.dumps(summary))))
        return real(config, manifest, window, selection, key, m, *rest)

    monkeypatch.setattr(driver, "_finish_load", measured)
    store = _ingest_every_experiment_on_threads(demo_bucket, tmp_path)
    cells = [n for n, _ in sizes]
    assert len(sizes) == 8 and max(cells) >= 2 * min(cells)
    assert max(size for _, size in sizes) < 2048, sizes  # 10x barcodes alone are ~17 bytes a cell
    assert_store_matches_sources(store)


def test_the_driver_sleeps_until_a_task_or_commit_finishes(demo_bucket, tmp_path, monkeypatch):
    """The driver's loop runs once per finished future (load summary, write, cell columns,
    commit), not on a timer: polling the in-flight futures every 50 ms while a commit ran cost
    the driver process a quarter of a core, taken from the workers on a 2-core machine. Commits
    are made slow here, so a polling loop would go round ~20 times per commit."""
    from scdata.ingest.load_window import LoadWindow
    from scdata.runtime.wakeup import Wakeup

    rounds, watched = [0], [0]
    take_unit, watch = LoadWindow.take_unit, Wakeup.watch

    def counted_take_unit(self, *args, **kwargs):
        unit = take_unit(self, *args, **kwargs)
        rounds[0] += unit is None  # the loop asks until there is none: once per round
        return unit

    def counted_watch(self, *futures):
        watched[0] += len(futures)
        return watch(self, *futures)

    monkeypatch.setattr(LoadWindow, "take_unit", counted_take_unit)
    monkeypatch.setattr(Wakeup, "watch", counted_watch)
    commits = _slow_commits(monkeypatch, 0.5)
    store = _ingest_every_experiment_on_threads(demo_bucket, tmp_path)
    assert commits[0] >= 2 and watched[0] > commits[0]
    # a round per finished future at most, two more per commit (the loop goes round again at once
    # after starting one and after recording one), and the first; a polling loop: ~10 per commit
    assert rounds[0] <= watched[0] + 2 * commits[0] + 1, (rounds[0], watched[0], commits[0])
    assert_store_matches_sources(store)


class _LoseWritesWhenASeamFinishes:
    """A scheduler plugin that, the first time each seam write finishes, makes the scheduler
    lose every other finished write (as it does when the worker holding them dies): Dask reruns
    a lost task whose future a client still holds. Built lazily so that importing the module
    needs no scheduler."""

    WRITES = ("write_own_task", "write_seam_task")

    def __new__(cls):
        from distributed.diagnostics.plugin import SchedulerPlugin
        from distributed.utils import key_split

        class Plugin(SchedulerPlugin):
            name = "lose-writes-when-a-seam-finishes"

            async def start(self, scheduler):
                self.scheduler, self.seen, self.lost = scheduler, set(), 0

            def transition(self, key, start, finish, *args, **kwargs):
                if finish != "memory" or key_split(key) != "write_seam_task" or key in self.seen:
                    return
                self.seen.add(key)
                others = [k for k, ts in self.scheduler.tasks.items()
                          if k != key and ts.state == "memory" and key_split(k) in cls.WRITES]
                if others:  # not from inside a transition: on the scheduler's loop, next
                    self.scheduler.loop.add_callback(self.lose, others)

            def lose(self, keys):
                keys = [k for k in keys if k in self.scheduler.tasks and self.scheduler.tasks[k].state == "memory"]
                self.lost += len(keys)
                self.scheduler.transitions({k: "released" for k in keys}, stimulus_id="test-lose-writes")

        return Plugin()


def test_a_lost_write_never_reruns_after_the_seam_that_rewrote_its_chunk(demo_bucket, tmp_path, monkeypatch):
    """A unit's last, partial chunk is rewritten by the next unit's first seam (with the next
    unit's rows appended). If the worker holding the earlier write's result dies after that
    seam ran, and the driver still held the earlier write's future, Dask would rerun the write
    and put back the chunk without the later rows. Here every finished write is lost each time
    a seam finishes, and commits are slow (so units wait to commit with their writes done): the
    store must still equal its sources."""
    from scdata.ingest import driver

    plugins, run_units = [], driver._run_units

    def with_plugin(client, *args):
        client.register_plugin(_LoseWritesWhenASeamFinishes())
        plugins.append(client.cluster.scheduler.plugins["lose-writes-when-a-seam-finishes"])  # in this process
        return run_units(client, *args)

    monkeypatch.setattr(driver, "_run_units", with_plugin)
    _slow_commits(monkeypatch, 0.3)
    store = _ingest_every_experiment_on_threads(demo_bucket, tmp_path)
    # seams ran, and each made the scheduler lose the finished writes it still had (the old driver
    # held every write of a unit until its commit, so the last one was always among them; now the
    # driver lets writes go as they finish, so there may be none)
    assert len(plugins[0].seen) >= 4, plugins[0].seen
    assert_store_matches_sources(store)
