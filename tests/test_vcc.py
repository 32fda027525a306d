"""Perturbation data end to end: import into a store (counts equal the source's, crash-safe,
clear errors), conditioning batches, fine-tuning, a prediction in the challenge's format that
cell-eval accepts."""

import json
import os

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scdata
from scdata.source.demo_bucket import DemoConfig, demo_biology
from scdata.store.manifest import Manifest, write_manifest
from scdata.store.layout import StoreLayout, create_store, open_root
from scdata.vcc.importer import VCCImportConfig, VCCImportError, import_vcc
from scdata.vcc.synthetic import CONTROL, VCCDemoConfig, write_vcc_demo
from scdata.hvg.flavors import HVGConfig
from scdata.hvg.results import write_var_columns

from tests.helpers import assert_consolidated_current

LAYOUT = StoreLayout(chunk_cells=128, chunk_genes=1024)
CLUSTER = scdata.ClusterConfig(workers=1, dashboard=False)
N_HVGS = 256


@pytest.fixture(scope="module")
def vcc_files(tmp_path_factory):
    config = VCCDemoConfig(n_genes=600, n_train_perturbations=5, n_validation_perturbations=2,
                           n_control_cells=300, cells_per_perturbation=(80, 120))
    return write_vcc_demo(str(tmp_path_factory.mktemp("vcc_files")), config)


@pytest.fixture(scope="module")
def axis_store(tmp_path_factory, vcc_files):
    """A pretraining store's gene axis (the demo bucket's 36,601 genes, no cells) and its
    hvg_info.json: the HVGs are 256 axis genes, most of them genes of the perturbation file."""
    directory = tmp_path_factory.mktemp("pretrain")
    path = str(directory / "store.zarr")
    biology = demo_biology(DemoConfig())
    create_store(path, biology.gene_ids, biology.symbols, [], LAYOUT)
    write_manifest(path, Manifest(n_genes=len(biology.gene_ids)))
    source = ad.read_h5ad(vcc_files["adata_Training.h5ad"], backed="r")
    in_file = np.flatnonzero(np.isin(biology.symbols, source.var_names.to_numpy()))
    rng = np.random.default_rng(0)
    hvgs = np.concatenate([rng.choice(in_file, size=N_HVGS - 16, replace=False),
                           rng.choice(np.setdiff1d(np.arange(len(biology.gene_ids)), in_file), size=16, replace=False)])
    # the selection as `scdata hvg` leaves it: var columns in the store, hvg_info.json beside it
    flags = np.zeros(len(biology.gene_ids), dtype=bool)
    flags[hvgs] = True
    write_var_columns(path, pd.DataFrame({"highly_variable": flags}), HVGConfig(), 0, hvgs)
    with open(directory / "hvg_info.json", "w") as f:
        json.dump({"hvg_indices": [int(i) for i in hvgs], "flavor": "seurat_v3"}, f)
    return path


def _import(vcc_files, axis_store, store, **overrides):
    config = VCCImportConfig(input=vcc_files["adata_Training.h5ad"], store=store, genes_from=axis_store, layout=LAYOUT,
                             cluster=CLUSTER, block_chunks=2, **overrides)
    return import_vcc(config, echo=lambda *_: None)


@pytest.fixture(scope="module")
def vcc_store(tmp_path_factory, vcc_files, axis_store):
    path = str(tmp_path_factory.mktemp("vcc_store") / "vcc.zarr")
    _import(vcc_files, axis_store, path)
    return path


