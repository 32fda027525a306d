"""The gene axis from a few gene tables (or --genes), whatever the selection's size."""

import dataclasses
import os

import numpy as np
import pytest

import scdata
from scdata.ingest.gene_axis import PLAN_TABLES, axis_from_tables, read_genes_file
from scdata.source.h5ad import ExperimentError, GeneTable
from scdata.ingest.driver import _plan_store
from scdata.store.layout import open_root, read_strings
from scdata.source.h5ad import gene_table_task

from tests.conftest import h5ad_dir, ingest_config
from tests.helpers import assert_store_matches_sources


def _table(ids, annotations=("cell_type",)):
    return GeneTable(np.asarray(ids), np.asarray([f"S{g[-3:]}" for g in ids]), tuple(annotations), 10)


GENES = [f"ENSG{i:011d}" for i in range(50)]


class _Reader:
    """A ``read_tables`` that counts the files it reads."""

    def __init__(self, table_of):
        self.table_of, self.read = table_of, []

    def __call__(self, batch):
        self.read += batch
        return [self.table_of(e) for e in batch]


def test_a_few_agreeing_tables_give_the_axis():
    reader = _Reader(lambda e: _table(GENES))
    axis = axis_from_tables(list(range(1000)), reader)
    assert len(reader.read) == PLAN_TABLES and axis.agreed and axis.tables_read == PLAN_TABLES
    assert list(axis.gene_ids) == GENES and axis.annotation_columns == ("cell_type",)


def test_unreadable_files_are_skipped_and_differing_tables_give_their_union():
    def table_of(e):
        if e in (0, 2):
            return ExperimentError(f"SRX{e}", "u", "not a readable HDF5 file")
        return _table(GENES if e != 3 else GENES[10:] + ["ENSG99999999999"])

    reader = _Reader(table_of)
    axis = axis_from_tables(list(range(1000)), reader)
    assert reader.read == [0, 1, 2, 3, 4] and len(axis.rejected) == 2
    assert not axis.agreed and list(axis.gene_ids) == GENES + ["ENSG99999999999"]
    with pytest.raises(ExperimentError):
        axis_from_tables(list(range(10)), _Reader(table_of), on_error="raise")
    with pytest.raises(ValueError, match="none of the 4 experiments"):
        axis_from_tables(list(range(4)), _Reader(lambda e: ExperimentError(f"SRX{e}", "u", "missing object")))


def test_genes_file(tmp_path):
    text = tmp_path / "genes.txt"
    text.write_text("\n".join(GENES[:3]) + "\n")
    ids, symbols = read_genes_file(str(text))
    assert list(ids) == GENES[:3] and list(symbols) == GENES[:3]
    table = tmp_path / "genes.csv"
    table.write_text("gene_id,gene_symbol\n" + "".join(f"{g},SYM{i}\n" for i, g in enumerate(GENES[:3])))
    ids, symbols = read_genes_file(str(table))
    assert list(ids) == GENES[:3] and list(symbols) == ["SYM0", "SYM1", "SYM2"]
    table.write_text(f"{GENES[0]}\nTP53\n")
    with pytest.raises(ValueError, match="'TP53' is not an Ensembl gene ID"):
        read_genes_file(str(table))
    table.write_text(f"{GENES[0]}\n{GENES[0]}\n")
    with pytest.raises(ValueError, match="more than once"):
        read_genes_file(str(table))


class _CountingClient:
    """Enough of a Dask client for the planning pass: runs gene-table tasks here, counting them."""

    def __init__(self):
        self.calls = 0

    def map(self, fn, items, pure=False):
        assert fn is gene_table_task
        self.calls += len(items)
        return [_Done(fn, item) for item in items]


class _Done:
    def __init__(self, fn, item):
        try:
            self.value, self.error = fn(item), None
        except ExperimentError as exc:
            self.value, self.error = None, exc

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value

    def release(self):
        pass


def test_planning_a_thousand_experiments_reads_a_few_gene_tables(demo_bucket, tmp_path):
    cfg = scdata.SourceConfig(demo_bucket)
    real = scdata.select_experiments(scdata.read_sample_metadata(cfg), cfg, 10**9)
    # 1,000 experiments of the release (the demo's files, named again), the first one unreadable
    many = [dataclasses.replace(real[i % len(real)], accession=f"SRX{i:07d}") for i in range(1000)]
    many[0] = dataclasses.replace(many[0], url=os.path.join(h5ad_dir(demo_bucket), "absent.h5ad"))
    client = _CountingClient()
    store = str(tmp_path / "s.zarr")
    messages = []
    manifest = _plan_store(client, many, ingest_config(demo_bucket, store), messages.append)
    assert client.calls == PLAN_TABLES + 1
    expected = gene_table_task(real[0]).gene_ids
    assert manifest.n_genes == len(expected)
    assert list(read_strings(open_root(store)["var/_index"])) == list(expected)
    assert any(f"gene tables of {PLAN_TABLES + 1} experiments (1 unreadable)" in m for m in messages)


def test_ingest_on_an_explicit_axis(mutable_bucket, tmp_path):
    """--genes: the store's axis is the file's; genes of the files outside it are dropped and counted."""
    cfg = scdata.SourceConfig(mutable_bucket)
    first = scdata.select_experiments(scdata.read_sample_metadata(cfg), cfg, 1)[0]
    import anndata as ad

    genes = list(ad.read_h5ad(first.url, backed="r").var_names)
    axis = ["ENSG99999999999"] + genes[::2]  # half the genes, and one no file has
    path = tmp_path / "axis.csv"
    path.write_text("".join(f"{g},G{i}\n" for i, g in enumerate(axis)))
    store = str(tmp_path / "s.zarr")
    scdata.ingest(ingest_config(mutable_bucket, store, cell_count=700, genes_file=str(path)), echo=lambda *_: None)
    ds = scdata.open_store(store)
    assert list(ds.gene.values) == axis and ds.gene_symbol.values[1] == "G1"
    assert not ds.counts[:, 0].values.any()  # the gene no file has: zero
    manifest = scdata.read_manifest(store)
    assert all(e["counters"]["n_genes_dropped"] == len(genes) - len(genes[::2]) for e in manifest.experiments)
    assert_store_matches_sources(store)
