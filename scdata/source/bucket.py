"""The scBaseCount bucket layout: releases, metadata tables, experiment selection.

Layout under a release root (the live bucket, a ``gsutil rsync`` mirror, or the demo bucket)::

    metadata/<feature>/<organism>/sample_metadata.parquet
    metadata/<feature>/<organism>/obs_metadata.parquet
    h5ad/<feature>/<organism>/<SRX>.h5ad

``file_path`` in the metadata is an absolute ``gs://`` URL of wherever the data was published;
a mirror must not follow it, so every h5ad is resolved relative to the chosen source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

from ..runtime import remote

LIVE_BUCKET = "gs://arc-institute-virtual-cell-atlas/scbasecount"
RELEASES = ("2025-02-25", "2026-01-12")
DEFAULT_RELEASE = RELEASES[-1]
DEFAULT_SOURCE = f"{LIVE_BUCKET}/{DEFAULT_RELEASE}"
RETIRED_BUCKETS = ("gs://arc-scbasecount", "gs://arc-ctc-scbasecamp")
FEATURE_TYPES = ("Gene", "GeneFull", "GeneFull_ExonOverIntron", "GeneFull_Ex50pAS", "Velocyto")
DEFAULT_FEATURE_TYPE = "GeneFull_Ex50pAS"
DEFAULT_ORGANISM = "Homo_sapiens"

SAMPLE_COLUMNS_2025 = (
    "entrez_id", "srx_accession", "file_path", "obs_count", "lib_prep", "tech_10x", "cell_prep",
    "organism", "tissue", "disease", "perturbation", "cell_line", "czi_collection_id", "czi_collection_name",
)
SAMPLE_COLUMNS_2026 = SAMPLE_COLUMNS_2025 + (
    "tissue_ontology_term_id", "disease_ontology_term_id", "antibody_derived_tag",
)
REQUIRED_COLUMNS = ("srx_accession", "file_path", "obs_count")
CELL_METADATA_COLUMNS = (
    "tissue", "tech_10x", "disease", "perturbation", "cell_line", "lib_prep", "cell_prep", "organism",
    "tissue_ontology_term_id", "disease_ontology_term_id",
)
"""Experiment-level columns copied onto every cell of the store (when the release has them)."""

_RELEASE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


class MetadataError(ValueError):
    """The sample metadata table is unusable (the message names the table and the fault)."""


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """Where experiments come from: a release root plus feature type and organism."""

    source: str = DEFAULT_SOURCE
    feature_type: str = DEFAULT_FEATURE_TYPE
    organism: str = DEFAULT_ORGANISM

    def __post_init__(self) -> None:
        if self.feature_type not in FEATURE_TYPES:
            raise ValueError(f"feature type {self.feature_type!r} is not one of {', '.join(FEATURE_TYPES)}")
        if self.source.rstrip("/").startswith(RETIRED_BUCKETS):
            raise ValueError(
                f"{self.source} is a retired bucket (gone since 2026-03-31); use "
                f"{LIVE_BUCKET}/<release> (releases: {', '.join(RELEASES)})"
            )

    @property
    def release(self) -> str:
        """The release date in the source path, or 'unknown' for a renamed mirror."""
        found = _RELEASE_RE.findall(self.source)
        return found[-1] if found else "unknown"

    @property
    def metadata_dir(self) -> str:
        return remote.join(self.source, "metadata", self.feature_type, self.organism)

    @property
    def sample_metadata_url(self) -> str:
        return remote.join(self.metadata_dir, "sample_metadata.parquet")

    @property
    def obs_metadata_url(self) -> str:
        return remote.join(self.metadata_dir, "obs_metadata.parquet")

    def h5ad_url(self, file_path: str, accession: str) -> str:
        """Resolve an experiment's h5ad under this source, never via the absolute URL."""
        marker = "/h5ad/"
        if isinstance(file_path, str) and marker in file_path:
            return remote.join(self.source, "h5ad", file_path.split(marker, 1)[1])
        return remote.join(self.source, "h5ad", self.feature_type, self.organism, f"{accession}.h5ad")