def test_imported_counts_equal_the_source(vcc_files, axis_store, vcc_store, tmp_path):
    source = ad.read_h5ad(vcc_files["adata_Training.h5ad"])
    biology = demo_biology(DemoConfig())
    columns = {s: i for i, s in enumerate(biology.symbols)}
    positions = np.asarray([columns[s] for s in source.var_names])
    expected = sp.csr_matrix((source.X.data, positions[source.X.indices], source.X.indptr),
                             shape=(source.n_obs, len(biology.gene_ids)))
    stored = ad.read_zarr(vcc_store)  # the scverse reader sees a complete AnnData
    assert stored.n_obs == source.n_obs
    assert (sp.csr_matrix(stored.X) != expected.astype(np.int16)).nnz == 0  # cells keep the file's order
    obs = stored.obs
    assert (obs["target_gene"].astype(str).to_numpy() == source.obs["target_gene"].astype(str).to_numpy()).all()
    assert (obs["guide_id"].astype(str).to_numpy() == source.obs["guide_id"].astype(str).to_numpy()).all()
    assert (obs["batch"].astype(str).to_numpy() == source.obs["batch"].astype(str).to_numpy()).all()
    assert (obs["is_control"].to_numpy() == (source.obs["target_gene"] == CONTROL).to_numpy()).all()
    targets = source.obs["target_gene"].astype(str).to_numpy()
    want = np.asarray([-1 if t == CONTROL else columns[t] for t in targets])
    assert (obs["target_gene_index"].to_numpy() == want).all()
    root = open_root(vcc_store)
    assert root.attrs["sczarr"]["kind"] == "perturbation" and root.attrs["sczarr"]["values"] == "counts"
    assert [str(s) for s in root["uns/perturbation/source_genes"][:]] == source.var_names.tolist()
    assert_consolidated_current(vcc_store, tmp_path)  # after the commits, target effects and X_hvg


def test_hvg_matrix_and_gene_name_to_hvg_idx(vcc_files, axis_store, vcc_store):
    info = json.load(open(os.path.join(os.path.dirname(axis_store), "hvg_info.json")))
    hvgs = np.asarray(info["hvg_indices"])
    mapping = info["gene_name_to_hvg_idx"]
    biology = demo_biology(DemoConfig())
    assert len(mapping) == N_HVGS - 16  # the file's genes among the HVGs
    for name, k in list(mapping.items())[:20]:
        assert biology.symbols[hvgs[k]] == name
    x_hvg = open_root(vcc_store)["obsm/X_hvg"][:]
    x = open_root(vcc_store)["X"].get_orthogonal_selection((slice(None), hvgs))
    assert np.array_equal(x_hvg, x)


def test_the_hvg_selection_comes_from_the_store_itself(vcc_files, axis_store, vcc_store, tmp_path):
    """`scdata hvg --output-dir` put hvg_info.json elsewhere: the import still finds the selection in
    the pretraining store's own var columns, materializes obsm/X_hvg and writes hvg_info.json where told."""
    import shutil

    store = str(tmp_path / "pretrain" / "store.zarr")
    shutil.copytree(axis_store, store)  # without the hvg_info.json beside it
    path = str(tmp_path / "vcc.zarr")
    said = []
    config = VCCImportConfig(input=vcc_files["adata_Training.h5ad"], store=path, genes_from=store, layout=LAYOUT,
                             cluster=CLUSTER, block_chunks=2, hvg_output_dir=str(tmp_path / "elsewhere"))
    import_vcc(config, echo=said.append)
    assert not any("not written" in line for line in said), said
    assert np.array_equal(open_root(path)["obsm/X_hvg"][:], open_root(vcc_store)["obsm/X_hvg"][:])
    info = json.load(open(tmp_path / "elsewhere" / "hvg_info.json"))
    reference = json.load(open(os.path.join(os.path.dirname(axis_store), "hvg_info.json")))
    assert info["hvg_indices"] == reference["hvg_indices"] and info["gene_name_to_hvg_idx"]
    assert info["hvg_names"][0] == demo_biology(DemoConfig()).symbols[reference["hvg_indices"][0]]


