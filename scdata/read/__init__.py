"""Reading a store: the lazy labelled xarray view, AnnData on request, and X's lazy chunk reader.

Public names are imported on first use (see ``scdata._lazy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "open_store": "xarray_view",
    "to_anndata": "xarray_view",
    "isel": "xarray_view",
    "obs_columns": "xarray_view",
    "DirectX": "lazy_counts",
    "as_dask": "lazy_counts",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs
    from .xarray_view import isel, obs_columns, open_store, to_anndata
    from .lazy_counts import DirectX, as_dask
