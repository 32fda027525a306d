"""Generated cells by the generative-model field's protocol: our models beside scVI and the
no-model baselines, on the same held-out cells in one run.

    bash benchmarks/baselines/setup_scvi.sh      # once: scvi-tools in its own venv
    python benchmarks/bench_generation.py                   # held-out experiments
    python benchmarks/bench_generation.py --split cell      # the field's split: held-out cells
    python benchmarks/bench_generation.py --split cell --models gen-cpu --tune --seeds 0   # sampler screen

The store (``benchmarks/.work/generation/store.zarr`` unless ``--store``) is built on first use,
from a synthetic bucket that is not the demo's: ``scdata demo-bucket`` with 12 experiments of
1,000-3,000 cells (seed 12), every cell ingested, 2,000 seurat_v3 HVGs materialized.

For each model of ``--models`` (a ``python -m scmodel.train`` preset plus overrides) the script
trains it on the store's training cells, samples cells with ``python -m scmodel.generate`` at
three seeds (a row per sampler spec, ``key=value,...`` of ``SAMPLER_OPTIONS``: the model's own in
``MODELS``, or ``--samplers``), and scores them against real held-out cells, beside:

* scVI (scvi-tools 1.4.2, its defaults; trained on the same training cells and genes, once per
  seed): cells from its prior (z ~ N(0, I), library sizes of training cells, count draws), and its
  posterior-predictive reconstructions of the held-out cells (the optimistic row: scVI sees them);
* per-gene marginals: every gene's count drawn independently from the training cells' counts;
* a model's cell states alone (models with ``n_states``): a state drawn by its training frequency,
  then every gene drawn independently from the training cells of that state: the mixture the
  model is conditioned on, without the model (what the diffusion model adds is the difference);
* gene-shuffled: held-out cells with every gene permuted across cells (co-expression removed);
* real: the other half of the held-out cells (the floor: two samples of one distribution);
* real training cells: what a model that reproduced its training cells exactly would score.
  With ``--split experiment`` (whole experiments held out) the held-out experiments differ from the
  training ones (tissues, technologies, depth), so this row, not the floor, is the best a model of
  the training experiments can be expected to do. With ``--split cell`` (a share of every
  experiment's cells held out: how scVI, CFGen and scLDM are scored) it is near the floor.

Every set is raw counts over the model's genes; all are normalized the same way (each cell to
1e4 over those genes, log1p) and projected on 30 PCs fitted on training cells, where
``scmodel.evaluate.distribution`` computes 1-NN leave-one-out accuracy (0.5: indistinguishable),
W1/W2, CFGen's RBF MMD and precision / recall / density / coverage. Each set has as many cells
as the reference half. Results: ``benchmarks/results/bench_generation.{json,md}`` (held-out
experiments) and ``bench_generation_cells.{json,md}`` (held-out cells).

``--tune`` scores against a third share of the held-out cells instead (the tuning cells, apart
from the reference and the floor; ``TUNING_SAMPLERS`` by default, no scVI) and writes
``..._tuning.{json,md}``: sampler settings are chosen there and reported on the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.common import WORK, md_table, run_checked, run_measured, write_results  # noqa: E402

MODELS = {  # name -> (preset, --set overrides, training steps[, samplers, a row each; default: the run's own])
    "mini-tiny": ("mini-tiny", [], 400),  # the demo's recipe
    "mini-tiny, 3000 steps": ("mini-tiny", [], 3000),  # longer training alone
    # the earlier gen-cpu recipes, each a step of the current one (see docs/generation.md):
    # longer training and 16 bins, no cell states, fp32
    "gen-cpu, no states": ("gen-cpu", ["n_states=0", "state_prior=false", "bf16=off", "programs_cells=50000"], 3000,
                           ("bf16=off",)),
    # + 64 cell states, bf16 training (sampled in fp32, as generate did before it followed the run)
    "gen-cpu, states without depth": ("gen-cpu", ["state_depth_bins=1", "state_prior=false"], 2500, ("bf16=off",)),
    # + 8 depth bins crossed with the states
    "gen-cpu, without state prior": ("gen-cpu", ["state_prior=false"], 2500,
                                     ("bf16=off", "bf16=off,temperature=0.9")),
    # + each state's per-gene token frequencies added to the logits: the current recipe, whose
    # temperature (0.8) was picked on the tuning cells (--tune; bench_generation_cells_tuning.md)
    "gen-cpu": ("gen-cpu", [], 2500, ("temperature=1", "temperature=0.8")),
}
SAMPLER_OPTIONS = {"temperature": float, "top_p": float, "remask": float, "guidance": float, "steps": int,
                   "bf16": str, "float64": bool}
"""A sampler spec is ``key=value,...`` of these (``python -m scmodel.generate`` flags); "" is the run's own."""
TUNING_SAMPLERS = ("", "temperature=0.9", "temperature=0.8", "top_p=0.9", "temperature=0.9,top_p=0.9", "float64",
                   "remask=0.05", "guidance=1", "bf16=off")
