"""scVI (scvi-tools 1.4.2) as a peer generative model: drives ``scvi_generate.py`` in its own venv.

scvi-tools lives in its own virtual environment (``benchmarks/baselines/setup_scvi.sh``: Python 3.11,
torch 2.13.0 CPU, then scvi-tools), so its pins (lightning, anndata, numpy ...) neither constrain nor
follow ours; nothing here imports scvi. The benchmark writes TRAIN / HELDOUT h5ad files of raw
counts with our stack, and this module runs ``scvi_generate.py`` on them by subprocess. That script
trains ``scvi.model.SCVI`` with scvi-tools' defaults and writes, as CSR int32 counts over TRAIN's
genes:

* ``prior_samples.h5ad``: cells from the prior (z ~ N(0, I), library sizes drawn from TRAIN's
  totals), what a generative model is judged on;
* ``reconstructions.h5ad``: one posterior-predictive sample per HELDOUT cell, the optimistic row
  (scVI sees the real cell);
* ``scvi_run.json``: version, settings, timings, final training losses.

Training is minutes for a few thousand cells at scvi-tools' default 400 epochs, so a finished run
is reused when ``inputs.json`` says the inputs (content hashes), the arguments and the script are
the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, "..", ".work", "scvi-venv")  # default; SCVI_VENV overrides it
SCRIPT = os.path.join(HERE, "scvi_generate.py")
OUTPUTS = ("prior_samples.h5ad", "reconstructions.h5ad", "scvi_run.json")


def _python() -> str:
    """The scvi venv's interpreter; read at call time so ``SCVI_VENV`` set after import counts."""
    venv = os.environ.get("SCVI_VENV") or VENV
    return os.path.join(venv, "bin", "python")


def available() -> bool:
    return os.path.exists(_python())


def _sha256(path: str) -> str:
    """Content hash, not size+mtime: the benchmark may rewrite identical inputs each run, and a
    retrain costs minutes while hashing a few hundred MB costs about a second."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(cmd: list[str], log: str, threads: int) -> None:
    # OMP/MKL threads too: torch.set_num_threads alone leaves the intra-op pools of numpy/scipy free.
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               CUDA_VISIBLE_DEVICES="", PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)  # the main venv's paths must not leak into the scvi interpreter
    with open(log, "w") as f:
        done = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        with open(log) as f:
            raise RuntimeError(f"scvi_generate.py failed (rc {done.returncode}; log {log}):\n{f.read()[-4000:]}")


def run_scvi(work: str, train: str, heldout: str, n_samples: int, seed: int = 0, max_epochs: int | None = None,
             n_latent: int = 10, threads: int = 2) -> dict:
    """Train scVI on ``train`` and generate from it, in the scvi venv; outputs go into ``work``.

    ``train`` / ``heldout`` are h5ad files of raw integer counts over the same genes. Returns
    ``{"prior_samples": path, "reconstructions": path, "run": <scvi_run.json>, "cached": bool}``:
    ``n_samples`` cells from the prior, one posterior-predictive sample per held-out cell. A run in
    ``work`` with the same inputs and arguments is reused; only this peer's own files in ``work``
    are replaced otherwise (``work`` may hold the inputs themselves)."""
    python = _python()
    if not os.path.exists(python):
        raise RuntimeError(f"scvi venv not found at {os.path.dirname(os.path.dirname(python))}; "
                           "run `bash benchmarks/baselines/setup_scvi.sh` (or point SCVI_VENV at one)")
    for role, path in (("train", train), ("heldout", heldout)):
        if not os.path.exists(path):
            raise FileNotFoundError(f"scVI peer: {role} file {path} does not exist")
    inputs = {"train": _sha256(train), "heldout": _sha256(heldout), "script": _sha256(SCRIPT),
              "n_samples": int(n_samples), "seed": int(seed), "max_epochs": max_epochs, "n_latent": int(n_latent),
              "threads": int(threads)}
    paths = {name: os.path.join(work, name) for name in OUTPUTS}
    marker = os.path.join(work, "inputs.json")
    cached = False
    if os.path.exists(marker) and all(os.path.exists(p) for p in paths.values()):
        with open(marker) as f:
            cached = json.load(f) == inputs
    if not cached:
        os.makedirs(work, exist_ok=True)
        for path in (marker, *paths.values()):  # a half-written run must not pass for a finished one
            if os.path.exists(path):
                os.remove(path)
        cmd = [python, SCRIPT, "--train", os.path.abspath(train), "--heldout", os.path.abspath(heldout),
               "--n-samples", str(n_samples), "--out", os.path.abspath(work), "--seed", str(seed),
               "--n-latent", str(n_latent), "--threads", str(threads)]
        if max_epochs is not None:
            cmd += ["--max-epochs", str(max_epochs)]
        _run(cmd, os.path.join(work, "scvi.log"), threads)
        with open(marker, "w") as f:
            json.dump(inputs, f, indent=1)
    with open(paths["scvi_run.json"]) as f:
        run = json.load(f)
    return {"prior_samples": paths["prior_samples.h5ad"], "reconstructions": paths["reconstructions.h5ad"],
            "run": run, "cached": cached}
