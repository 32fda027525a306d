"""The manifest: the single record of what the store has committed.

Rows ``[0, n_committed)`` of X (and of every obs column) are the store; anything beyond is scratch
left by a commit that did not finish. Readers and a resumed ingest only ever trust committed rows.

Stored as a small head document plus an append-only log, so a commit costs the same however
many experiments the store holds (a whole release is tens of thousands):

* ``uns/sczarr_manifest/zarr.json``: the head, a Zarr group document whose attributes hold the
  counters (version, committed rows, categories, runs…) and ``log_length``; replaced atomically,
  it is the commit;
* ``uns/sczarr_manifest/log``: a Zarr string array, one JSON entry per commit in its own chunk
  (the experiments it committed, the rejections it recorded). Entry ``i`` is written before the
  head that counts it, so entries past the head's ``log_length`` are scratch, rewritten by the
  next commit.

``read_manifest`` replays the log into one ``Manifest``. Stores written before the log (one
document, format 1) are read as they are; their next commit logs their lists once.
Writing it also rewrites the store's consolidated metadata, which carries a copy of the head
and of every array's shape (never of the log's entries): readers that open the store through
that copy see one commit.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, fields

from typing import TYPE_CHECKING

import numpy as np

from ..runtime import remote
from .layout import STRING_ATTRS, consolidate, open_array, open_root, scratch_view

if TYPE_CHECKING:
    import zarr

    from .writer import StoreWriter

MANIFEST_NAME = "uns/sczarr_manifest/zarr.json"
"""A Zarr group document whose attributes hold the head: one object, replaced atomically,
that Zarr, AnnData and xarray all recognise (a stray file in the store makes them warn)."""
LOG_NAME = "uns/sczarr_manifest/log"
FORMAT = "sczarr-manifest/2"
LEGACY_FORMAT = "sczarr-manifest/1"
"""One document holding every list (stores written before the log); read, and migrated by the next write."""
_LISTS = ("experiments", "rejected", "retried")

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
    log_length: int = 0
    """Log entries the head counts (what ``experiments``, ``rejected`` and ``retried`` replay from)."""
    _logged: tuple | None = field(default=None, repr=False, compare=False)
    """What the log holds already: (experiments, retried, ids of the rejected entries); None when
    the lists are not in the log yet (a new manifest, or one read from a format-1 document)."""
    _lists_read: bool = field(default=True, repr=False, compare=False)
    """False for a head read without replaying the log (``read_manifest(lists=False)``): its
    lists are empty, not the store's, and it must never be written back."""

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

    # ---- storage: head and log ------------------------------------------------------------------

    def head(self) -> dict:
        """The head's fields: everything but the lists the log holds."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)
                if f.name not in _LISTS and not f.name.startswith("_")}

    def log_entry(self) -> dict:
        """What changed in the lists since the log's last entry: appended experiments and
        ``retried`` entries, and the rejections dropped (by accession) and added. Lists changed in
        any other way (or never logged) are logged whole (``snapshot``)."""
        if self._logged is not None:
            n_experiments, n_retried, logged_rejected = self._logged
            now = {id(e) for e in self.rejected}
            survivors = [e for e in logged_rejected if id(e) in now]
            added = self.rejected[len(survivors):]
            before = {id(e) for e in logged_rejected}
            if (len(self.experiments) >= n_experiments and len(self.retried) >= n_retried
                    and all(a is b for a, b in zip(self.rejected, survivors))
                    and not any(id(e) in before for e in added)):
                kept = {id(e) for e in survivors}
                return {"experiments": self.experiments[n_experiments:], "retried": self.retried[n_retried:],
                        "rejected_dropped": [e["accession"] for e in logged_rejected if id(e) not in kept],
                        "rejected_added": added}
        return {"snapshot": True, **{name: getattr(self, name) for name in _LISTS}}

    def mark_logged(self) -> None:
        """The log now holds the lists as they are (the rejected entries are kept, not copied:
        what counts is which of them are still there)."""
        self._logged = (len(self.experiments), len(self.retried), list(self.rejected))

    def replay(self, entry: dict) -> None:
        """Apply one log entry (``log_entry``'s output) to the lists."""
        if entry.get("snapshot"):
            for name in _LISTS:
                setattr(self, name, list(entry[name]))
            return
        self.experiments += entry["experiments"]
        self.retried += entry["retried"]
        dropped = set(entry["rejected_dropped"])
        self.rejected = [e for e in self.rejected if e["accession"] not in dropped] + entry["rejected_added"]

    def head_json(self) -> bytes:
        return _document(self.head())

    def log_entry_json(self) -> str:
        """``log_entry`` as stored (URLs' credentials left out, as in the head)."""
        return remote.redact(json.dumps(self.log_entry(), sort_keys=True))

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "Manifest":
        """A head (format 2; its lists are empty until the log is replayed) or a whole format-1 document."""
        try:
            raw = json.loads(data)["attributes"]["sczarr_manifest"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{where} is not a sczarr manifest: {exc}") from exc
        if raw.get("format") not in (FORMAT, LEGACY_FORMAT):
            raise ValueError(f"{where} has format {raw.get('format')!r}; this sczarr reads {FORMAT!r} and {LEGACY_FORMAT!r}")
        known = set(cls.__dataclass_fields__) - {"_logged"}
        manifest = cls(**{k: v for k, v in raw.items() if k in known})
        if manifest.format == LEGACY_FORMAT:  # its lists are not in a log yet (``_logged`` stays None)
            manifest.format, manifest.log_length = FORMAT, 0
        else:
            manifest.mark_logged()
        return manifest


def _document(attributes: dict) -> bytes:
    document = {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {"encoding-type": "dict", "encoding-version": "0.1.0", "sczarr_manifest": attributes},
    }
    # URLs are recorded as given; any credentials they carry (user:password@, signed-URL or
    # token parameters) stay out of the store.
    return remote.redact(json.dumps(document, indent=1, sort_keys=True)).encode()


def manifest_url(store_url: str) -> str:
    return remote.join(store_url, MANIFEST_NAME)


def _log_array(store_url: str, create: bool, writer: "StoreWriter | None" = None):
    """The log array; with ``create``, an absent one is made (empty). A run's ``writer`` keeps it
    open (and lists it in the consolidated copy).

    Its document is written alone: ``zarr.create_array`` would also rewrite the parent groups'
    documents, the head among them, and a crash then would leave a store with no manifest."""
    if writer is not None and (log := writer.get(LOG_NAME)) is not None:
        return log
    try:
        log = open_array(store_url, LOG_NAME, mode="r+" if create else "r")
    except FileNotFoundError:
        if not create:
            raise
        import zarr
        from zarr.core.buffer import default_buffer_prototype

        template = zarr.create_array(zarr.storage.MemoryStore(), shape=(0,), chunks=(1,), dtype=str,
                                     dimension_names=("manifest_log",), attributes=STRING_ATTRS)
        document = template.metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes()
        remote.write_bytes_atomic(remote.join(store_url, LOG_NAME, "zarr.json"), document)
        log = open_array(store_url, LOG_NAME, mode="r+")
    if writer is not None:
        writer.add(LOG_NAME, log)
    return log


def read_manifest(store_url: str, lists: bool = True) -> Manifest | None:
    """The committed manifest, or None for a store that never committed.

    ``lists=False`` reads the head alone (committed rows, version, categories, runs), without
    replaying the log into ``experiments``, ``rejected`` and ``retried``: a reader that needs only
    the head saves a read per commit (the log keeps each entry in its own chunk; 125 of them took
    ~0.13 s of a fresh process's ``open_store`` on a 954k-cell store). Such a manifest cannot be
    written back."""
    url = manifest_url(store_url)
    data = remote.read_bytes(url)
    if data is None:
        return None
    manifest = Manifest.from_json(data, url)
    if manifest.log_length and not lists:
        manifest._lists_read = False
    elif manifest.log_length:
        log = scratch_view(_log_array(store_url, create=False), manifest.log_length)
        for i, text in enumerate(np.asarray(log[:], dtype=object)):
            try:
                entry = json.loads(text)
            except (TypeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{remote.join(store_url, LOG_NAME)}: entry {i} is not a manifest log entry: {exc}") from exc
            manifest.replay(entry)
        manifest.mark_logged()
    return manifest


class StoreError(ValueError):
    """The path is not a readable sczarr store."""


def open_committed(store: str, lists: bool = True) -> tuple["zarr.Group", Manifest]:
    """The store's root (read-only) and its committed manifest (its head alone unless ``lists``,
    see ``read_manifest``); StoreError if it never committed."""
    manifest = read_manifest(store, lists=lists)
    if manifest is None:
        raise StoreError(f"{store} has no manifest (uns/sczarr_manifest): not a sczarr store, "
                         "or its ingest never committed a round")
    return open_root(store, mode="r"), manifest


def write_manifest(store_url: str, manifest: Manifest, writer: "StoreWriter | None" = None) -> None:
    """Commit: append the lists' changes to the log (past the head: scratch until the head counts
    it), replace the head, then rewrite the consolidated metadata from the head and the arrays'
    current shapes. Each costs the same however many experiments are committed. A crash between
    head and copy leaves the copy one commit behind, never ahead: still a committed snapshot, and
    the next run's ``truncate`` rewrites it.

    ``writer``: a run's ``StoreWriter``, whose open nodes save re-reading every document for the
    copy."""
    if not manifest._lists_read:
        raise ValueError(f"the manifest of {remote.redact(store_url)} was read without its lists "
                         "(read_manifest(lists=False)): writing it would drop its experiments")
    entry = manifest.log_entry()
    logged = any(entry.get(k) for k in ("snapshot", "experiments", "retried", "rejected_dropped", "rejected_added"))
    log = None
    if logged:
        log = _log_array(store_url, create=True, writer=writer)
        i = manifest.log_length
        text = manifest.log_entry_json()
        scratch_view(log, i + 1)[i] = np.asarray([text], dtype=str)[0]
        manifest.log_length = i + 1
    head = manifest.head_json()
    remote.write_bytes_atomic(manifest_url(store_url), head)
    if log is not None:
        log.resize((manifest.log_length,))  # for other readers of the array; sczarr reads up to the head's count
    if writer is None:
        consolidate(open_root(store_url, mode="r+"))
    else:
        writer.replaced(MANIFEST_NAME.removesuffix("/zarr.json"), head)
        writer.consolidate()
    manifest.mark_logged()
