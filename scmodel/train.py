"""``python -m scmodel.train``: train a diffusion model on a store's materialized HVG matrix.

    python -m scmodel.train --config mini-tiny --store data/demo/store.zarr --max-steps 200 --out runs/demo
    python -m scmodel.train --config mini-tiny --store ... --out runs/demo --resume       # exact continuation
    torchrun --nproc_per_node 2 -m scmodel.train --config mini-tiny --store ... --out runs/ddp
    python -m scmodel.train --config moe17b-tiny --store ... --out runs/moe               # DeepSpeed, CPU (gloo)
    torchrun --nproc_per_node 2 -m scmodel.train --config moe17b-tiny --set ep_size=2 ...  # expert parallel
    deepspeed --num_gpus 8 --module scmodel.train --config moe17b --store ... --out runs/moe17b

The command line only: parse -> build the config (a preset of ``scmodel.run.presets`` with the
flags and ``--set`` overrides applied) -> ``Trainer(...).fit()`` -> close. What the run writes
is described in ``scmodel.trainer``. ``TrainConfig``, ``CONFIGS`` and ``Trainer`` still import
from here.
"""

from __future__ import annotations

import argparse
import sys

from .run.config import TrainConfig
from .run.overrides import apply_overrides
from .run.presets import CONFIGS
from .trainer import Trainer


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The preset ``--config`` with the named flags, then every ``--set``, applied."""
    named = {"store": args.store, "out": args.out, "max_steps": args.max_steps, "batch_size": args.batch_size,
             "lr": args.lr, "num_workers": args.num_workers, "seed": args.seed, "eval_every": args.eval_every,
             "save_every": args.save_every, "init_from": args.init_from}
    return apply_overrides(CONFIGS[args.config], named, args.set)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scmodel.train", description="train a discrete diffusion model on a store")
    p.add_argument("--config", choices=sorted(CONFIGS), default="mini")
    p.add_argument("--store")
    p.add_argument("--out")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--save-every", type=int)
    p.add_argument("--init-from", help="fine-tune: start from this checkpoint's weights")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/checkpoint.pt")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override any TrainConfig field (diffusion.X too)")
    p.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # the deepspeed launcher's; LOCAL_RANK is read
    args = p.parse_args(argv)
    config = build_config(args)
    trainer = Trainer(config, resume=args.resume)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return 0


__all__ = ["CONFIGS", "TrainConfig", "Trainer", "build_config", "main"]

if __name__ == "__main__":
    sys.exit(main())
