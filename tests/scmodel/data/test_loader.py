"""The training loader: exactly-once coverage, seeded order, exact resume, scanpy's normalization."""

import io

import numpy as np
import pytest
import scanpy as sc
import torch

import scdata
from scmodel.data import LoaderConfig, StoreDataLoader, StoreDataset, create_hvg_dataloader
from scmodel.tokenize import BinnedTokenizer, DirectTokenizer, LogScaleTokenizer

from tests.conftest import materialized_store


@pytest.fixture(scope="module")
def store(demo_bucket, tmp_path_factory):
    return materialized_store(demo_bucket, tmp_path_factory.mktemp("loader"), n_hvgs=200)


@pytest.fixture
def crossed(monkeypatch):
    """Counts the shared-memory storages rebuilt in this process (a worker's buffer crossing)."""
    import torch.multiprocessing.reductions as reductions

    rebuilt = []
    rebuild = reductions.rebuild_storage_fd

    def counted(*args):
        rebuilt.append(1)
        return rebuild(*args)

    # pickled by name: the workers (forked after this) must find it under the original's name
    counted.__module__, counted.__qualname__ = rebuild.__module__, rebuild.__qualname__
    monkeypatch.setattr(reductions, "rebuild_storage_fd", counted)
    return rebuilt


def _rows(loader):
    return [b[1]["row"].numpy() for b in loader]


