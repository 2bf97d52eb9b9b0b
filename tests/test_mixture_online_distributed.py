"""Beyond one batch: stepwise online EM (partial_fit) and EM sharded over processes (gloo)."""

import socket
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from varbayes._distributed import end_process_group
from varbayes.mixture import GaussianMixture, VariationalGaussianMixture
from varbayes.monitor import ConvergenceWarning

CENTRES = np.array([[0.0, 0.0], [6.0, 1.0], [2.0, 7.0]])


def blobs(seed=0, n=2000):
    rng = np.random.default_rng(seed)
    parts = [rng.normal(size=(n, 2)) @ rng.normal(size=(2, 2)) * 0.7 + c for c in CENTRES]
    x = np.concatenate(parts)
    return x[rng.permutation(len(x))]


def inits(x, k=3, seed=1):
    rng = np.random.default_rng(seed)
    return {
        "weights_init": np.full(k, 1.0 / k),
        "means_init": x[rng.choice(len(x), k, replace=False)],
        "precisions_init": np.stack([np.eye(x.shape[1])] * k),
    }


def test_partial_fit_approaches_the_batch_solution():
    """Stepwise EM over minibatches (5 passes) ends within 2e-3 of the batch log-likelihood."""
    x = blobs()
    init = inits(x)
    init["means_init"] = CENTRES + np.random.default_rng(5).normal(size=CENTRES.shape)
    batch = GaussianMixture(3, tol=1e-8, max_iter=500, **init).fit(x)
    online = GaussianMixture(3, learning_decay=0.7, learning_offset=2.0, **init)
    rng = np.random.default_rng(0)
    for _ in range(5):
        for idx in np.array_split(rng.permutation(len(x)), 30):
            online.partial_fit(x[idx])
    assert online.n_iter_ == 150 and len(online.lower_bounds_) == 150
    gap = batch.score(x) - online.score(x)
    assert 0.0 <= gap < 2e-3 * abs(batch.score(x))
    order = np.argsort(online.means_[:, 0])
    ref = np.argsort(batch.means_[:, 0])
    np.testing.assert_allclose(online.means_[order], batch.means_[ref], atol=0.05)


def test_variational_partial_fit_on_all_rows_is_one_cavi_iteration():
    """SVI with one batch = the whole data set (ρ_0 = 1) takes exactly the CAVI step of
    fit(max_iter=1) from the same responsibilities, and reports the same ELBO."""
    x = blobs(seed=6, n=150)
    r = np.random.default_rng(1).uniform(size=(len(x), 3))
    r /= r.sum(1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        cavi = VariationalGaussianMixture(3, max_iter=1, resp_init=r).fit(x)
    svi = VariationalGaussianMixture(3, resp_init=r).partial_fit(x, n_samples=len(x))
    for name in ("means_", "covariances_", "degrees_of_freedom_", "mean_precision_"):
        np.testing.assert_allclose(getattr(svi, name), getattr(cavi, name), rtol=1e-12)
    np.testing.assert_allclose(svi.weight_concentration_, cavi.weight_concentration_, rtol=1e-12)
    np.testing.assert_allclose(svi.lower_bounds_, cavi.lower_bounds_, rtol=1e-12)


@pytest.mark.parametrize("prior", ["dirichlet_process", "dirichlet_distribution"])
def test_variational_partial_fit_approaches_the_cavi_optimum(prior):
    """Stochastic VI over minibatches of 100 (10 passes) ends within 1e-4 nats per datum
    of the batch CAVI ELBO (1.3e-5 here), with the same component means (to 0.05)."""
    x = blobs()
    # the default priors come from the data seen first: give both fits the same ones
    kw = dict(
        weight_concentration_prior_type=prior,
        random_state=0,
        mean_prior=x.mean(0),
        covariance_prior=np.cov(x.T),
    )
    batch = VariationalGaussianMixture(3, tol=1e-10, max_iter=1000, **kw).fit(x)
    online = VariationalGaussianMixture(3, learning_offset=2.0, **kw)
    rng = np.random.default_rng(0)
    for _ in range(10):
        for idx in np.array_split(rng.permutation(len(x)), 60):
            online.partial_fit(x[idx], n_samples=len(x))
    assert online.n_iter_ == 600 and np.all(np.isfinite(online.lower_bounds_))
    gap = batch.elbo(x) - online.elbo(x)  # the ELBO of each q on all of x, per datum
    assert abs(batch.lower_bound_ - batch.elbo(x)) < 1e-8  # converged: the same bound
    assert -1e-6 < gap < 1e-4
    order = np.argsort(online.means_[:, 0])
    ref = np.argsort(batch.means_[:, 0])
    np.testing.assert_allclose(online.means_[order], batch.means_[ref], atol=0.05)
    # a batch fit afterwards forgets the stream: the next partial_fit starts again
    online.fit(x[:300])
    assert online.partial_fit(x[:100], n_samples=len(x)).n_iter_ == 1


def test_variational_partial_fit_checks_n_samples():
    """n_samples is None (rows seen so far) or an integer N >= the batch size."""
    x = blobs()
    for bad in (0, -3, 2.5, True, "many"):
        with pytest.raises(ValueError, match="n_samples must be None or an integer >= 1"):
            VariationalGaussianMixture(3).partial_fit(x[:100], n_samples=bad)
    with pytest.raises(ValueError, match="at least the batch size 100; got 99"):
        VariationalGaussianMixture(3).partial_fit(x[:100], n_samples=99)
    a = VariationalGaussianMixture(3, random_state=0).partial_fit(x[:100])
    b = VariationalGaussianMixture(3, random_state=0).partial_fit(x[:100], n_samples=100)
    np.testing.assert_array_equal(a.means_, b.means_)  # N = rows seen so far = 100


def test_partial_fit_first_batch_and_feature_checks():
    """partial_fit names X for a first batch smaller than K or a later one with other features."""
    x = blobs()
    with pytest.raises(ValueError, match="X must have at least n_components=3 samples"):
        GaussianMixture(3).partial_fit(x[:2])
    gm = GaussianMixture(3, random_state=0).partial_fit(x[:100])
    with pytest.raises(ValueError, match="X has 3 features"):
        gm.partial_fit(np.ones((10, 3)))


# ----------------------------------------------------------------------------- distributed
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, x, init, variational, out):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    finished = False
    try:
        shard = np.array_split(x, world)[rank]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if variational:
                model = VariationalGaussianMixture(3, max_iter=15, tol=0, distributed=True, **init)
            else:
                model = GaussianMixture(3, max_iter=15, tol=0, distributed=True, **init)
            model.fit(shard)
        if rank == 0:
            np.savez(
                out,
                means=model.means_,
                cov=model.covariances_,
                weights=model.weights_,
                trace=np.asarray(model.lower_bounds_),
            )
        finished = True
    finally:
        end_process_group(finished)


