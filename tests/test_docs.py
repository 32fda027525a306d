"""Every Python example in the README and the docs runs, against a store the CLI built.

A block that needs what a test machine has not (a SLURM cluster, GPUs) is preceded by an HTML
comment ``<!-- not run: REASON -->``; the reading page's blocks run in ``test_notebook.py``
(they need real gene and tissue names substituted). The README stays a front page.
"""

import ast
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [
    "README.md",
    *sorted(os.path.join("docs", p) for p in os.listdir(os.path.join(ROOT, "docs")) if p.endswith(".md") and p != "reading.md"),
]
BLOCK = re.compile(r"(<!-- not run: (?P<reason>[^>]*?) -->\s*\n)?```python\n(?P<code>.*?)```", re.S)


def _blocks(page: str) -> list[tuple[str, str | None]]:
    with open(os.path.join(ROOT, page)) as f:
        return [(m.group("code"), m.group("reason")) for m in BLOCK.finditer(f.read())]


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "scdata", *args], check=True, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def docs_dir(demo_bucket, tmp_path_factory) -> str:
    """A working directory laid out as the examples expect: ``data/scRNA/store.zarr`` (HVGs
    materialized) and the demo bucket at ``data/demo/bucket/scbasecount/2026-01-12``."""
    work = tmp_path_factory.mktemp("docs")
    store = work / "data" / "scRNA" / "store.zarr"
    _cli(
        "ingest",
        "--source",
        demo_bucket,
        "--store",
        str(store),
        "--cell-count",
        "100000",
        "--workers",
        "1",
        "--chunk-cells",
        "256",
        "--chunk-genes",
        "1024",
        "--no-progress",
    )
    _cli("hvg", "--store", str(store), "--n-hvgs", "200", "--materialize", "--workers", "1")
    bucket = work / "data" / "demo" / "bucket" / "scbasecount"
    bucket.mkdir(parents=True)
    os.symlink(demo_bucket, bucket / "2026-01-12")
    return str(work)


def test_the_readme_stays_a_front_page():
    with open(os.path.join(ROOT, "README.md")) as f:
        assert len(f.read().splitlines()) <= 150


def test_every_skipped_example_says_why():
    for page in PAGES:
        for _, reason in _blocks(page):
            assert reason is None or len(reason.strip()) > 10, page


@pytest.mark.parametrize("page", [p for p in PAGES if any(reason is None for _, reason in _blocks(p))])
def test_python_examples_run(page, docs_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(docs_dir)
    namespace: dict = {}
    for code, reason in _blocks(page):
        if reason is not None:
            continue
        if "scdata.ingest(" in code:  # an ingest example writes a store of its own
            code = code.replace("data/scRNA/store.zarr", str(tmp_path / "ingested.zarr"))
        for node in ast.parse(code).body:  # statement by statement, computing lazy results
            if isinstance(node, ast.Expr):
                value = eval(compile(ast.Expression(node.value), page, "eval"), namespace)
                if hasattr(value, "compute"):
                    value.compute()
            else:
                exec(compile(ast.Module([node], type_ignores=[]), page, "exec"), namespace)
