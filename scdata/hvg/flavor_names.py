"""The HVG flavors by name, apart from their implementations.

The command line lists them in ``scdata hvg --flavor``; importing ``flavors`` for that would load
Numba (through the moment kernels) into every ``scdata`` command, ``ingest`` included: 0.3 s of a
driver's start-up for nothing.
"""

FLAVORS = ("dispersion", "seurat", "cell_ranger", "seurat_v3", "seurat_v3_paper")