def test_exactly_once_ranks_workers_epochs(store, monkeypatch):
    n = scdata.read_manifest(store).n_committed
    for epoch in range(2):
        per_rank = []
        for rank in range(2):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", "2")
            ds = StoreDataset(LoaderConfig(store=store, batch_size=50, buffer_blocks=3, seed=4))
            loader = StoreDataLoader(ds, num_workers=2)  # default start method
            loader.set_epoch(epoch)
            rows = np.concatenate(_rows(loader))
            assert len(loader) == len(_rows(loader))
            per_rank.append(rows)
        assert len(per_rank[0]) == len(per_rank[1]) == n // 2
        everything = np.concatenate(per_rank)
        assert len(np.unique(everything)) == len(everything) == 2 * (n // 2)


def test_workers_with_prefetch_and_pinning_serve_what_in_process_serves(store):
    """Hand-offs from workers (kept as numpy arrays, so reused buffers must not be overwritten
    under them) carry the same values per cell as in-process batches; ``prefetch_factor`` and
    ``pin_memory`` go to torch's DataLoader as they are."""
    def served(workers, **options):
        config = LoaderConfig(store=store, batch_size=32, buffer_blocks=1, seed=2, handoff_cells=64, metadata=())
        loader = StoreDataLoader(StoreDataset(config), num_workers=workers, **options)
        kept = [(meta["row"].numpy(), x.numpy()) for x, meta in loader]
        return {int(r): row for rows, x in kept for r, row in zip(rows, x)}

    reference = served(0)
    got = served(2, prefetch_factor=4, pin_memory=True)
    assert got.keys() == reference.keys()
    assert all(np.array_equal(got[r], reference[r]) for r in reference)


def test_order_seeded_and_changes_by_epoch(store):
    def order(seed, epoch):
        loader = StoreDataLoader(StoreDataset(LoaderConfig(store=store, batch_size=64, seed=seed)))
        loader.set_epoch(epoch)
        return np.concatenate(_rows(loader))

    a = order(1, 0)
    np.testing.assert_array_equal(a, order(1, 0))
    assert not np.array_equal(a, order(1, 1)) and not np.array_equal(a, order(2, 0))
    assert sorted(a) == list(range(scdata.read_manifest(store).n_committed))
    experiments_per_batch = np.mean([len(np.unique(r // 128)) for r in np.array_split(a, len(a) // 64)])
    assert experiments_per_batch > 2  # batches mix several chunks, not one run of cells


@pytest.mark.parametrize("workers,buffer_blocks,stop_at,handoff",
                         [(0, 8, 6, 4096), (2, 8, 6, 4096), (0, 2, 25, 4096), (2, 1, 31, 4096), (2, 2, 13, 120),
                          (3, 2, 20, 80)])
def test_resume_mid_epoch(store, workers, buffer_blocks, stop_at, handoff):
    """The resumed loader yields exactly the remaining batches: same rows, tokens and cell IDs
    (small buffers make the resume skip whole buffers without reading them; small hand-offs make
    it resume in the middle of one)."""
    def fresh(seed=9):
        config = LoaderConfig(store=store, batch_size=40, seed=seed, buffer_blocks=buffer_blocks,
                              tokenizer=BinnedTokenizer(16), token_dtype="compact", handoff_cells=handoff,
                              metadata=("cell_id", "srx_accession"))
        loader = StoreDataLoader(StoreDataset(config), num_workers=workers)
        loader.set_epoch(1)
        return loader

    def key(batch):
        x, meta = batch
        return meta["row"].numpy(), x.numpy(), list(meta["cell_id"])

    full = [key(b) for b in fresh()]
    first = fresh()
    seen = []
    for k, batch in enumerate(first):
        seen.append(key(batch))
        if k == stop_at:
            state = first.state_dict()
            break
    resumed = fresh()
    resumed.load_state_dict(state)
    rest = [key(b) for b in resumed]
    assert len(seen) + len(rest) == len(full)
    for got, want in zip(seen + rest, full):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert got[2] == want[2]
    bad = StoreDataLoader(StoreDataset(LoaderConfig(store=store, batch_size=40, seed=10)), num_workers=workers)
    with pytest.raises(ValueError, match="cannot resume exactly"):
        bad.load_state_dict(state)


def _serve(store, monkeypatch, world, workers, state=None, stop_at=None):
    """Rows served by every rank of a (world x workers) layout, stepping together; stops after
    ``stop_at`` batches per rank and returns (rows, each rank's state), else serves the rest."""
    served, states = [], []
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        config = LoaderConfig(store=store, batch_size=30, buffer_blocks=2, seed=5, handoff_cells=90, metadata=())
        loader = StoreDataLoader(StoreDataset(config), num_workers=workers)
        loader.set_epoch(2)
        if state is not None:
            loader.load_state_dict(state)
        for k, (_, meta) in enumerate(loader):
            served.append(meta["row"].numpy())
            if stop_at is not None and k + 1 == stop_at:
                states.append(loader.state_dict())
                break
    return np.concatenate(served), states


@pytest.mark.parametrize("first,second,stop_at", [((2, 2), (1, 3), 7), ((1, 3), (2, 2), 11)])
def test_resume_at_another_scale_serves_the_rest_once(store, monkeypatch, first, second, stop_at):
    """Saved mid-epoch by 2 ranks x 2 workers, resumed by 1 rank x 3 workers (and the reverse):
    the cells served before and after are the epoch, none twice (a 2-rank layout leaves out the
    rank remainder of what it serves, as it does in any epoch)."""
    n = scdata.read_manifest(store).n_committed
    before, states = _serve(store, monkeypatch, *first, stop_at=stop_at)
    assert all(s["consumed"] == states[0]["consumed"] for s in states)  # every rank saves the same position
    assert states[0]["cells_consumed"] == len(before)
    saved = io.BytesIO()
    torch.save(states[0], saved)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)  # plain data: what train.py's checkpoints load
    after, _ = _serve(store, monkeypatch, *second, state=state)
    served = np.concatenate([before, after])
    assert len(np.unique(served)) == len(served)  # no cell twice
    assert len(served) == n - (n - len(before)) % second[0]
    assert set(served) <= set(range(n))


def test_batches_carry_store_cell_ids_and_compact_tokens(store):
    """Metadata rows match the store's obs, token dtypes follow ``token_dtype``, and reading
    ahead on threads changes nothing."""
    ids = np.asarray(scdata.open_store(store)["cell"].values).astype(str)
    batches = {}
    for dtype, threads in (("int64", 0), ("compact", 2), ("int32", 1)):
        config = LoaderConfig(store=store, batch_size=64, seed=3, buffer_blocks=2, tokenizer=BinnedTokenizer(16),
                              token_dtype=dtype, read_threads=threads, metadata=("cell_id",))
        batches[dtype] = list(StoreDataLoader(StoreDataset(config)))
    for (x64, m64), (x8, m8), (x32, _) in zip(batches["int64"], batches["compact"], batches["int32"]):
        assert x64.dtype == torch.int64 and x8.dtype == torch.uint8 and x32.dtype == torch.int32
        assert torch.equal(x64, x8.long()) and torch.equal(x64, x32.long())
        assert list(m64["cell_id"]) == list(ids[m64["row"].numpy()]) == list(m8["cell_id"])


def test_normalized_values_equal_scanpy(store):
    adata = scdata.to_anndata(store)
    adata.X = adata.X.astype(np.float64)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    loader = create_hvg_dataloader(store, batch_size=100)
    hvg_ids = list(loader.dataset.feature_ids)
    reference = adata[:, hvg_ids].X.toarray()
    for x, meta in loader:
        np.testing.assert_allclose(x.numpy(), reference[meta["row"].numpy()], rtol=1e-5, atol=1e-5)
        rows = meta["row"].numpy()
        assert list(loader.dataset.cell_ids(rows)) == list(adata.obs_names[rows])


@pytest.mark.parametrize("workers", [0, 2])
def test_metadata_codes_by_default_strings_on_request(store, workers):
    """Batches carry integer codes by default (the strings are ``dataset.categories``), strings
    with ``metadata_strings``, cell IDs when asked: each equal to anndata's reading of the store."""
    obs = scdata.to_anndata(store).obs
    loader = create_hvg_dataloader(store, batch_size=50, num_workers=workers)
    strings = create_hvg_dataloader(store, batch_size=50, num_workers=workers, metadata_strings=True,
                                    metadata=("cell_id", "srx_accession", "umi_count"))
    categories = loader.dataset.categories["srx_accession"]
    n = 0
    for (_, meta), (_, named) in zip(loader, strings):
        rows = meta["row"].numpy()
        assert meta["srx_accession"].dtype == torch.int32 and meta["umi_count"].dtype == torch.int64
        assert "cell_id" not in meta
        np.testing.assert_array_equal(categories[meta["srx_accession"].numpy()], obs["srx_accession"].values[rows])
        np.testing.assert_array_equal(meta["umi_count"].numpy(), obs["umi_count"].values[rows])
        np.testing.assert_array_equal(named["row"].numpy(), rows)
        assert list(named["srx_accession"]) == list(obs["srx_accession"].values[rows])
        assert list(named["cell_id"]) == list(obs.index[rows])
        n += len(rows)
    assert n == len(obs)
    with pytest.raises(ValueError, match="not per-cell columns of .*it has: cell_id"):
        create_hvg_dataloader(store, metadata=("srx_accession", "no_such_column"))


def test_filters_and_split(store):
    manifest = scdata.read_manifest(store)
    first = manifest.experiments[0]
    ds = StoreDataset(LoaderConfig(store=store, experiments=(first["accession"],), features="all"))
    assert len(ds.rows) == first["n_cells"]
    train = StoreDataset(LoaderConfig(store=store, split="train", val_fraction=0.25))
    val = StoreDataset(LoaderConfig(store=store, split="val", val_fraction=0.25))
    assert len(set(train.rows) & set(val.rows)) == 0 and len(train.rows) + len(val.rows) == manifest.n_committed
    x, meta = next(iter(StoreDataLoader(val)))
    assert set(val.categories["srx_accession"][meta["srx_accession"].numpy()]) <= {e["accession"] for e in manifest.experiments
                                          if e["row_start"] in set(val.rows)}


def test_split_by_cell_holds_out_a_share_of_every_experiment(store):
    """The field's split: every experiment on both sides, ``val_fraction`` of its cells held out
    (rounded), the same rows for the same seed, other rows for another; batches come from the
    side asked for."""
    manifest = scdata.read_manifest(store)
    config = dict(store=store, split_by="cell", val_fraction=0.2, seed=3)
    train = StoreDataset(LoaderConfig(split="train", **config)).rows
    val = StoreDataset(LoaderConfig(split="val", **config)).rows
    assert not set(train) & set(val) and len(train) + len(val) == manifest.n_committed
    for e in manifest.experiments:
        n = e["row_stop"] - e["row_start"]
        held = ((val >= e["row_start"]) & (val < e["row_stop"])).sum()
        assert held == round(0.2 * n) and 0 < held < n, (e["accession"], held, n)
    again = StoreDataset(LoaderConfig(split="val", **config)).rows
    other = StoreDataset(LoaderConfig(split="val", **{**config, "seed": 4})).rows
    np.testing.assert_array_equal(val, again)
    assert len(other) == len(val) and not np.array_equal(other, val)
    _, meta = next(iter(StoreDataLoader(StoreDataset(LoaderConfig(split="val", batch_size=16, **config)))))
    assert set(meta["row"].numpy()) <= set(val)
    with pytest.raises(ValueError, match="split_by"):
        LoaderConfig(store=store, split="train", split_by="donor")


def test_gene_selection_reads_x(store):
    ds = scdata.open_store(store)
    genes = tuple(ds.gene.values[[5, 17, 300]])
    loader = StoreDataLoader(StoreDataset(LoaderConfig(store=store, features="genes", genes=genes, normalize="none",
                                                       batch_size=32)))
    x, meta = next(iter(loader))
    expected = ds.counts.sel(gene=list(genes)).values[meta["row"].numpy()]
    np.testing.assert_array_equal(x.numpy(), expected)


def test_tokenizers_round_trip():
    counts = torch.tensor([[0, 1, 2, 7, 100, 5000]], dtype=torch.float32)
    direct = DirectTokenizer(n_tokens=64)
    assert direct.tokenize(counts).tolist() == [[0, 1, 2, 7, 63, 63]]
    assert direct.detokenize(direct.tokenize(counts[:, :4])).tolist() == counts[:, :4].tolist()
    logscale = LogScaleTokenizer(n_tokens=16)
    tokens = logscale.tokenize(counts)
    assert tokens[0, 0] == 0 and (tokens[0, 1:] > 0).all()
    back = logscale.detokenize(tokens)
    assert torch.all((back[0, 1:] / counts[0, 1:]).log2().abs() <= 0.6)  # within half a log2 bucket
    values = torch.log1p(torch.tensor([[0.0, 0.5, 3.0, 40.0, 900.0]]))
    fixed = BinnedTokenizer(n_tokens=64)
    t = fixed.tokenize(values)
    assert t[0, 0] == 0 and torch.all(t[0, 1:] > 0) and torch.all(t[0, 1:].diff() >= 0)
    assert torch.all((fixed.detokenize(t) - values)[0, 1:].abs() <= fixed.max_value / fixed.n_bins)
    quantile = BinnedTokenizer(n_tokens=5, edges="quantile")
    t = quantile.tokenize(values)
    assert t.tolist() == [[0, 1, 2, 3, 4]]
    edges = quantile.cell_edges(values)
    assert torch.all(quantile.detokenize(t, edges)[0, 1:].diff() > 0)


@pytest.mark.parametrize("n_tokens", [8, 16, 64, 200])
def test_numpy_tokenizer_path_equals_torch(n_tokens):
    """The loader's in-place numpy binning gives the torch tokenizer's tokens, on bin edges too."""
    tokenizer = BinnedTokenizer(n_tokens=n_tokens)
    width = np.float32(tokenizer.max_value / tokenizer.n_bins)
    edges = (np.arange(1, n_tokens) * width).astype(np.float32)
    values = np.concatenate([np.random.default_rng(n_tokens).uniform(1e-6, 9.5, 200_000).astype(np.float32), edges,
                             np.nextafter(edges, np.float32(0)), np.nextafter(edges, np.float32(20))])
    expected = tokenizer.tokenize(torch.from_numpy(values.copy())).numpy()
    got = tokenizer.tokenize_positive(values.copy(), np.int64)
    np.testing.assert_array_equal(got, expected)


def test_persistent_workers_serve_every_epoch_and_a_resume_exactly(store, crossed):
    """One loader with 2 workers over several epochs: its worker processes persist, each epoch and
    a resumed one serve exactly what an in-process loader serves, values included (epochs out of
    order, so a prefetched buffer is dropped). Batches are copied, not kept, so buffers are
    reused: each crosses to this process once, and later hand-offs of it travel as offsets."""
    def config():
        return LoaderConfig(store=store, batch_size=30, buffer_blocks=2, seed=6, handoff_cells=90, metadata=())

    def epoch_of(loader, epoch):
        loader.set_epoch(epoch)
        return {int(r): x.copy() for xs, meta in loader for r, x in zip(meta["row"].numpy(), xs.numpy())}

    reference = StoreDataLoader(StoreDataset(config()))
    loader = StoreDataLoader(StoreDataset(config()), num_workers=2)
    pids = None
    handoffs = 0
    for epoch in (0, 1, 5, 2):
        want, got = epoch_of(reference, epoch), epoch_of(loader, epoch)
        assert got.keys() == want.keys()
        assert all(np.array_equal(got[r], want[r]) for r in want)
        handoffs += len(loader.dataset.rows) // 90
        now = sorted(w.pid for w in loader._workers[0]._iterator._workers)
        assert pids is None or now == pids  # the same processes every epoch
        pids = now
    assert 0 < len(crossed) < handoffs / 4  # per ring slot (and the odd fresh buffer), not per hand-off
    # stop mid-epoch 3, resume on the same loader: the rest of the epoch, each cell once
    loader.set_epoch(3)
    seen = []
    for k, (_, meta) in enumerate(loader):
        seen.append(meta["row"].numpy())
        if k == 5:
            state = loader.state_dict()
            break
    loader.load_state_dict(state)
    rest = [meta["row"].numpy() for _, meta in loader]
    served = np.concatenate(seen + rest)
    reference.set_epoch(3)
    everything = np.concatenate([meta["row"].numpy() for _, meta in reference])
    assert len(np.unique(served)) == len(served) == len(everything)
    assert set(served) == set(everything)


def test_epochs_left_early_do_not_strand_worker_buffers(store, crossed):
    """Breaking out of epochs (DataLoader then discards the hand-offs in flight) leaves a
    persistent worker's buffers reusable: a later full epoch serves every cell once, with the
    values an in-process loader gives, from buffers that crossed to this process before."""
    config = LoaderConfig(store=store, batch_size=30, buffer_blocks=2, seed=3, handoff_cells=90, metadata=())
    loader = StoreDataLoader(StoreDataset(config), num_workers=2)
    loader.set_epoch(0)
    for _ in loader:  # a whole epoch: each worker's buffers cross once
        pass
    for epoch in range(1, 9):
        loader.set_epoch(epoch)
        for k, _ in enumerate(loader):
            if k == 4:
                break
    before = len(crossed)
    loader.set_epoch(9)
    got = {int(r): x.copy() for xs, meta in loader for r, x in zip(meta["row"].numpy(), xs.numpy())}
    reference = StoreDataLoader(StoreDataset(config))
    reference.set_epoch(9)
    want = {int(r): x.copy() for xs, meta in reference for r, x in zip(meta["row"].numpy(), xs.numpy())}
    assert got.keys() == want.keys() and all(np.array_equal(got[r], want[r]) for r in want)
    assert len(crossed) - before < len(loader.dataset.rows) // 90 / 4  # not a fresh buffer per hand-off
