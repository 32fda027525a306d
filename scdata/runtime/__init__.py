"""Where scdata's jobs run: remote filesystems (fsspec/gcsfs), the Dask cluster, the figure process.

Public names are imported on first use (see ``scdata._lazy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "ClusterConfig": "cluster",
    "ClusterError": "cluster",
    "dask_client": "cluster",
    "SourceError": "remote",
    "MissingObjectError": "remote",
    "AccessError": "remote",
    "redact": "remote",
    "url_to_fs": "remote",
    "storage_options": "remote",
    "with_retries": "remote",
    "DrawProcess": "figure_process",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs
    from .cluster import ClusterConfig, ClusterError, dask_client
    from .remote import AccessError, MissingObjectError, SourceError, redact, storage_options, url_to_fs, with_retries
    from .figure_process import DrawProcess
