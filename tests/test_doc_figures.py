"""Every measured figure the README and the docs quote comes from a committed results file.

A figure is a decimal number in prose or a table (``0.198``, ``5.29x``, ``17.4 GiB``); code
(fenced blocks and inline spans) and version numbers (``Python 3.11``) are not figures. A page
is cut into sections at its headings and at paragraphs that open in bold (the performance page's
"**Ingest** (...)"); a section cites results files by name (``bench_ingest.md``,
``benchmarks/bench_hvg.py``, ``bench_query_100000.json``...), and every figure in it must be one
of the numbers those files hold (``benchmarks/results/NAME.{md,json}`` and ``NAME_*``), at the
precision the page gives, or that number as a percentage or in GiB / GB. A figure with no results
file behind it fails the test, naming the page, the section and the figure.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", *sorted(os.path.join("docs", p) for p in os.listdir(os.path.join(ROOT, "docs")) if p.endswith(".md"))]
CITATION = re.compile(r"\b((?:bench|scale|plan)_[A-Za-z0-9_]+)\.(?:md|json|py)\b")
FIGURE = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.]*\d)")
VERSION = re.compile(r"(?:Python|python|version|release|arc-state|scvi-tools|torch|cell-eval|annbatch|tiledbsoma|"
                     r"TileDB-SOMA|zarr|numpy|anndata|scanpy|DeepSpeed|deepspeed)[ =]v?$")
SECTION = re.compile(r"\n(?=#{1,4} |\*\*[A-Z])")
SCALES = (1.0, 100.0, 1 / 2**30, 1e-9)
"""A results file's number may be quoted as is, as a percentage, or bytes as GiB / GB."""
SUFFIXES = {"k": 1e-3, "M": 1e-6, " MB": 1e-6, " MiB": 1 / 2**20}
"""Thousands and millions (``15.4k`` cells), and bytes as MB / MiB."""


@functools.cache
def numbers_of(name: str) -> frozenset[float]:
    files = [p for ext in ("md", "json") for p in (glob.glob(os.path.join(ROOT, "benchmarks", "results", f"{name}.{ext}"))
                                                    + glob.glob(os.path.join(ROOT, "benchmarks", "results", f"{name}_*.{ext}")))]
    values = set()
    for path in files:
        with open(path) as f:
            text = f.read().replace(",", "")
        # unsigned: a page's minus sign sits outside the figure it matches
        values.update(float(m.group()) for m in re.finditer(r"\d+(?:\.\d+)?(?:[eE]-?\d+)?", text))
    return frozenset(values)


def backed(figure: str, names: set[str], after: str = "") -> bool:
    """Whether ``figure`` (followed by the text ``after``) rounds from a number of the files ``names``."""
    decimals = len(figure.split(".")[1])
    value, tolerance = float(figure), 0.5 * 10**-decimals + 1e-9
    scales = [*SCALES, *(f for suffix, f in SUFFIXES.items() if after.startswith(suffix))]
    return any(abs(round(v * s, decimals) - value) < tolerance for n in names for v in numbers_of(n) for s in scales)


def sections(page: str) -> list[tuple[str, set[str], str]]:
    """(first line, cited results names, prose without code) of each section of ``page``; a
    bold-led paragraph also inherits what its heading's own text cites."""
    with open(os.path.join(ROOT, page)) as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    out, heading_cites = [], set()
    for part in SECTION.split(text):
        cites = set(CITATION.findall(part))
        if part.startswith("#"):
            heading_cites = cites
        else:
            cites |= heading_cites
        out.append((part.strip().splitlines()[0][:70] if part.strip() else "", cites, re.sub(r"`[^`\n]*`", "", part)))
    return out


def unbacked(page: str) -> list[str]:
    misses = []
    for title, cites, prose in sections(page):
        for m in FIGURE.finditer(prose):
            if VERSION.search(prose[max(0, m.start() - 14): m.start()]):
                continue
            if page.endswith("changelog.md") and prose[: m.start()].rfind("\n") == prose[: m.start()].rfind("\n## "):
                continue  # a release heading
            if not backed(m.group(), cites, prose[m.end(): m.end() + 4]):
                misses.append(f"{m.group()} in '{title}' (cites {sorted(cites) or 'no results file'})")
    return misses


@pytest.mark.parametrize("page", PAGES)
def test_every_figure_comes_from_a_results_file_the_section_cites(page):
    misses = unbacked(page)
    assert not misses, f"{page}: figures with no results file behind them:\n  " + "\n  ".join(misses)


def test_the_check_catches_a_figure_that_is_not_in_the_cited_file(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("# Loader\n\nAt 2.64x annbatch (`bench_loader.md`), and 9.87x nowhere.\n\n"
                    "**Uncited** a figure of 1.23 with no file; Python 3.11 is a version.\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    os.makedirs(tmp_path / "benchmarks" / "results")
    (tmp_path / "benchmarks" / "results" / "bench_loader.md").write_text("| ratio | 2.6412 |\n")
    numbers_of.cache_clear()
    try:
        misses = unbacked("page.md")
    finally:
        numbers_of.cache_clear()
    assert [m.split(" ")[0] for m in misses] == ["9.87", "1.23"], misses