def test_a_killed_import_resumes_to_the_same_store(vcc_files, axis_store, vcc_store, tmp_path, monkeypatch):
    import scdata.vcc.importer as vcc

    path = str(tmp_path / "crashed.zarr")
    commits = {"n": 0}
    original = vcc._commit

    def dies_after_two(*args, **kwargs):
        if commits["n"] == 2:
            raise KeyboardInterrupt("killed")
        commits["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(vcc, "_commit", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        _import(vcc_files, axis_store, path)
    monkeypatch.setattr(vcc, "_commit", original)
    report = _import(vcc_files, axis_store, path)
    assert report.blocks_added >= 1
    a, b = open_root(path), open_root(vcc_store)
    assert np.array_equal(a["X"][:], b["X"][:])
    for name in ("_index", "is_control", "target_gene_index", "total_counts", "target_gene/codes", "batch/codes"):
        assert np.array_equal(a[f"obs/{name}"][:], b[f"obs/{name}"][:]), name




@pytest.mark.parametrize("damage, message", [
    ("no_target", "no 'target_gene' column"),
    ("no_control", "no control cells"),
    ("fractional", "non-integer values"),
    ("negative", "negative"),
    ("truncated", "not a readable h5ad"),
])
def test_bad_input_gets_a_clear_error(vcc_files, axis_store, tmp_path, damage, message):
    source = ad.read_h5ad(vcc_files["adata_Training.h5ad"])
    if damage == "no_target":
        source.obs = source.obs.rename(columns={"target_gene": "perturbation"})
    elif damage == "no_control":
        source.obs["target_gene"] = source.obs["target_gene"].astype(str).replace(CONTROL, "control")
    elif damage == "fractional":
        source.X = source.X.copy()
        source.X.data[5] += 0.5
    elif damage == "negative":
        source.X = source.X.copy()
        source.X.data[7] = -3
    path = str(tmp_path / f"{damage}.h5ad")
    source.write_h5ad(path)
    if damage == "truncated":
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 3)
    store = str(tmp_path / "bad.zarr")
    with pytest.raises(VCCImportError, match=message) as info:
        import_vcc(VCCImportConfig(input=path, store=store, genes_from=axis_store, layout=LAYOUT, cluster=CLUSTER),
                   echo=lambda *_: None)
    assert path in str(info.value)
    if damage == "no_control":  # the other spelling is accepted when named
        import_vcc(VCCImportConfig(input=path, store=store, genes_from=axis_store, layout=LAYOUT, cluster=CLUSTER,
                                   control_label="control"), echo=lambda *_: None)
        assert open_root(store)["obs/is_control"][:].sum() == (source.obs["target_gene"] == "control").sum()


def test_target_effects_recover_the_knockdown(vcc_files, vcc_store):
    from scdata.vcc.effects import target_effects, target_log2fc

    effects = target_effects(vcc_store)
    fc = target_log2fc(effects)
    truth = json.load(open(vcc_files["truth.json"]))
    assert set(fc) == set(truth["train_targets"])
    for target, measured in fc.items():  # each guide keeps its own fraction of the target's mRNA
        expected = np.log2(np.mean(truth["knockdown_efficiency"][target]))
        assert abs(measured - expected) < 0.5, (target, measured, expected)


def test_conditioning_batches(vcc_store):
    import torch

    from scdata.vcc.effects import perturbation_obs
    from scmodel.data import LoaderConfig, StoreDataLoader, StoreDataset
    from scmodel.data.perturbation import Conditioning, PerturbationLoader, split_cells

    obs = perturbation_obs(vcc_store)
    split = split_cells(obs, 0.2, 0)
    assert not set(split.train) & set(split.val) and len(split.train) + len(split.val) == len(obs)
    for target, rows in obs.groupby("target_gene").indices.items():  # every perturbation on both sides
        assert np.isin(rows, split.val).any() and np.isin(rows, split.train).any(), target
    held = split_cells(obs, 0.2, 0, holdout_targets=[obs["target_gene"][obs["target_gene"] != CONTROL].iloc[0]])
    assert len(held.val) > len(split.val)
    conditioning = Conditioning(vcc_store, split.train, N_HVGS, set_size=4, effect_rows=split.train)
    loader = PerturbationLoader(StoreDataLoader(StoreDataset(LoaderConfig(
        store=vcc_store, n_hvgs=N_HVGS, batch_size=32, rows=split.train, drop_last=False))), conditioning)
    seen = []
    for x, cond in loader:
        assert cond["control"].shape == (x.shape[0], 4, N_HVGS) and cond["target_gene"].dtype == torch.int64
        seen.append(len(x))
        is_control = cond["target_gene"] < 0
        assert (cond["sign"][is_control] == 0).all() and (cond["sign"][~is_control] == -1).all()
        assert (cond["log2fc"][~is_control] < -1).all() and (cond["log2fc"][is_control] == 0).all()
    assert sum(seen) == len(split.train)  # every training cell once
    # a control set is drawn from training controls of the cell's own batch
    c = conditioning.for_targets([CONTROL], ["batch02"], np.random.default_rng(0))
    pool = conditioning.control_values[conditioning.pools["batch02"]]
    for member in c["control"][0].numpy():
        assert (pool == member).all(1).any()