"""What ``--tune`` screens by default (one row each, against the tuning cells)."""
ANCHORS = {  # published 1-NN leave-one-out accuracies, each on its own data (the sources)
    "scLDM (Palla et al. 2025)": {"dentate gyrus": 0.71, "Tabula Muris": 0.60, "HLCA": 0.61},
    "CFGen (Palma et al., ICLR 2025)": {"dentate gyrus": 0.86, "Tabula Muris": 0.77, "HLCA": 0.76},
}
METRICS = ("nn1_accuracy", "w1", "w2", "mmd_rbf", "precision", "recall", "density", "coverage")


GENERATION_BUCKET = {"experiments": 12, "min_cells": 1000, "max_cells": 3000, "seed": 12}
"""The synthetic bucket the default store is built from (not the demo's)."""
N_HVGS = 2000


def ensure_store(store: str, work: str) -> str:
    """The benchmark's store, built once: the synthetic bucket, every cell ingested, 2,000
    seurat_v3 HVGs materialized (what ``bench_train`` reads too)."""
    if os.path.exists(os.path.join(store, "obsm", "X_hvg")):
        return store
    b = GENERATION_BUCKET
    bucket = os.path.join(work, "bucket")
    release = os.path.join(bucket, "scbasecount", "2025-02-25")
    if not os.path.exists(os.path.join(release, "metadata")):
        run_checked([sys.executable, "-m", "scdata", "demo-bucket", bucket, "--experiments", str(b["experiments"]),
                     "--min-cells", str(b["min_cells"]), "--max-cells", str(b["max_cells"]), "--seed", str(b["seed"]),
                     "--release", "2025-02-25"])
    if not os.path.exists(os.path.join(store, "uns")):
        run_checked([sys.executable, "-m", "scdata", "ingest", "--source", release, "--store", store,
                     "--cell-count", str(b["experiments"] * b["max_cells"]), "--no-progress"])
    run_checked([sys.executable, "-m", "scdata", "hvg", "--store", store, "--n-hvgs", str(N_HVGS), "--materialize"])
    return store


def _train(store: str, name: str, preset: str, overrides: list[str], steps: int, work: str) -> dict:
    """Train ``preset`` (cached: a finished run with the same arguments is reused)."""
    out = os.path.join(work, "runs", _slug(name))
    args = {"store": os.path.abspath(store), "preset": preset, "overrides": overrides, "steps": steps,
            "config": _preset_fields(preset)}
    marker = os.path.join(out, "bench_run.json")
    if os.path.exists(marker):
        with open(marker) as f:
            done = json.load(f)
        if done["args"] == args and os.path.exists(os.path.join(out, "checkpoint.pt")):
            done.setdefault("final_evaluation", _final_evaluation(os.path.join(out, "metrics.jsonl")))
            return done
    cmd = [sys.executable, "-m", "scmodel.train", "--config", preset, "--store", store, "--out", out,
           "--max-steps", str(steps), "--eval-every", str(steps)]
    for item in overrides:
        cmd += ["--set", item]
    m = run_measured(cmd)
    if m.returncode:
        raise SystemExit(f"training {name} failed:\n{m.output[-4000:]}")
    done = {"args": args, "seconds": m.seconds, "peak_rss_bytes": m.peak_rss_bytes, "steps": steps,
            "load_average_1min_at_end": os.getloadavg()[0],
            "final_evaluation": _final_evaluation(os.path.join(out, "metrics.jsonl"))}
    with open(marker, "w") as f:
        json.dump(done, f, indent=1)
    return done