@dataclass(frozen=True, slots=True)
class Experiment:
    """One selected experiment: where to read it and its sample metadata."""

    accession: str
    url: str
    obs_count: int
    metadata: dict = field(default_factory=dict, hash=False, compare=False)


def read_sample_metadata(config: SourceConfig) -> pd.DataFrame:
    """The release's sample table, checked for the columns selection relies on."""
    url = config.sample_metadata_url
    data = remote.read_bytes(url)
    if data is None:
        raise MetadataError(
            f"no sample metadata at {url}: is {config.source} a release root "
            f"(…/scbasecount/<release>) with feature type {config.feature_type} and organism {config.organism}?"
        )
    import io

    try:
        table = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise MetadataError(f"{url} is not a readable parquet file: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise MetadataError(f"{url} lacks required columns {missing}; it has {list(table.columns)}")
    dupes = table["srx_accession"][table["srx_accession"].duplicated()].unique()
    if len(dupes):
        raise MetadataError(f"{url}: duplicate srx_accession values {list(dupes[:5])} (each experiment must appear once)")
    return table


def parse_filters(items: list[str] | tuple[str, ...] | None) -> dict[str, list[str]]:
    """``["tissue=blood", "tissue=lung", "disease=healthy"]`` -> {column: allowed values}."""
    out: dict[str, list[str]] = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"filter {item!r} must look like column=value")
        key, value = item.split("=", 1)
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def seeded_order(
    table: pd.DataFrame,
    config: SourceConfig,
    seed: int = 42,
    filters: dict[str, list[str]] | None = None,
) -> list[Experiment]:
    """Every experiment that passes ``filters``, in the order the seed's shuffle gives them.

    Selection takes experiments from the front of this order, and a run that rejects some tops
    up further along the same order."""
    for column, values in (filters or {}).items():
        if column not in table.columns:
            raise MetadataError(f"cannot filter on {column!r}: the sample table has {list(table.columns)}")
        table = table[table[column].astype(str).isin(values)]
    shuffled = table.sample(frac=1.0, random_state=seed)
    order = []
    for row in shuffled.to_dict("records"):
        accession = str(row["srx_accession"])
        metadata = {k: _plain(v) for k, v in row.items()}
        order.append(Experiment(accession, config.h5ad_url(row["file_path"], accession), int(row["obs_count"]), metadata))
    return order


def take_budget(order: list[Experiment], cell_count: int, excluded: set[str] | frozenset[str] = frozenset()) -> list[Experiment]:
    """Whole experiments from the front of ``order``, skipping ``excluded``, until their cells
    reach ``cell_count``.

    Cells are counted from the metadata (``obs_count``), not from what the files turn out to
    hold, so the choice depends only on the order, the budget and the exclusions: a run that
    learns of rejections round by round, or resumes after a crash, ends with the same experiments.
    """
    if cell_count <= 0:
        raise ValueError(f"cell count must be positive, got {cell_count}")
    chosen: list[Experiment] = []
    total = 0
    for exp in order:
        if total >= cell_count:
            break
        if exp.accession in excluded:
            continue
        chosen.append(exp)
        total += exp.obs_count
    return chosen


def select_experiments(
    table: pd.DataFrame,
    config: SourceConfig,
    cell_count: int,
    seed: int = 42,
    filters: dict[str, list[str]] | None = None,
) -> list[Experiment]:
    """Shuffle with ``seed`` and take whole experiments until ``cell_count`` cells are reached.

    This is the seed pipeline's rule, so the same seed and count give the same experiments
    (and a larger count extends the same list, which is how a store grows).
    """
    return take_budget(seeded_order(table, config, seed, filters), cell_count)


def _plain(value):
    """JSON-friendly scalar (numpy and pandas missing values become None)."""
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(value, "item"):
        return value.item()
    return value
