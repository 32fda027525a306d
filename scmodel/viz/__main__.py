"""``python -m scmodel.viz``: the model-visualization files for a model of the registry.

    python -m scmodel.viz --config conditional --out viz/conditional
    python -m scmodel.viz --config mini-tiny --checkpoint runs/demo/checkpoint.pt --store data/demo/store.zarr --out viz/demo
"""

from __future__ import annotations

import argparse
import sys

from scmodel.models import MODELS

from . import visualize


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scmodel.viz", description="architecture, parameter, FLOP and diffusion "
                                "figures of a model, measured on the live module tree")
    p.add_argument("--config", choices=sorted(MODELS), help="model of scmodel.models.MODELS (optional with --checkpoint)")
    p.add_argument("--out", required=True, help="directory for the files")
    p.add_argument("--checkpoint", help="checkpoint.pt of `python -m scmodel.train`: adds the trained model's figures")
    p.add_argument("--store", help="store with materialized HVGs: the diffusion figure uses its cells")
    p.add_argument("--batch", type=int, default=1, help="cells in the measured training step (default 1)")
    p.add_argument("--genes", type=int, help="gene positions in the measured step (default: all of the model's)")
    p.add_argument("--sample-cells", type=int, default=4, help="cells drawn by the sampler / read from the store")
    p.add_argument("--sample-genes", type=int, default=256, help="gene positions sampled (the first ones)")
    p.add_argument("--no-sweeps", action="store_true", help="skip the FLOP/activation sweeps over positions and batch")
    args = p.parse_args(argv)
    if args.config is None and args.checkpoint is None:
        p.error("give --config or --checkpoint")
    visualize(args.config, args.out, checkpoint=args.checkpoint, store=args.store, batch=args.batch, genes=args.genes,
              sample_cells=args.sample_cells, sample_genes=args.sample_genes, sweeps=not args.no_sweeps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