def _samplers(model: str, given: list[str] | None) -> list[str]:
    """The sampler specs of a model's rows: ``--samplers`` if given, else its own."""
    return list(given if given is not None else (MODELS[model][3] if len(MODELS[model]) > 3 else ("",)))


def sampler_flags(spec: str) -> list[str]:
    """``python -m scmodel.generate`` flags of a sampler spec ("temperature=0.9,float64" ->
    ``--temperature 0.9 --float64``); a clear error for an unknown key or a bad value."""
    flags = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        key, _, value = item.partition("=")
        if key not in SAMPLER_OPTIONS:
            raise SystemExit(f"sampler spec {spec!r}: unknown option {key!r} (known: {', '.join(SAMPLER_OPTIONS)})")
        kind = SAMPLER_OPTIONS[key]
        flag = "--" + key.replace("_", "-")
        if kind is bool:
            if value:
                raise SystemExit(f"sampler spec {spec!r}: {key} takes no value")
            flags.append(flag)
            continue
        try:
            kind(value)
        except ValueError:
            raise SystemExit(f"sampler spec {spec!r}: {key} needs a {kind.__name__}, got {value!r}") from None
        flags += [flag, value]
    return flags


def _sampler_slug(spec: str) -> str:
    return spec.replace(",", "-") or "defaults"


def _preset_fields(preset: str) -> dict:
    """The preset's settings that shape the trained weights (so that a cached run is retrained
    when they change; not where it is written, nor how its closing evaluation samples)."""
    import dataclasses

    from scmodel.run.presets import CONFIGS

    fields = dataclasses.asdict(CONFIGS[preset])
    return json.loads(json.dumps({k: v for k, v in fields.items() if k not in ("out", "store")
                                  and not k.startswith("sample_")}))


def _final_evaluation(metrics: str) -> dict:
    """The run's closing held-out evaluation (masked-token metrics against the per-gene
    baselines, the in-training sample metrics), numbers only."""
    with open(metrics) as f:
        evals = [r for r in map(json.loads, f) if r.get("eval")]
    if not evals:
        return {}
    return {k: v for k, v in evals[-1].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _slug(name: str) -> str:
    return name.replace(", ", "-").replace(" ", "-")


def _generate_cached(cmd: list[str], out: str) -> float:
    """Run ``python -m scmodel.generate`` unless ``out`` was written by the same command after the
    checkpoint; returns the seconds it took (then or now)."""
    marker = out + ".run.json"
    checkpoint = cmd[cmd.index("--checkpoint") + 1]
    if os.path.exists(marker) and os.path.exists(out) and os.path.getmtime(out) > os.path.getmtime(checkpoint):
        with open(marker) as f:
            done = json.load(f)
        if done["cmd"] == cmd[1:]:
            return done["seconds"]
    m = run_measured(cmd)
    if m.returncode:
        raise SystemExit(m.output[-4000:])
    with open(marker, "w") as f:
        json.dump({"cmd": cmd[1:], "seconds": m.seconds, "peak_rss_bytes": m.peak_rss_bytes}, f)
    return m.seconds


def _real_cells(checkpoint: str, max_train: int, seed: int):
    """(gene ids, training-cell counts, held-out counts, training cells' total counts over every
    gene) over the run's genes, from its own split."""
    from scdata.hvg.results import open_hvg_matrix
    from scdata.store.layout import open_root, read_strings
    from scmodel.data import LoaderConfig, StoreDataset
    from scmodel.run.checkpoint import load_run

    run, _ = load_run(checkpoint)
    matrix, positions = open_hvg_matrix(run.store)
    n = len(positions) if run.n_hvgs is None else min(run.n_hvgs, len(positions))

    def rows(split: str) -> np.ndarray:
        return StoreDataset(LoaderConfig(store=run.store, features="hvg", n_hvgs=n, split=split,
                                         split_by=run.split_by, val_fraction=run.val_fraction, seed=run.seed)).rows

    rng = np.random.default_rng(seed)
    train = rows("train")
    if len(train) > max_train:
        train = np.sort(rng.choice(train, max_train, replace=False))
    val = rows("val")
    read = lambda r: np.asarray(matrix.get_orthogonal_selection((r, slice(0, n))), dtype=np.int64)  # noqa: E731
    root = open_root(run.store)
    gene_ids = read_strings(root["var/_index"])[np.asarray(positions[:n])]
    totals = np.asarray(root["obs/total_counts"][:], dtype=np.float64)[train]
    return gene_ids, read(train), read(val), totals


def _write_counts(path: str, counts: np.ndarray, gene_ids: np.ndarray) -> None:
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    ad.AnnData(X=sp.csr_matrix(counts.astype(np.int32)), var=pd.DataFrame(index=gene_ids.astype(str)),
               obs=pd.DataFrame(index=[f"cell-{i}" for i in range(len(counts))])).write_h5ad(path)


def _read_counts(path: str) -> np.ndarray:
    import anndata as ad

    x = ad.read_h5ad(path).X
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)