@pytest.fixture(scope="module")
def finetuned(vcc_store, tmp_path_factory) -> str:
    """A short fine-tune on the perturbation store; its checkpoint."""
    from dataclasses import replace

    from scmodel.run.presets import CONFIGS
    from scmodel.trainer import Trainer

    out = str(tmp_path_factory.mktemp("ft"))
    config = replace(CONFIGS["finetune-tiny"], store=vcc_store, out=out, max_steps=12, eval_every=12,
                     save_every=12, n_hvgs=N_HVGS, context_genes=128, sample_steps=4, eval_batches=1)
    trainer = Trainer(config, echo=lambda *_: None)
    trainer.fit()
    trainer.close()
    return os.path.join(out, "checkpoint.pt")


def test_finetune_predict_and_cell_eval(vcc_files, finetuned, tmp_path):
    """A prediction in the challenge's format, and cell-eval's scores of it."""
    from scmodel.evaluate.perturbation import CellEvalConfig, run_cell_eval
    from scmodel.predict import PredictConfig, run_prediction

    names = pd.read_csv(vcc_files["gene_names.csv"], header=None)[0].tolist()
    counts = pd.read_csv(vcc_files["pert_counts_Validation.csv"])
    # the challenge's validation perturbations are genes the store has no cells of: knocked down in silico
    paths = run_prediction(PredictConfig(checkpoint=finetuned, genes=vcc_files["gene_names.csv"],
                                         pert_counts=vcc_files["pert_counts_Validation.csv"], out=str(tmp_path / "val"),
                                         generate=8, sample_steps=4), echo=lambda *_: None)
    pred = ad.read_h5ad(paths["prediction"])
    assert pred.var_names.tolist() == names
    per_target = pred.obs["target_gene"].astype(str).value_counts()
    for row in counts.itertuples():
        assert per_target[row.target_gene] == row.n_cells
    methods = pred.uns["sczarr_prediction"]["methods"]
    assert set(methods) == set(counts["target_gene"]) and set(methods.values()) <= {"in-silico", "target-only"}
    assert np.array_equal(pred.X.data, np.round(pred.X.data)) and pred.X.data.min() >= 0  # counts
    controls = pred[pred.obs["target_gene"] == CONTROL]
    assert controls.n_obs > 0 and pred.uns["sczarr_prediction"]["controls"] == "real held-out cells"
    source = ad.read_h5ad(vcc_files["adata_Training.h5ad"])  # the controls are the file's own cells
    real = {r.tobytes() for r in source[source.obs["target_gene"] == CONTROL].X.toarray().astype(np.float32)}
    assert all(r.tobytes() in real for r in controls.X.toarray().astype(np.float32))
    # scored against the held-out perturbations' real cells: another file, with its own controls
    summary = run_cell_eval(CellEvalConfig(prediction=paths["prediction"], real=vcc_files["adata_Validation_truth.h5ad"],
                                           training=paths["training"], out=str(tmp_path / "ce_val")), echo=lambda *_: None)
    assert np.isfinite(summary["avg_score"]) and set(summary["pearson_delta_by_perturbation"]) == set(counts["target_gene"])
    # held-out cells of seen perturbations: prediction, real cells and cell-eval's scores
    held = run_prediction(PredictConfig(checkpoint=finetuned, out=str(tmp_path / "held"),
                                        generate=8, sample_steps=4), echo=lambda *_: None)
    summary = run_cell_eval(CellEvalConfig(prediction=held["prediction"], real=held["real"], training=held["training"],
                                           out=str(tmp_path / "ce")), echo=lambda *_: None)
    metrics = {m["metric"] for m in summary["metrics"]}
    assert {"overlap_at_N", "mae", "discrimination_score_l1"} <= metrics
    assert np.isfinite(summary["avg_score"])


