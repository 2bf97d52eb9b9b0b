"""Initial responsibilities r_ik for EM and CAVI: k-means (k-means++ then Lloyd),
k-means++ alone, random soft assignments, random data points.

Each function returns either hard labels (N,) int64 (the responsibilities are then
one-hot) or soft responsibilities (N, K). Every random number comes from one
:class:`Draws`, so a seed reproduces the initialisation. For an integer
``random_state`` (below 2³²) or a ``numpy.random.RandomState`` the numbers are
scikit-learn's own: the same stream, consumed in the same order by the same algorithm
(greedy k-means++ with 2 + ⌊log K⌋ candidates per centre, as ``sklearn.cluster.KMeans``
seeds it; K uniforms per row for ``random``; ``choice(N, K, replace=False)`` for
``random_from_data``), so the same seed gives scikit-learn's initial clusters, in
scikit-learn's order (up to the rounding of the cumulative sums that pick a row). The
distance computations run in chunks of rows: memory O(chunk x K) besides the data.

Rows sharded over processes: pass ``allreduce`` (a function summing a list of tensors
over all processes, :func:`varbayes.mixture.distributed.allreduce_sum`) and give every
process a generator with the same seed. The draws are then made over the whole data
set: a row is chosen with probability D(x)² / Σ_all D², summed over every shard, the
process holding it contributes its coordinates, and Lloyd's steps all-reduce the
per-cluster sums. Every process ends with the same centres, the ones one process
holding all rows (in shard order) would choose, up to the order of floating-point sums.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np
import torch

INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")


class Draws:
    """The initialisation's random numbers, from a ``torch.Generator``, a NumPy
    ``RandomState`` (scikit-learn's stream) or a NumPy ``Generator``.

    :meth:`from_random_state` maps a ``random_state`` as scikit-learn does: None a fresh
    stream, an int (< 2³²) ``RandomState(int)``, a ``RandomState`` itself (advanced by
    each fit, so successive fits differ), larger ints ``numpy.random.default_rng(int)``.
    """

    def __init__(self, source):
        self.source = source

    @classmethod
    def from_random_state(cls, random_state) -> Draws:
        if random_state is None:
            return cls(np.random.RandomState())
        if isinstance(random_state, numbers.Integral):
            seed = int(random_state)
            return cls(np.random.RandomState(seed) if seed < 2**32 else np.random.default_rng(seed))
        return cls(random_state)

    def uniform(self, shape) -> torch.Tensor:
        """float64 uniforms on [0, 1), on the CPU."""
        if isinstance(self.source, torch.Generator):
            return torch.rand(shape, generator=self.source, dtype=torch.float64)
        if isinstance(self.source, np.random.RandomState):
            return torch.from_numpy(self.source.uniform(size=shape))
        return torch.from_numpy(self.source.random(shape))

    def index(self, n: int) -> int:
        """A row drawn uniformly from range(n) (``RandomState.choice(n, p=1/n)``'s draw)."""
        return min(int(float(self.uniform(1)) * n), n - 1)

    def multinomial(self, n: int, p: torch.Tensor) -> torch.Tensor:
        """Counts (K,) int64 of n draws from the probabilities ``p`` (K,)."""
        if isinstance(self.source, torch.Generator):
            labels = torch.multinomial(p, n, replacement=True, generator=self.source)
            return torch.bincount(labels, minlength=len(p))
        return torch.from_numpy(np.asarray(self.source.multinomial(n, p.numpy()), np.int64))

    def normal(self, mean: torch.Tensor, cov: torch.Tensor, n: int) -> torch.Tensor:
        """n draws (n, D) float64 of N(mean, Σ): ``cov`` is Σ (D, D), its diagonal (D,) or
        one variance (). NumPy sources use their own ``multivariate_normal`` (which factors
        Σ by SVD) or ``standard_normal``, as ``sklearn.mixture.GaussianMixture.sample``
        does; a torch generator uses the Cholesky factor."""
        mean, cov = mean.double().cpu(), cov.double().cpu()
        d = mean.shape[0]
        if isinstance(self.source, torch.Generator):
            eps = torch.randn((n, d), generator=self.source, dtype=torch.float64)
            if cov.ndim == 2:
                return mean + eps @ torch.linalg.cholesky(cov).T
            return mean + eps * cov.sqrt()
        if cov.ndim == 2:
            return torch.from_numpy(self.source.multivariate_normal(mean.numpy(), cov.numpy(), n))
        return mean + torch.from_numpy(self.source.standard_normal((n, d))) * cov.sqrt()

    def subset(self, n: int, k: int) -> torch.Tensor:
        """k distinct rows of range(n), int64, in the order drawn."""
        if isinstance(self.source, torch.Generator):
            return torch.randperm(n, generator=self.source)[:k]
        return torch.from_numpy(np.asarray(self.source.choice(n, k, replace=False), np.int64))


AllReduce = Callable[[list[torch.Tensor]], list[torch.Tensor]] | None


def _sum(tensors: list[torch.Tensor], allreduce: AllReduce) -> list[torch.Tensor]:
    return tensors if allreduce is None else allreduce(tensors)


class _Shards:
    """Where this process's rows lie in the global row order: rows [offset, offset + n)
    of N_total, and every process's share of a per-process quantity."""

    def __init__(self, x: torch.Tensor, allreduce: AllReduce):
        self.x, self.allreduce = x, allreduce
        self.n = x.shape[0]
        if allreduce is None:
            self.rank, self.sizes = 0, torch.tensor([float(self.n)], dtype=torch.float64)
        else:
            self.rank = torch.distributed.get_rank()
            self.sizes = self.per_process(float(self.n))
        self.offset = int(self.sizes[: self.rank].sum())
        self.total = int(self.sizes.sum())

    def per_process(self, value: float) -> torch.Tensor:
        """(P,) float64: ``value`` of every process, in rank order."""
        if self.allreduce is None:
            return torch.tensor([value], dtype=torch.float64)
        world = torch.distributed.get_world_size()
        v = torch.zeros(world, dtype=torch.float64)
        v[self.rank] = value
        return self.allreduce([v.to(self.x.device)])[0].cpu()

    def rows(self, global_idx: torch.Tensor) -> torch.Tensor:
        """The rows (len(global_idx), D) with these global indices, on every process."""
        local = global_idx - self.offset
        if self.allreduce is None:
            return self.x[local.to(self.x.device)]
        mine = (local >= 0) & (local < self.n)
        out = self.x.new_zeros((global_idx.shape[0], self.x.shape[1]))
        out[mine.to(self.x.device)] = self.x[local[mine].to(self.x.device)]
        return self.allreduce([out])[0]


def _distances(x: torch.Tensor, centers: torch.Tensor, chunk: int, shift=None):
    """Per chunk of rows: (start, the squared distances (C, J) to the J ``centers``).

    ``shift`` (D,), the centre of the data, is subtracted from rows and centres first: the
    expanded |x|² - 2 xᵀc + |c|² keeps its precision for data far from the origin.
    """
    if shift is not None:
        centers = centers - shift
    c2 = (centers * centers).sum(1)
    for s in range(0, x.shape[0], chunk):
        xc = x[s : s + chunk] if shift is None else x[s : s + chunk] - shift
        d2 = torch.addmm(c2, xc, centers.T, alpha=-2.0)
        d2 += (xc * xc).sum(1, keepdim=True)
        yield s, d2.clamp_min_(0.0)


def _nearest(x: torch.Tensor, centers: torch.Tensor, chunk: int, shift=None):
    """Index (N,) of the nearest centre and the squared distance (N,) for each row."""
    n = x.shape[0]
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    dist = torch.empty(n, dtype=x.dtype, device=x.device)
    for s, d2 in _distances(x, centers, chunk, shift):
        dist[s : s + d2.shape[0]], labels[s : s + d2.shape[0]] = d2.min(1)
    return labels, dist


def kmeans_plusplus(
    x: torch.Tensor,
    k: int,
    draws: Draws,
    chunk: int,
    allreduce: AllReduce = None,
    shift=None,
) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, with scikit-learn's greedy
    step): the first centre is a uniform row; each next one is the best of
    L = 2 + ⌊log K⌋ candidates, each drawn with probability D(x)² / Σ D² (D the distance
    to the nearest chosen centre), the candidate that leaves the smallest potential
    Σ_i min(D(x_i)², |x_i - c|²).

    Returns the centres (K, D), rows of ``x`` (N, D) (of the sharded data set when
    ``allreduce`` is given; see the module docstring).
    """
    sh = _Shards(x, allreduce)
    trials = 2 + int(math.log(k))
    centers = [sh.rows(torch.tensor([draws.index(sh.total)]))]
    _, dist = _nearest(x, centers[0], chunk, shift)
    for _ in range(1, k):
        cum = torch.cumsum(dist, 0)
        totals = sh.per_process(float(cum[-1]) if sh.n else 0.0)
        total = float(totals.sum())
        if total <= 0.0:  # fewer distinct points than components
            centers.append(sh.rows(torch.tensor([draws.index(sh.total)])))
            continue
        targets = draws.uniform(trials) * total
        cand = sh.rows(_pick(targets, cum, totals, sh))
        pot = x.new_zeros(trials)
        for s, d2 in _distances(x, cand, chunk, shift):
            pot += torch.minimum(d2, dist[s : s + d2.shape[0], None]).sum(0)
        (pot,) = _sum([pot], allreduce)
        best = cand[int(pot.argmin())][None]
        centers.append(best)
        _, d_new = _nearest(x, best, chunk, shift)
        torch.minimum(dist, d_new, out=dist)
    return torch.cat(centers)


def _pick(targets: torch.Tensor, cum: torch.Tensor, totals: torch.Tensor, sh: _Shards):
    """Global row indices (L,) holding the ``targets`` (L,) in the cumulative Σ D² over all
    processes: the first row whose cumulative sum reaches the target (``searchsorted``,
    left side, as scikit-learn). The owner of a target is the process whose share holds
    it (never one without mass); other processes give an out-of-range index, which
    :meth:`_Shards.rows` ignores."""
    ends = torch.cumsum(totals, 0)
    out = torch.full((len(targets),), sh.total, dtype=torch.int64)
    for j, target in enumerate(targets.tolist()):
        owner = min(int(torch.searchsorted(ends, torch.tensor([target]))), len(ends) - 1)
        while float(totals[owner]) <= 0.0:
            owner -= 1
        if owner == sh.rank:
            local = torch.tensor([target - float(ends[owner] - totals[owner])], dtype=cum.dtype)
            i = int(torch.searchsorted(cum, local.to(cum.device)))
            out[j] = sh.offset + min(i, sh.n - 1)
    return out


def lloyd(
    x: torch.Tensor,
    centers: torch.Tensor,
    chunk: int,
    max_iter: int = 100,
    allreduce: AllReduce = None,
    shift=None,
):
    """Lloyd's k-means iterations from ``centers`` (K, D) until no label changes
    (on any process). A cluster that loses all its points keeps its previous centre.
    Returns labels (N,)."""
    k = centers.shape[0]
    labels, _ = _nearest(x, centers, chunk, shift)
    for _ in range(max_iter):
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        sums, counts = _sum([sums, counts], allreduce)
        keep = counts == 0
        new = sums / counts.clamp_min(1.0)[:, None]
        centers = torch.where(keep[:, None], centers, new)
        new_labels, _ = _nearest(x, centers, chunk, shift)
        changed = (new_labels != labels).sum().to(x.dtype).reshape(1)
        (changed,) = _sum([changed], allreduce)
        if float(changed) == 0.0:
            break
        labels = new_labels
    return labels


def initial_assignment(
    x: torch.Tensor,
    k: int,
    method: str,
    draws: Draws,
    chunk: int,
    allreduce: AllReduce = None,
    shift=None,
):
    """Labels (N,) or responsibilities (N, K) for ``method`` in :data:`INIT_PARAMS`.

    ``shift`` (D,): the centre of the data, subtracted in every distance computation.

    * ``kmeans``: k-means++ seeding then Lloyd's iterations, hard labels.
    * ``k-means++``: the k-means++ centres; every row goes to its nearest centre.
    * ``random_from_data``: K distinct rows drawn uniformly; nearest-centre labels.
    * ``random``: r_ik uniform on (0, 1), normalised over k.

    Unlike scikit-learn, ``k-means++`` and ``random_from_data`` assign every row to
    its nearest centre rather than only the chosen rows, so that the first
    covariances are those of real clusters, not ``reg_covar`` alone. With
    ``allreduce`` the centres are chosen over all processes' rows (module docstring).
    """
    n = x.shape[0]
    if method == "random":
        r = draws.uniform((n, k)).to(device=x.device, dtype=x.dtype)
        return r / r.sum(1, keepdim=True)
    if method == "random_from_data":
        sh = _Shards(x, allreduce)
        return _nearest(x, sh.rows(draws.subset(sh.total, k)), chunk, shift)[0]
    centers = kmeans_plusplus(x, k, draws, chunk, allreduce, shift)
    if method == "k-means++":
        return _nearest(x, centers, chunk, shift)[0]
    return lloyd(x, centers.clone(), chunk, allreduce=allreduce, shift=shift)
