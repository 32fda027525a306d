"""``scdata`` command line: demo-bucket, ingest, hvg, info, vcc."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .source import bucket as src


def _demo_bucket(args) -> int:
    from .source.demo_bucket import DemoConfig, write_demo_bucket

    config = DemoConfig(
        n_experiments=args.experiments, min_cells=args.min_cells, max_cells=args.max_cells, n_genes=args.genes,
        release=args.release, seed=args.seed, workers=args.workers or 0,
    )
    root = write_demo_bucket(args.dir, config)
    print(f"Wrote {config.n_experiments} synthetic experiments; use --source {root}")
    return 0


def _ingest(args) -> int:
    from .runtime.cluster import ClusterError
    from .ingest.driver import IngestError, ingest
    from .runtime.remote import SourceError, redact

    try:
        config = _ingest_config(args)
    except ValueError as exc:  # contradictory options: say which, no traceback
        print(f"scdata ingest: {exc}", file=sys.stderr)
        return 2
    try:
        ingest(config)
    except (IngestError, ClusterError, src.MetadataError, SourceError) as exc:
        print(f"scdata ingest: {redact(str(exc))}", file=sys.stderr)
        return 1
    return 0


def _ingest_config(args):
    from .ingest.driver import IngestConfig
    from .store.layout import StoreLayout

    chunks = {"chunk_cells": args.chunk_cells, "chunk_genes": args.chunk_genes, "blocksize": args.blocksize}
    layout = StoreLayout(**{k: v for k, v in chunks.items() if v is not None})
    return IngestConfig(
        source=src.SourceConfig(args.source, args.feature_type, args.organism),
        store=args.store,
        cell_count=args.cell_count,
        batch_size=args.batch_size,
        round_cells=args.round_cells or None,
        seed=args.seed,
        filters=src.parse_filters(args.filter),
        cluster=_cluster(args),
        keep_raw=args.keep_raw,
        raw_dir=args.raw_dir,
        scratch_dir=args.scratch_dir,
        layout=layout,
        genes_file=args.genes,
        on_error=args.on_error,
        retry_rejected=args.retry_rejected,
        progress=not args.no_progress,
    )


def _info(args) -> int:
    from .store.manifest import StoreError
    from .store.summary import format_info, store_info

    try:
        info = store_info(args.store)
    except StoreError as exc:
        print(f"scdata info: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        print(format_info(info))
    return 0


def _cluster(args):
    from .runtime.cluster import ClusterConfig

    return ClusterConfig(scheduler=args.scheduler, workers=args.workers, processes=getattr(args, "processes", True),
                         tls_ca_file=args.tls_ca_file, tls_cert=args.tls_cert, tls_key=args.tls_key)


def _add_scheduler_options(p: argparse.ArgumentParser, example: str = "") -> None:
    p.add_argument("--scheduler", default=None, help=f"address of an existing Dask scheduler{example}")
    p.add_argument("--tls-ca-file", default=None,
                   help="tls:// scheduler: PEM of the CA that signed the cluster's certificates")
    p.add_argument("--tls-cert", default=None, help="tls:// scheduler: this client's certificate (PEM)")
    p.add_argument("--tls-key", default=None,
                   help="tls:// scheduler: this client's private key (PEM), unless in --tls-cert")


def _hvg(args) -> int:
    if args.process_vcc:
        if not args.vcc_data_path:
            print("scdata hvg: --process-vcc needs --vcc-data-path", file=sys.stderr)
            return 2
        import os

        store = args.vcc_store or os.path.join(os.path.dirname(os.path.abspath(args.store)), "vcc.zarr")
        return _run_vcc_import(_vcc_config(args, store, args.store))
    from .runtime.cluster import ClusterError
    from .store.manifest import StoreError
    from .hvg.flavors import HVGConfig
    from .hvg.job import HVGJob, run_hvg_job

    try:
        config = HVGConfig(flavor=args.flavor, n_top_genes=args.n_hvgs, batch_key=args.batch_key,
                           min_cells_pct=args.min_cells_pct, target_sum=args.target_sum, span=args.span,
                           n_bins=args.n_bins)
        run_hvg_job(HVGJob(store=args.store, config=config, output_dir=args.output_dir, force=args.force,
                           materialize=args.materialize, cluster=_cluster(args)))
    except (StoreError, ValueError, FileNotFoundError, ClusterError) as exc:
        print(f"scdata hvg: {exc}", file=sys.stderr)
        return 1
    return 0


def _vcc_config(args, store: str, genes_from: str | None):
    from .store.layout import StoreLayout
    from .vcc.importer import VCCImportConfig

    layout = StoreLayout(**{k: v for k, v in (("chunk_cells", getattr(args, "chunk_cells", None)),) if v})
    return VCCImportConfig(input=args.vcc_data_path, store=store, genes_from=genes_from,
                           gene_source=getattr(args, "source", None), control_label=args.control_label,
                           target_column=args.target_column, guide_column=args.guide_column,
                           batch_column=args.batch_column, sign=args.sign, layout=layout, cluster=_cluster(args),
                           hvg_output_dir=args.output_dir)


def _run_vcc_import(config) -> int:
    from .runtime.cluster import ClusterError
    from .vcc.importer import VCCImportError, import_vcc

    try:
        import_vcc(config)
    except (VCCImportError, FileNotFoundError, ClusterError) as exc:
        print(f"scdata vcc import: {exc}", file=sys.stderr)
        return 1
    return 0


def _vcc_import(args) -> int:
    return _run_vcc_import(_vcc_config(args, args.store, args.genes_from))


def _vcc_demo(args) -> int:
    from .vcc.synthetic import VCCDemoConfig, write_vcc_demo

    config = VCCDemoConfig(n_genes=args.genes, n_train_perturbations=args.perturbations,
                           n_validation_perturbations=args.validation_perturbations, seed=args.seed,
                           cells_per_perturbation=tuple(args.cells), n_control_cells=args.controls,
                           cell_type=args.cell_type, regulator_fraction=args.regulator_fraction, axis_seed=args.axis_seed)
    paths = write_vcc_demo(args.dir, config)
    print(f"Wrote {', '.join(sorted(paths))} into {args.dir}")
    return 0


def _add_vcc_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--control-label", default="non-targeting", help="target_gene value of the control cells")
    p.add_argument("--target-column", default="target_gene")
    p.add_argument("--guide-column", default="guide_id")
    p.add_argument("--batch-column", default="batch")
    p.add_argument("--sign", type=int, choices=(-1, 1), default=-1, help="-1: knockdown (CRISPRi), +1: activation")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scdata", description="scBaseCount experiments in one chunked Zarr store")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo-bucket", help="write a synthetic offline copy of the bucket layout")
    demo.add_argument("dir", help="directory to write (the release root is DIR/scbasecount/<release>)")
    demo.add_argument("--experiments", type=int, default=12)
    demo.add_argument("--min-cells", type=int, default=600)
    demo.add_argument("--max-cells", type=int, default=4000)
    demo.add_argument("--genes", type=int, default=36_601)
    demo.add_argument("--release", choices=src.RELEASES, default=src.DEFAULT_RELEASE)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--workers", type=int, default=0, help="generating processes (0: one per core)")
    demo.set_defaults(func=_demo_bucket)

    ing = sub.add_parser("ingest", help="ingest experiments into the store (resumes an earlier run)")
    ing.add_argument("--source", default=src.DEFAULT_SOURCE, help="release root: gs://…/scbasecount/<release>, a mirror, any fsspec URL")
    ing.add_argument("--feature-type", default=src.DEFAULT_FEATURE_TYPE, choices=src.FEATURE_TYPES)
    ing.add_argument("--organism", default=src.DEFAULT_ORGANISM)
    ing.add_argument("--cell-count", type=int, default=100_000, help="cell budget; whole experiments are taken")
    ing.add_argument("--store", "--output-dir", dest="store", default="data/scRNA/store.zarr")
    ing.add_argument("--batch-size", type=int, default=256,
                     help="at most this many experiments per commit (what is in flight follows the cluster's "
                          "threads and memory, not this)")
    ing.add_argument("--round-cells", type=int, default=1_000_000,
                     help="at most this many cells per commit (0: no bound)")
    ing.add_argument("--genes", default=None, metavar="FILE",
                     help="gene axis of a new store: Ensembl IDs, one per line, optionally ',symbol' "
                          "(default: the gene table of the first few readable experiments)")
    ing.add_argument("--workers", type=int, default=None, help="LocalCluster worker processes (default: cores)")
    _add_scheduler_options(ing, ", e.g. tcp://host:8786 or tls://host:8786")
    ing.add_argument("--seed", type=int, default=42)
    ing.add_argument("--filter", action="append", metavar="COLUMN=VALUE", help="keep experiments whose metadata matches (repeatable)")
    ing.add_argument("--keep-raw", action="store_true", help="keep downloaded h5ad files in --raw-dir")
    ing.add_argument("--raw-dir", default=None, help="where --keep-raw keeps files (default: raw/ beside the store)")
    ing.add_argument("--scratch-dir", default=None, help="workers' download scratch (default: their temp dir)")
    ing.add_argument("--chunk-cells", type=int, default=None, help="rows per chunk of a new store")
    ing.add_argument("--chunk-genes", type=int, default=None, help="genes per chunk of a new store")
    ing.add_argument("--blocksize", type=int, default=None,
                     help="bytes per Blosc block of a new store's X (0: Blosc's choice; default: StoreLayout's)")
    ing.add_argument("--on-error", choices=("skip", "raise"), default="skip",
                     help="a bad experiment is recorded as rejected (skip) or stops the run (raise)")
    ing.add_argument("--retry-rejected", action="store_true",
                     help="also retry experiments rejected for their content (I/O rejections are retried by every run)")
    ing.add_argument("--no-progress", action="store_true")
    ing.set_defaults(func=_ingest)

    from .hvg.flavor_names import FLAVORS

    hvg = sub.add_parser("hvg", help="gene statistics and highly variable genes (scanpy's flavors, out of core)")
    hvg.add_argument("--store", default="data/scRNA/store.zarr")
    hvg.add_argument("--n-hvgs", type=int, default=2000)
    hvg.add_argument("--flavor", choices=FLAVORS, default="seurat_v3",
                     help="seurat_v3 (counts, default), seurat/cell_ranger (normalize_total+log1p), dispersion (the seed's)")
    hvg.add_argument("--batch-key", default=None, help="categorical obs column for batch-aware selection, e.g. srx_accession")
    hvg.add_argument("--min-cells-pct", type=float, default=0.1, help="dispersion flavor: min %% of cells expressing a gene")
    hvg.add_argument("--target-sum", type=float, default=1e4)
    hvg.add_argument("--span", type=float, default=0.3, help="seurat_v3 loess span")
    hvg.add_argument("--n-bins", type=int, default=20, help="seurat mean bins")
    hvg.add_argument("--output-dir", default=None, help="hvg_info.json and hvg_analysis.png (default: beside the store)")
    hvg.add_argument("--force", action="store_true", help="recompute even when the results are up to date")
    hvg.add_argument("--materialize", action="store_true", help="write obsm/X_hvg (cells x HVGs) for fast training reads")
    hvg.add_argument("--workers", type=int, default=None, help="LocalCluster threads (default: cores)")
    hvg.add_argument("--processes", action="store_true",
                     help="run the LocalCluster as worker processes (default: threads of one process, faster here)")
    _add_scheduler_options(hvg)
    hvg.add_argument("--process-vcc", action="store_true",
                     help="import --vcc-data-path onto this store's gene axis and HVGs (the seed's spelling of `scdata vcc import`)")
    hvg.add_argument("--vcc-data-path", default=None, help="adata_Training.h5ad (path or URL) for --process-vcc")
    hvg.add_argument("--vcc-store", default=None, help="where --process-vcc writes (default: vcc.zarr beside --store)")
    _add_vcc_options(hvg)
    hvg.set_defaults(func=_hvg)

    vcc = sub.add_parser("vcc", help="perturbation data (Virtual Cell Challenge): import, synthetic demo files")
    vcc_sub = vcc.add_subparsers(dest="vcc_command", required=True)
    imp = vcc_sub.add_parser("import", help="import a perturbation h5ad into a store on a pretraining store's gene axis")
    imp.add_argument("--input", dest="vcc_data_path", required=True, help="adata_Training.h5ad: path, gs:// or fsspec URL")
    imp.add_argument("--store", required=True, help="the perturbation store to write (resumes an earlier import)")
    imp.add_argument("--genes-from", default=None, help="the scBaseCount store the model was pretrained on")
    imp.add_argument("--source", default=None, help="without --genes-from: a release root whose gene table is the axis")
    imp.add_argument("--output-dir", default=None, help="where the pretraining store's hvg_info.json is (default: beside it)")
    imp.add_argument("--chunk-cells", type=int, default=None)
    imp.add_argument("--workers", type=int, default=None)
    _add_scheduler_options(imp)
    _add_vcc_options(imp)
    imp.set_defaults(func=_vcc_import)
    dem = vcc_sub.add_parser("demo", help="write synthetic challenge files with known effects")
    dem.add_argument("dir")
    dem.add_argument("--genes", type=int, default=2000)
    dem.add_argument("--perturbations", type=int, default=16, help="perturbations with training cells")
    dem.add_argument("--validation-perturbations", type=int, default=8,
                     help="held-out perturbations (pert_counts_Validation.csv, adata_Validation_truth.h5ad)")
    dem.add_argument("--cells", type=int, nargs=2, default=(60, 140), metavar=("MIN", "MAX"),
                     help="cells per perturbation")
    dem.add_argument("--controls", type=int, default=800, help="control cells")
    dem.add_argument("--cell-type", default="epithelial cell", help="the screen's cell type (one of the atlas's)")
    dem.add_argument("--regulator-fraction", type=float, default=0.7, help="share of targets that are regulators")
    dem.add_argument("--seed", type=int, default=0)
    dem.add_argument("--axis-seed", type=int, default=0,
                     help="--seed of the demo bucket whose genes and regulatory model the screen shares")
    dem.set_defaults(func=_vcc_demo)

    info = sub.add_parser("info", help="summary of a store (the seed's config.json fields)")
    info.add_argument("--store", default="data/scRNA/store.zarr")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # gcsfs logs a traceback per failed request; sczarr's own error names the object
        logging.getLogger("gcsfs").setLevel(logging.CRITICAL)
    try:
        return args.func(args)
    finally:
        from .store.layout import close_remote_sessions

        close_remote_sessions()


if __name__ == "__main__":
    sys.exit(main())