def test_predict_and_evaluate_refuse_bad_input_by_name(vcc_files, finetuned, tmp_path):
    from scmodel.evaluate.perturbation import CellEvalConfig, run_cell_eval
    from scmodel.predict import PredictConfig, run_prediction

    counts = tmp_path / "counts.csv"
    pd.DataFrame({"target_gene": ["NOT_A_GENE_XYZ"], "n_cells": [10]}).to_csv(counts, index=False)
    with pytest.raises(ValueError, match="NOT_A_GENE_XYZ.*|.*NOT_A_GENE_XYZ") as info:
        run_prediction(PredictConfig(checkpoint=finetuned, genes=vcc_files["gene_names.csv"], pert_counts=str(counts),
                                     out=str(tmp_path / "bad")), echo=lambda *_: None)
    assert "gene axis" in str(info.value) and "gene_names.csv" in str(info.value)
    paths = run_prediction(PredictConfig(checkpoint=finetuned, genes=vcc_files["gene_names.csv"],
                                         pert_counts=vcc_files["pert_counts_Validation.csv"], out=str(tmp_path / "val"),
                                         unseen="target-only"), echo=lambda *_: None)
    truth = ad.read_h5ad(vcc_files["adata_Validation_truth.h5ad"])
    fewer = tmp_path / "fewer_genes.h5ad"
    truth[:, truth.var_names[1:]].copy().write_h5ad(fewer)
    with pytest.raises(ValueError, match=f"{truth.var_names[0]}.*fewer_genes.h5ad|fewer_genes.h5ad.*{truth.var_names[0]}"):
        run_cell_eval(CellEvalConfig(prediction=paths["prediction"], real=str(fewer), training=paths["training"],
                                     out=str(tmp_path / "ce1")), echo=lambda *_: None)
    no_controls = tmp_path / "no_controls.h5ad"
    truth[truth.obs["target_gene"] != CONTROL].copy().write_h5ad(no_controls)
    with pytest.raises(ValueError, match="no_controls.h5ad.*no control cells"):
        run_cell_eval(CellEvalConfig(prediction=paths["prediction"], real=str(no_controls), training=paths["training"],
                                     out=str(tmp_path / "ce2")), echo=lambda *_: None)
    shuffled = tmp_path / "shuffled.h5ad"  # the same genes in another order are followed, not refused
    truth[:, truth.var_names[::-1]].copy().write_h5ad(shuffled)
    summary = run_cell_eval(CellEvalConfig(prediction=paths["prediction"], real=str(shuffled), training=paths["training"],
                                           out=str(tmp_path / "ce3")), echo=lambda *_: None)
    assert np.isfinite(summary["avg_score"])


def _pseudobulk_log_ratio(adata, target: str) -> np.ndarray:
    x = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    x = x / np.maximum(x.sum(axis=1, keepdims=True), 1.0) * 1e4
    labels = adata.obs["target_gene"].astype(str).to_numpy()
    return np.log((x[labels == target].mean(0) + 0.1) / (x[labels == CONTROL].mean(0) + 0.1))


def test_training_mean_effect_is_the_training_cells_ratio(vcc_files, axis_store, finetuned, tmp_path):
    """--effect training-mean by hand: each seen perturbation's predicted pseudobulk ratio follows
    the ratio of its cells to the controls in the training file, over the modelled genes."""
    from scmodel.predict import PredictConfig, run_prediction

    paths = run_prediction(PredictConfig(checkpoint=finetuned, out=str(tmp_path / "tm"), effect="training-mean"),
                           echo=lambda *_: None)
    pred = ad.read_h5ad(paths["prediction"])
    source = ad.read_h5ad(vcc_files["adata_Training.h5ad"])
    with open(os.path.join(os.path.dirname(axis_store), "hvg_info.json")) as f:  # the import's gene -> HVG map
        modelled = np.isin(pred.var_names, list(json.load(f)["gene_name_to_hvg_idx"]))
    targets = sorted(set(pred.obs["target_gene"].astype(str)) - {CONTROL})
    assert targets and set(pred.uns["sczarr_prediction"]["methods"].values()) == {"training-mean"}
    compared = 0
    for target in targets:
        got, want = _pseudobulk_log_ratio(pred, target), _pseudobulk_log_ratio(source[:, pred.var_names], target)
        assert got[pred.var_names == target][0] < -0.5  # the knockdown itself
        strong = modelled & (np.abs(want) > 0.3) & (pred.var_names != target)
        if strong.sum() >= 3:  # a regulator: its program follows the training cells
            assert np.corrcoef(got[strong], want[strong])[0, 1] > 0.8, target
            compared += 1
        assert np.abs(got[~modelled & (pred.var_names != target)]).max() < 0.5  # genes the model has no say on stay put
    assert compared >= 1


