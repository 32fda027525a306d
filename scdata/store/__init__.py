"""The store: its Zarr layout, the manifest and commit protocol, chunk codecs, int16 counts and its summary.

Public names are imported on first use (see ``scdata._lazy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "StoreLayout": "layout",
    "open_root": "layout",
    "open_array": "layout",
    "read_strings": "layout",
    "read_categories": "layout",
    "categorical_columns": "layout",
    "numeric_columns": "layout",
    "create_store": "layout",
    "consolidate": "layout",
    "close_remote_sessions": "layout",
    "Manifest": "manifest",
    "StoreError": "manifest",
    "StaleError": "manifest",
    "read_manifest": "manifest",
    "write_manifest": "manifest",
    "open_committed": "manifest",
    "StoreWriter": "writer",
    "ObsPart": "writer",
    "ChunkReader": "chunks",
    "ChunkWriter": "chunks",
    "CountsError": "int16_counts",
    "CountRepairs": "int16_counts",
    "StoredCounts": "int16_counts",
    "to_store_counts": "int16_counts",
    "store_info": "summary",
    "format_info": "summary",
}
_MOVED = {  # names the module scdata.store held before 0.2, and where they are now
    "STORE_FORMAT": "scdata.store.layout",
    "ARRAY_ATTRS": "scdata.store.layout",
    "STRING_ATTRS": "scdata.store.layout",
    "CATEGORICAL_ATTRS": "scdata.store.layout",
    "DICT_ATTRS": "scdata.store.layout",
    "OBS_STRING_COLUMNS": "scdata.store.layout",
    "OBS_NUMERIC_COLUMNS": "scdata.store.layout",
    "RetryingStore": "scdata.store.layout",
    "_REMOTE_FILESYSTEMS": "scdata.store.layout",
    "_zarr_store": "scdata.store.layout",
    "consolidated_document": "scdata.store.layout",
    "gene_axis_digest": "scdata.store.layout",
    "_string_array": "scdata.store.layout",
    "ensure_replaceable": "scdata.store.layout",
    "layout_of": "scdata.store.layout",
    "scratch_view": "scdata.store.layout",
    "row_array_paths": "scdata.store.layout",
    "row_arrays": "scdata.store.layout",
    "truncate": "scdata.store.layout",
    "drop_chunks_past": "scdata.store.layout",
    "store_nbytes": "scdata.store.layout",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, _MOVED)

if TYPE_CHECKING:  # for type checkers and IDEs
    from .layout import (
        StoreLayout,
        categorical_columns,
        close_remote_sessions,
        consolidate,
        create_store,
        numeric_columns,
        open_array,
        open_root,
        read_categories,
        read_strings,
    )
    from .manifest import Manifest, StaleError, StoreError, open_committed, read_manifest, write_manifest
    from .writer import ObsPart, StoreWriter
    from .chunks import ChunkReader, ChunkWriter
    from .int16_counts import CountRepairs, CountsError, StoredCounts, to_store_counts
    from .summary import format_info, store_info