def log_normalized(counts: np.ndarray, target_sum: float = 1e4) -> np.ndarray:
    """Each cell to ``target_sum`` over the genes given, then log1p (a cell with no counts stays 0)."""
    from scdata.normalize import log1p_normalize

    return log1p_normalize(np.asarray(counts, dtype=np.float64), target_sum)


def _marginal_cells(train: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Each gene's count drawn independently (with replacement) from the training cells' counts."""
    return np.stack([train[rng.integers(0, len(train), n), j] for j in range(train.shape[1])], axis=1)


def _state_marginal_cells(checkpoint: str, train: np.ndarray, totals: np.ndarray, n: int,
                          rng: np.random.Generator) -> np.ndarray | None:
    """The model's own cell states with nothing else: a state drawn by the training cells'
    frequencies, then every gene's count drawn independently from the training cells of that
    state (None: the model has no states). What the diffusion model adds is the rest."""
    import torch

    from scmodel.data.perturbation import log1p_rows
    from scmodel.models.states import CellStates
    from scmodel.run.checkpoint import load_run
    from scmodel.tokenize import BinnedTokenizer

    run, state = load_run(checkpoint)
    if not run.n_states:
        return None
    states = CellStates(run.n_states, train.shape[1], run.n_tokens, run.tokenizer_max, depth_bins=run.state_depth_bins,
                        prior=run.state_prior)
    states.load_state_dict({k.removeprefix("cell_states."): v for k, v in state["model"].items()
                            if k.startswith("cell_states.")})
    tokenizer = BinnedTokenizer(n_tokens=run.n_tokens, max_value=run.tokenizer_max)
    labels = states.assign(tokenizer.tokenize(torch.from_numpy(log1p_rows(train, totals)))).numpy()
    drawn = rng.choice(states.n_states, size=n, p=states.counts.numpy() / float(states.counts.sum()))
    out = np.zeros((n, train.shape[1]), dtype=train.dtype)
    for s in np.unique(drawn):
        members, cells = np.nonzero(labels == s)[0], np.nonzero(drawn == s)[0]
        if not len(members):  # a state none of these training cells falls in: any training cell
            members = np.arange(len(train))
        for j in range(train.shape[1]):
            out[cells, j] = train[rng.choice(members, len(cells)), j]
    return out


def _shuffled(cells: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = cells.copy()
    for j in range(out.shape[1]):
        out[:, j] = rng.permutation(out[:, j])
    return out


def _summary(runs: list[dict]) -> dict:
    return {k: {"mean": float(np.mean([r[k] for r in runs])),
                "sd": float(np.std([r[k] for r in runs], ddof=1)) if len(runs) > 1 else 0.0,
                "values": [float(r[k]) for r in runs]} for k in METRICS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default=None, help="a store with materialized HVGs (default: the benchmark's own, "
                                                  "built on first use)")
    p.add_argument("--split", choices=("experiment", "cell"), default="experiment",
                   help="held-out experiments, or a share of every experiment's cells (the field's split)")
    p.add_argument("--models", nargs="*", default=list(MODELS), help=f"of {', '.join(MODELS)}")
    p.add_argument("--steps", type=int, help="training steps of every model (default: each model's own)")
    p.add_argument("--sample-steps", type=int, help="reverse-process steps (default: the run's)")
    p.add_argument("--samplers", nargs="*", help="sampler specs, a row each, of every model: key=value,... of "
                                                  f"{', '.join(SAMPLER_OPTIONS)} ('' = the run's own; default: each "
                                                  "model's own, see MODELS; with --tune: TUNING_SAMPLERS)")
    p.add_argument("--tune", action="store_true",
                   help="score against tuning cells (held-out cells apart from the reference and the floor: "
                        "choose sampler settings here, report them on the reference)")
    p.add_argument("--cells", type=int, default=1000, help="reference cells (and cells per compared set), at most")
    p.add_argument("--max-train", type=int, default=20_000, help="training cells for scVI, the PCA and the marginals")
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--scvi-epochs", type=int, help="scVI's max_epochs (default: scvi-tools' own rule)")
    p.add_argument("--no-scvi", action="store_true")
    p.add_argument("--work", default=os.path.join(WORK, "generation"))
    p.add_argument("--results", help="results name (default: bench_generation, or bench_generation_cells "
                                      "with --split cell)")
    a = p.parse_args()
    a.results = a.results or ("bench_generation" if a.split == "experiment" else "bench_generation_cells")
    if a.tune:
        a.results += "_tuning"
        a.no_scvi = True  # scVI is not tuned here; its reconstructions are of the reference cells
        if a.samplers is None:
            a.samplers = list(TUNING_SAMPLERS)
    a.store = a.store or ensure_store(os.path.join(WORK, "generation", "store.zarr"), os.path.join(WORK, "generation"))
    from benchmarks.baselines import scvi_peer
    from scmodel.evaluate.distribution import protocol_metrics, protocol_space

    os.makedirs(a.work, exist_ok=True)
    rows_out, payload_models, shown = [], {}, set()
    split = [] if a.split == "experiment" else [f"split_by={a.split}"]
    for name in a.models:
        preset, overrides, steps = MODELS[name][:3]
        samplers = _samplers(name, a.samplers)
        steps = a.steps or steps
        run_name = name if a.split == "experiment" else f"{name}, {a.split} split"
        trained = _train(a.store, run_name, preset, overrides + split, steps, a.work)
        checkpoint = os.path.join(a.work, "runs", _slug(run_name), "checkpoint.pt")
        gene_ids, train, val, train_totals = _real_cells(checkpoint, a.max_train, seed=0)
        rng = np.random.default_rng(0)
        order = rng.permutation(len(val))
        n = min(a.cells, len(val) // 2)
        reference, floor = val[order[:n]], val[order[n: 2 * n]]
        if a.tune:  # the third share: never the reference the results are reported on
            if len(val) < 3 * n:
                raise SystemExit(f"--tune needs 3 x {n} held-out cells, the store's split has {len(val)}; "
                                 "lower --cells")
            reference = val[order[2 * n: 3 * n]]
        space = protocol_space(log_normalized(train), seed=0)
        ref = log_normalized(reference)
        sets: dict[str, list[dict]] = {}
        costs: dict[str, dict] = {}

        def score(label: str, counts: np.ndarray) -> None:
            sets.setdefault(label, []).append(protocol_metrics(space, ref, log_normalized(counts)))

        data = os.path.join(a.work, "cells", _slug(run_name))
        os.makedirs(data, exist_ok=True)
        for spec in samplers:
            label = f"sczarr {name} ({steps} steps), sampler: {spec or 'as trained'}"
            seconds = []
            for seed in a.seeds:
                out = os.path.join(data, f"generated-{_sampler_slug(spec)}-s{seed}.h5ad")
                cmd = [sys.executable, "-m", "scmodel.generate", "--checkpoint", checkpoint, "--n-cells", str(n),
                       "--out", out, "--seed", str(seed), *sampler_flags(spec)]
                if a.sample_steps:
                    cmd += ["--steps", str(a.sample_steps)]
                seconds.append(_generate_cached(cmd, out))
                score(label, _read_counts(out))
            costs[label] = {"train_seconds": trained["seconds"], "sample_seconds": float(np.mean(seconds))}
        if not a.no_scvi:
            train_h5ad, heldout_h5ad = os.path.join(data, "train.h5ad"), os.path.join(data, "heldout.h5ad")
            _write_counts(train_h5ad, train, gene_ids)
            _write_counts(heldout_h5ad, reference, gene_ids)
            scvi_seconds = []
            for seed in a.seeds:
                # keyed by the genes, not the model: models over the same genes share scVI's runs
                done = scvi_peer.run_scvi(os.path.join(a.work, "scvi", f"{a.split}-hvg{train.shape[1]}", f"seed{seed}"),
                                          train_h5ad, heldout_h5ad,
                                          n_samples=n, seed=seed, max_epochs=a.scvi_epochs)
                score("scVI prior samples", _read_counts(done["prior_samples"]))
                score("scVI reconstructions (sees the held-out cells)", _read_counts(done["reconstructions"]))
                scvi_seconds.append(done["run"])
            costs["scVI prior samples"] = {
                "train_seconds": float(np.mean([r.get("train_seconds", np.nan) for r in scvi_seconds])),
                "sample_seconds": float(np.mean([r.get("sample_seconds", np.nan) for r in scvi_seconds])),
                "settings": scvi_seconds[0].get("settings")}
        for seed in a.seeds:
            r = np.random.default_rng(100 + seed)
            score("real training cells (a perfect model of the training "
                  + ("experiments)" if a.split == "experiment" else "cells)"),
                  train[np.sort(r.choice(len(train), n, replace=False))])
            score("per-gene marginals (training cells)", _marginal_cells(train, n, r))
            by_state = _state_marginal_cells(checkpoint, train, train_totals, n, r)
            if by_state is not None:
                score(f"the model's cell states alone ({name}), genes independent within each", by_state)
            score("gene-shuffled held-out cells", _shuffled(floor, r))
        score("real held-out cells (the other half)", floor)
        summary = {label: _summary(runs) for label, runs in sets.items()}
        payload_models[name] = {"n_reference_cells": n, "n_genes": int(train.shape[1]), "n_train_cells": len(train),
                                "n_heldout_cells": len(val), "train": trained, "sets": summary, "costs": costs}
        for label, s in summary.items():
            if not label.startswith("sczarr") and (label, n, train.shape[1]) in shown:
                continue  # the same cells as an earlier model's row (same split, genes and seeds)
            shown.add((label, n, train.shape[1]))
            cost = costs.get(label, {})
            rows_out.append([name, label, *(f"{s[k]['mean']:.3f} ± {s[k]['sd']:.3f}" if k == "nn1_accuracy"
                                            else f"{s[k]['mean']:.3g}" for k in METRICS)]
                            + ([] if a.tune else [f"{cost['train_seconds']:.0f}" if "train_seconds" in cost else "",
                                                  f"{cost['sample_seconds']:.0f}" if "sample_seconds" in cost else ""]))
    held = "held-out cells" if a.split == "experiment" else "held-out cells of the training experiments"
    if a.tune:
        held = "tuning cells (held-out cells apart from the reference the other results use)"
    table = (f"Generated vs real {held} (30 PCs of training cells; mean ± sd over seeds "
             f"{', '.join(map(str, a.seeds))}; 1-NN accuracy 0.5 = indistinguishable)\n\n"
             + md_table(["model", "cells", *METRICS, *([] if a.tune else ["train s", "sample s"])], rows_out)
             + ("\n\nTuning runs share the cores with other work: their timings (in the JSON) are not "
                "measurements." if a.tune else "")
             + "\n\nPublished anchors, 1-NN accuracy on their own data (not comparable cell for cell): "
             + "; ".join(f"{m}: " + ", ".join(f"{d} {v:.2f}" for d, v in by.items()) for m, by in ANCHORS.items()))
    write_results(a.results, {"store": os.path.abspath(a.store), "split": a.split, "seeds": a.seeds, "steps": a.steps,
                              "tuning": a.tune, "samplers": {name: _samplers(name, a.samplers) for name in a.models},
                              "models": payload_models, "published_anchors": ANCHORS,
                              "protocol": "scmodel.evaluate.distribution: 30 PCs fitted on training cells (log1p of "
                                          "counts per 1e4 over the model's genes); equal counts per set"}, table)


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"bench_generation: {time.time() - t0:.0f} s")
