"""The notebook and the docs' reading examples, executed against a demo store built by the CLI."""

import ast
import os
import re
import subprocess
import sys

import matplotlib.image
import nbformat
import pytest
from nbclient import NotebookClient

import scdata

from tests.gcs_proxy import GCSProxy
from tests.services import bucket_fs, gcs_emulator, upload_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "explore_store.ipynb")
FIGURES = ("store_overview.png", "one_gene.png", "dot_plot.png", "scanpy_umap.png")
BUCKET = "notebook-stores"


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "scdata", *args], check=True, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def cli_store(demo_bucket, tmp_path_factory) -> str:
    """``make demo``'s chain, small: ingest every demo experiment, then HVGs (files beside the store)."""
    path = str(tmp_path_factory.mktemp("nb") / "store.zarr")
    _cli("ingest", "--source", demo_bucket, "--store", path, "--cell-count", "100000", "--workers", "1",
         "--chunk-cells", "256", "--chunk-genes", "1024", "--no-progress")
    _cli("hvg", "--store", path, "--n-hvgs", "200", "--workers", "1")
    return path


def _assert_image(path: str) -> None:
    assert os.path.getsize(path) > 1000, path
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0.01, path  # not blank


def test_notebook_runs_top_to_bottom(cli_store, tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") and not c.get("execution_count") for c in notebook.cells if c.cell_type == "code"), \
        "store the notebook without outputs"
    figures = str(tmp_path / "figures")
    # through the proxy, which stores multipart uploads byte for byte (the emulator alone can alter
    # binary bodies, and some chunks of X then fail to decode: see tests/gcs_proxy.py)
    with gcs_emulator(BUCKET) as endpoint, GCSProxy(endpoint) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)  # the kernel inherits the environment
        import fsspec

        fsspec.config.conf.pop("gcs", None)
        upload_tree(bucket_fs(proxy.url), cli_store, f"{BUCKET}/store.zarr")
        monkeypatch.setenv("GCS_STORE", f"gs://{BUCKET}/store.zarr")
        monkeypatch.setenv("STORE", cli_store)
        monkeypatch.setenv("FIGURES", figures)
        monkeypatch.delenv("HVG_DIR", raising=False)
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "Dask dashboard: http" in text
    assert "did you mean 'CD3E'" in text and "no cell has tissue='atlantis'" in text
    assert "agree with the local store" in text  # the gs:// cell ran, not skipped
    for name in FIGURES:
        _assert_image(os.path.join(figures, name))
    images = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # the four figures and hvg_analysis.png rendered inline


def _reading_examples() -> list[str]:
    """The python blocks of the docs' "Reading and queries" page (its "Querying" section included)."""
    with open(os.path.join(ROOT, "docs", "reading.md")) as f:
        page = f.read()
    return re.findall(r"```python\n(.*?)```", page, flags=re.S)


def test_docs_reading_examples_run(cli_store, tmp_path, monkeypatch):
    blocks = _reading_examples()
    assert len(blocks) >= 2 and any("query.group_expression" in b for b in blocks)
    ds = scdata.open_store(cli_store)
    # The docs name a real store's path, tissue and Ensembl ID; the demo's are synthetic.
    actb = str(ds.gene.values[list(ds.gene_symbol.values).index("ACTB")])
    substitutions = {"data/scRNA/store.zarr": cli_store, '"blood"': repr(str(ds.tissue.values[0])),
                     "ENSG00000075624": actb}
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        for old, new in substitutions.items():
            block = block.replace(old, new)
        for node in ast.parse(block).body:  # statement by statement, computing lazy results
            if isinstance(node, ast.Expr):
                value = eval(compile(ast.Expression(node.value), "docs/reading.md", "eval"), namespace)
                if hasattr(value, "compute"):
                    value.compute()
            else:
                exec(compile(ast.Module([node], type_ignores=[]), "docs/reading.md", "exec"), namespace)
    assert namespace["table"]["mean"].sizes["tissue"] == len(set(ds.tissue.values))
