"""The manifest: the single record of what the store has committed.

Rows ``[0, n_committed)`` of X (and of every obs column) are the store; anything beyond is scratch
left by a round that did not finish. The manifest is one JSON object replaced atomically after a
round's rows are durable, so readers and a resumed ingest only ever trust committed rows.
Writing it also rewrites the store's consolidated metadata, which carries a copy of it and of
every array's shape: readers that open the store through that copy see one commit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from . import remote
from .store import consolidate, open_root

MANIFEST_NAME = "uns/sczarr_manifest/zarr.json"
"""A Zarr group document whose attributes hold the manifest: one object, replaced atomically,
that Zarr, AnnData and xarray all recognise (a stray file in the store makes them warn)."""
FORMAT = "sczarr-manifest/1"

IO = "io"
"""Rejection kind: the file could not be read as an h5ad (absent, truncated, unreadable or incomplete,
or the read failed on the way): a repaired or re-uploaded file may succeed, so a rerun tries it again."""
CONTENT = "content"
"""Rejection kind: the file reads but its data break the store's rules (negative or non-finite counts,
non-Ensembl or duplicated genes, shapes that disagree, no cells): retried only with ``--retry-rejected``."""
REJECTION_KINDS = (IO, CONTENT)
_LEGACY_IO_REASONS = ("missing object", "not a readable HDF5", "cannot read")
"""How the reasons of I/O rejections begin, for manifests written before rejections had a kind."""


def rejection_kind(entry: dict) -> str:
    """``IO`` or ``CONTENT`` for a ``Manifest.rejected`` entry (older entries: from their reason)."""
    kind = entry.get("kind")
    if kind in REJECTION_KINDS:
        return kind
    return IO if str(entry.get("reason", "")).startswith(_LEGACY_IO_REASONS) else CONTENT


class StaleError(RuntimeError):
    """Derived data was computed from an older manifest version than the store now has."""


@dataclass(slots=True)
class Manifest:
    """Committed state of a store; ``version`` counts commits."""

    version: int = 0
    n_committed: int = 0
    n_genes: int = 0
    gene_axis_digest: str = ""
    nnz: int = 0
    max_value: float = 0.0
    experiments: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    """Experiments that are not in the store, one entry each (its latest ``reason``, ``kind`` and
    ``attempts``)."""
    retried: list[dict] = field(default_factory=list)
    """Former ``rejected`` entries of experiments that a later run committed (with ``committed_at``)."""
    runs: list[dict] = field(default_factory=list)
    categories: dict[str, int] = field(default_factory=dict)
    """Committed number of categories per categorical obs column (later ones are scratch)."""
    format: str = FORMAT

    def committed_accessions(self) -> set[str]:
        return {e["accession"] for e in self.experiments}

    def rejected_accessions(self) -> set[str]:
        return {e["accession"] for e in self.rejected}

    def lasting_rejections(self, retry_content: bool) -> set[str]:
        """Rejected experiments a run leaves out: content faults unless ``retry_content``; I/O faults
        never (a rerun tries those again)."""
        if retry_content:
            return set()
        return {e["accession"] for e in self.rejected if rejection_kind(e) == CONTENT}

    def record_rejections(self, entries: list[dict]) -> None:
        """Add rejections; an experiment rejected again keeps one entry, its attempts counted."""
        previous = {e["accession"]: e for e in self.rejected}
        for entry in entries:
            before = previous.pop(entry["accession"], None)
            entry["attempts"] = 1 if before is None else before.get("attempts", 1) + 1
        self.rejected = list(previous.values()) + entries

    def record_commits(self, entries: list[dict]) -> None:
        """Append committed experiments; one that was rejected before moves to ``retried``."""
        self.experiments += entries
        committed = {e["accession"]: e["committed_at"] for e in entries}
        self.retried += [{**e, "committed_at": committed[e["accession"]]} for e in self.rejected if e["accession"] in committed]
        self.rejected = [e for e in self.rejected if e["accession"] not in committed]

    def to_json(self) -> bytes:
        document = {
            "zarr_format": 3,
            "node_type": "group",
            "attributes": {"encoding-type": "dict", "encoding-version": "0.1.0", "sczarr_manifest": asdict(self)},
        }
        # URLs are recorded as given; any credentials they carry (user:password@, signed-URL or
        # token parameters) stay out of the store.
        return remote.redact(json.dumps(document, indent=1, sort_keys=True)).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "Manifest":
        try:
            raw = json.loads(data)["attributes"]["sczarr_manifest"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{where} is not a sczarr manifest: {exc}") from exc
        if raw.get("format") != FORMAT:
            raise ValueError(f"{where} has format {raw.get('format')!r}; this sczarr reads {FORMAT!r}")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})


def manifest_url(store_url: str) -> str:
    return remote.join(store_url, MANIFEST_NAME)


def read_manifest(store_url: str) -> Manifest | None:
    """The committed manifest, or None for a store that never committed."""
    url = manifest_url(store_url)
    data = remote.read_bytes(url)
    return None if data is None else Manifest.from_json(data, url)


def write_manifest(store_url: str, manifest: Manifest) -> None:
    """Replace the manifest (the commit), then the consolidated metadata from it and the arrays'
    current shapes. A crash between the two leaves the copy one commit behind, never ahead:
    still a committed snapshot, and the next run's ``truncate`` rewrites it."""
    remote.write_bytes_atomic(manifest_url(store_url), manifest.to_json())
    consolidate(open_root(store_url, mode="r+"))
