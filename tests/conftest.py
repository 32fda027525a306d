import os
import shutil

import pytest

import scdata
from scdata.source.demo_bucket import DemoConfig, write_demo_bucket

SMALL_GENES = 3000


@pytest.fixture(scope="session")
def demo_bucket(tmp_path_factory) -> str:
    """A small synthetic release (2026-01-12 schema); returns its release root."""
    root = tmp_path_factory.mktemp("bucket")
    return write_demo_bucket(str(root), DemoConfig(n_experiments=8, min_cells=150, max_cells=700, n_genes=SMALL_GENES, seed=3))


@pytest.fixture(scope="session")
def demo_bucket_2025(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("bucket2025")
    return write_demo_bucket(
        str(root), DemoConfig(n_experiments=5, min_cells=150, max_cells=600, n_genes=SMALL_GENES, seed=4, release="2025-02-25")
    )


def ingest_config(source: str, store: str, **overrides) -> scdata.IngestConfig:
    kwargs = dict(
        source=scdata.SourceConfig(source),
        store=store,
        cell_count=2000,
        batch_size=3,
        cluster=scdata.ClusterConfig(workers=2, dashboard=False),
        layout=scdata.StoreLayout(chunk_cells=128, chunk_genes=1024),
        progress=False,
    )
    kwargs.update(overrides)
    return scdata.IngestConfig(**kwargs)


@pytest.fixture()
def mutable_bucket(demo_bucket, tmp_path) -> str:
    """A private copy of the demo release that a test may damage."""
    dest = tmp_path / "release"
    shutil.copytree(demo_bucket, dest)
    return str(dest)


def materialized_store(source: str, directory, n_hvgs: int) -> str:
    """A store of every demo experiment with ``n_hvgs`` seurat_v3 HVGs materialized in obsm/X_hvg."""
    from scdata.hvg.flavors import HVGConfig
    from scdata.hvg.job import HVGJob, run_hvg_job

    path = str(directory / "store.zarr")
    scdata.ingest(ingest_config(source, path, cell_count=10**9), echo=lambda *_: None)
    run_hvg_job(HVGJob(store=path, config=HVGConfig(n_top_genes=n_hvgs), materialize=True,
                       cluster=scdata.ClusterConfig(workers=1, dashboard=False)), echo=lambda *_: None)
    return path


def h5ad_dir(release_root: str) -> str:
    return os.path.join(release_root, "h5ad", "GeneFull_Ex50pAS", "Homo_sapiens")