@pytest.mark.parametrize("variational", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_two_gloo_processes_match_one_process(tmp_path, variational):
    """Two processes each holding half the rows reach the single-process model (to 1e-10)."""
    x = blobs(seed=3, n=300)
    if variational:
        r = np.random.default_rng(2).uniform(size=(len(x), 3))
        r /= r.sum(1, keepdims=True)
        init, init_local = {}, {"resp_init": r}
    else:
        init = init_local = inits(x)
    out = str(tmp_path / "rank0.npz")
    if variational:
        # each process passes its own rows' responsibilities
        parts = np.array_split(r, 2)
        ctx_init = [{"resp_init": parts[0]}, {"resp_init": parts[1]}]
        mp.spawn(_worker_vi, args=(2, _free_port(), x, ctx_init, out), nprocs=2, join=True)
    else:
        mp.spawn(_worker, args=(2, _free_port(), x, init, False, out), nprocs=2, join=True)
    got = np.load(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        cls = VariationalGaussianMixture if variational else GaussianMixture
        ref = cls(3, max_iter=15, tol=0, **init_local).fit(x)
    np.testing.assert_allclose(got["means"], ref.means_, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got["cov"], ref.covariances_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["weights"], ref.weights_, rtol=1e-10)
    np.testing.assert_allclose(got["trace"], ref.lower_bounds_, rtol=1e-10)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random_from_data"])
def test_sharded_initialisation_uses_every_shard(tmp_path, init_params):
    """Rows sorted by cluster, so rank 0's shard holds one cluster only: the sharded
    k-means / k-means++ / random-row initialisation still draws from all rows and the
    2-process fit equals the 1-process fit with the same seed (to 1e-10)."""
    x = blobs(seed=4, n=200)
    x = x[np.argsort(x[:, 1] + 0.1 * x[:, 0])]  # the cluster at y = 7 lies in rank 1's half
    init = {"random_state": 7, "init_params": init_params}
    out = str(tmp_path / "rank0.npz")
    mp.spawn(_worker, args=(2, _free_port(), x, init, False, out), nprocs=2, join=True)
    got = np.load(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = GaussianMixture(3, max_iter=15, tol=0, **init).fit(x)
    np.testing.assert_allclose(got["means"], ref.means_, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got["trace"], ref.lower_bounds_, rtol=1e-10)
    if init_params == "kmeans":  # it found the three clusters, one only in rank 1's rows
        found = np.sort(ref.means_[:, 1])
        np.testing.assert_allclose(found, np.sort(CENTRES[:, 1]), atol=0.5)


SEEDS = {"none": lambda rank: None, "generator": lambda rank: torch.Generator().manual_seed(rank)}


def _worker_draws(rank, world, port, x, out):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        shard = np.array_split(x, world)[rank]
        draws = []
        for make in (*SEEDS.values(), lambda rank: 5):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                gm = GaussianMixture(3, random_state=make(rank), distributed=True, max_iter=2)
                draws.append(gm.fit(shard).sample(6)[0])
        np.save(f"{out}{rank}.npy", np.stack(draws))
    finally:
        end_process_group(True)


def test_unseeded_processes_draw_the_same_numbers(tmp_path):
    """random_state None or a generator (different on each rank): rank 0's seed is
    broadcast, so every process makes the same random draws (here: fit, then sample);
    an int seeds each, as in one process holding all the rows."""
    x = blobs(seed=2, n=100)
    out = str(tmp_path / "draws")
    mp.spawn(_worker_draws, args=(2, _free_port(), x, out), nprocs=2, join=True)
    a, b = np.load(out + "0.npy"), np.load(out + "1.npy")
    np.testing.assert_array_equal(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one = GaussianMixture(3, random_state=5, max_iter=2).fit(x).sample(6)[0]
    np.testing.assert_allclose(a[2], one, rtol=1e-10, atol=1e-10)
    assert not np.allclose(a[0], one)  # the broadcast seed is not a fixed one


def _worker_vi(rank, world, port, x, init_per_rank, out):
    _worker(rank, world, port, x, init_per_rank[rank], True, out)