@pytest.mark.parametrize("options", [{"mode": "direct"}, {"effect": "sampled"}])
def test_direct_and_sampled_predictions_have_the_challenge_shape(vcc_files, finetuned, tmp_path, options):
    from scmodel.predict import PredictConfig, run_prediction

    paths = run_prediction(PredictConfig(checkpoint=finetuned, out=str(tmp_path / "p"), generate=8, sample_steps=4,
                                         **options), echo=lambda *_: None)
    pred, real = ad.read_h5ad(paths["prediction"]), ad.read_h5ad(paths["real"])
    assert pred.var_names.tolist() == real.var_names.tolist()
    assert np.array_equal(pred.X.data, np.round(pred.X.data)) and pred.X.data.min() >= 0
    want = real.obs["target_gene"].astype(str).value_counts()
    got = pred.obs["target_gene"].astype(str).value_counts()
    assert {t: got[t] for t in want.index if t != CONTROL} == {t: want[t] for t in want.index if t != CONTROL}
    meta = pred.uns["sczarr_prediction"]
    assert meta["mode"] == options.get("mode", "delta") and meta["effect"] == options.get("effect", "expected")
    source = ad.read_h5ad(vcc_files["adata_Training.h5ad"])
    source_controls = {r.tobytes() for r in source[source.obs["target_gene"] == CONTROL].X.toarray().astype(np.float32)}
    perturbed = pred[pred.obs["target_gene"] != CONTROL].X.toarray().astype(np.float32)
    copies = np.mean([r.tobytes() in source_controls for r in perturbed])
    if options.get("mode") == "direct":
        assert copies < 0.05  # generated cells, not copies of real controls
    assert pred[pred.obs["target_gene"] == CONTROL].n_obs > 0


@pytest.mark.parametrize("model, extra", [
    ("conditional-tiny", {}),
    ("moe17b-tiny", {"engine": "deepspeed", "deepspeed_config": "ds_cpu_tiny_adapters.json"}),
])
def test_freeze_base_trains_the_conditioning_only(vcc_store, tmp_path, model, extra):
    """LoRA / conditioning-only fine-tuning on perturbation batches: the base keeps its weights."""
    from dataclasses import replace

    import torch

    from scmodel.train import CONFIGS, Trainer

    base = CONFIGS["finetune-tiny"] if model == "conditional-tiny" else CONFIGS["moe17b-tiny"]
    config = replace(base, store=vcc_store, out=str(tmp_path / model), max_steps=3, eval_every=100, save_every=100,
                     n_hvgs=64, context_genes=None, freeze_base=True, **extra)
    trainer = Trainer(config, echo=lambda *_: None)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    batches = trainer._batches()
    for _ in range(3):
        trainer.train_step([next(batches)])
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    trainer.close()
    assert changed
    if model == "moe17b-tiny":
        assert all(".adapters." in n or n.startswith("code.") or ".moe_adapter." in n for n in changed), changed
    else:
        assert all(n.startswith(trainer.model.conditioning_prefixes) for n in changed), changed


def test_import_from_a_bucket_over_http(vcc_files, axis_store, vcc_store, tmp_path, monkeypatch):
    """``--input gs://...`` through gcsfs and the GCS emulator: the same store as from disk."""
    import fsspec

    from .services import gcs_emulator

    with gcs_emulator("vcc-bucket") as endpoint:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        fsspec.config.conf.pop("gcs", None)
        fs = fsspec.filesystem("gs", token="anon", skip_instance_cache=True)
        fs.put_file(vcc_files["adata_Training.h5ad"], "vcc-bucket/challenge/adata_Training.h5ad")
        path = str(tmp_path / "from-gcs.zarr")
        config = VCCImportConfig(input="gs://vcc-bucket/challenge/adata_Training.h5ad", store=path, genes_from=axis_store,
                                 layout=LAYOUT, cluster=CLUSTER, block_chunks=2,
                                 hvg_output_dir=str(tmp_path))  # a copy of hvg_info.json is not needed to compare X
        import_vcc(config, echo=lambda *_: None)
    a, b = open_root(path), open_root(vcc_store)
    assert np.array_equal(a["X"][:], b["X"][:])
    assert np.array_equal(a["obs/target_gene_index"][:], b["obs/target_gene_index"][:])
    missing = str(tmp_path / "missing.zarr")
    with gcs_emulator("vcc-bucket") as endpoint:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        fsspec.filesystem("gs", token="anon", skip_instance_cache=True)
        with pytest.raises(VCCImportError, match="no such object"):
            import_vcc(VCCImportConfig(input="gs://vcc-bucket/challenge/nothing.h5ad", store=missing,
                                       genes_from=axis_store, layout=LAYOUT, cluster=CLUSTER), echo=lambda *_: None)
