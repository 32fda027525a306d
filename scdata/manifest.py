"""The manifest: the single record of what the store has committed.

Rows ``[0, n_committed)`` of X (and of every obs column) are the store; anything beyond is scratch
left by a round that did not finish. The manifest is one JSON object replaced atomically after a
round's rows are durable, so readers and a resumed ingest only ever trust committed rows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from . import remote

MANIFEST_NAME = "uns/sczarr_manifest/zarr.json"
"""A Zarr group document whose attributes hold the manifest: one object, replaced atomically,
that Zarr, AnnData and xarray all recognise (a stray file in the store makes them warn)."""
FORMAT = "sczarr-manifest/1"


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
    runs: list[dict] = field(default_factory=list)
    categories: dict[str, int] = field(default_factory=dict)
    """Committed number of categories per categorical obs column (later ones are scratch)."""
    format: str = FORMAT

    def committed_accessions(self) -> set[str]:
        return {e["accession"] for e in self.experiments}

    def rejected_accessions(self) -> set[str]:
        return {e["accession"] for e in self.rejected}

    def to_json(self) -> bytes:
        document = {
            "zarr_format": 3,
            "node_type": "group",
            "attributes": {"encoding-type": "dict", "encoding-version": "0.1.0", "sczarr_manifest": asdict(self)},
        }
        return json.dumps(document, indent=1, sort_keys=True).encode()

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
    remote.write_bytes_atomic(manifest_url(store_url), manifest.to_json())
