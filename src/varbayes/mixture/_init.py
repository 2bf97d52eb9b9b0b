"""Initial responsibilities r_ik for EM and CAVI: k-means (k-means++ then Lloyd),
k-means++ alone, random soft assignments, random data points.

Each function returns either hard labels (N,) int64 (the responsibilities are then
one-hot) or soft responsibilities (N, K). Every random draw comes from the
``torch.Generator`` passed in, so a seed reproduces the initialisation. The
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

from collections.abc import Callable

import torch

INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")

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


def _nearest(x: torch.Tensor, centers: torch.Tensor, chunk: int, shift=None):
    """Index (N,) of the nearest centre and the squared distance (N,) for each row.

    ``shift`` (D,), the centre of the data, is subtracted from rows and centres first: the
    expanded |x|² - 2 xᵀc + |c|² keeps its precision for data far from the origin.
    """
    n = x.shape[0]
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    dist = torch.empty(n, dtype=x.dtype, device=x.device)
    if shift is not None:
        centers = centers - shift
    c2 = (centers * centers).sum(1)
    for s in range(0, n, chunk):
        xc = x[s : s + chunk] if shift is None else x[s : s + chunk] - shift
        d2 = torch.addmm(c2, xc, centers.T, alpha=-2.0)
        d2 += (xc * xc).sum(1, keepdim=True)
        m, i = d2.min(1)
        dist[s : s + chunk] = m.clamp_min_(0.0)
        labels[s : s + chunk] = i
    return labels, dist


def _draw_index(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(n, (1,), generator=gen, device="cpu")


def kmeans_plusplus(
    x: torch.Tensor,
    k: int,
    gen: torch.Generator,
    chunk: int,
    allreduce: AllReduce = None,
    shift=None,
) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each new centre is drawn with
    probability proportional to the squared distance D(x)² to the nearest chosen one.

    Returns the centres (K, D), rows of ``x`` (N, D) (of the sharded data set when
    ``allreduce`` is given; see the module docstring).
    """
    sh = _Shards(x, allreduce)
    centers = [sh.rows(_draw_index(sh.total, gen))]
    _, dist = _nearest(x, centers[0], chunk, shift)
    for _ in range(1, k):
        cum = torch.cumsum(dist, 0)
        local_total = float(cum[-1]) if sh.n else 0.0
        totals = sh.per_process(local_total)
        total = float(totals.sum())
        if total <= 0.0:  # fewer distinct points than components
            nxt = sh.rows(_draw_index(sh.total, gen))
        else:
            u = float(torch.rand((), generator=gen, dtype=torch.float64, device="cpu"))
            target = total * u
            # the process whose share of Σ D² holds target (never one without mass)
            ends = torch.cumsum(totals, 0)
            owner = int(torch.searchsorted(ends, torch.tensor([target]), right=True))
            owner = min(owner, len(ends) - 1)
            while float(totals[owner]) <= 0.0:
                owner -= 1
            idx = torch.tensor([sh.total], dtype=torch.int64)  # out of range: contributes 0
            if owner == sh.rank:
                local_target = target - float(ends[owner] - totals[owner])
                t = torch.tensor([local_target], dtype=cum.dtype, device=cum.device)
                i = int(torch.searchsorted(cum, t, right=True))
                idx = torch.tensor([sh.offset + min(i, sh.n - 1)])
            nxt = sh.rows(idx)
        centers.append(nxt)
        _, d_new = _nearest(x, nxt, chunk, shift)
        torch.minimum(dist, d_new, out=dist)
    return torch.cat(centers)


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
    gen: torch.Generator,
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
        r = torch.rand((n, k), generator=gen, dtype=x.dtype, device="cpu").to(x.device)
        return r / r.sum(1, keepdim=True)
    if method == "random_from_data":
        sh = _Shards(x, allreduce)
        idx = torch.randperm(sh.total, generator=gen, device="cpu")[:k]
        return _nearest(x, sh.rows(idx), chunk, shift)[0]
    centers = kmeans_plusplus(x, k, gen, chunk, allreduce, shift)
    if method == "k-means++":
        return _nearest(x, centers, chunk, shift)[0]
    return lloyd(x, centers.clone(), chunk, allreduce=allreduce, shift=shift)
