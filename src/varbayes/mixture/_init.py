"""Initial responsibilities r_ik for EM and CAVI: k-means (k-means++ then Lloyd),
k-means++ alone, random soft assignments, random data points.

Each function returns either hard labels (N,) int64 (the responsibilities are then
one-hot) or soft responsibilities (N, K). Every random draw comes from the
``torch.Generator`` passed in, so a seed reproduces the initialisation. The
distance computations run in chunks of rows: memory O(chunk x K) besides the data.
"""

from __future__ import annotations

import torch

INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")


def _nearest(x: torch.Tensor, centers: torch.Tensor, chunk: int):
    """Index (N,) of the nearest centre and the squared distance (N,) for each row."""
    n = x.shape[0]
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    dist = torch.empty(n, dtype=x.dtype, device=x.device)
    c2 = (centers * centers).sum(1)
    for s in range(0, n, chunk):
        xc = x[s : s + chunk]
        d2 = torch.addmm(c2, xc, centers.T, alpha=-2.0)
        d2 += (xc * xc).sum(1, keepdim=True)
        m, i = d2.min(1)
        dist[s : s + chunk] = m.clamp_min_(0.0)
        labels[s : s + chunk] = i
    return labels, dist


def kmeans_plusplus(x: torch.Tensor, k: int, gen: torch.Generator, chunk: int):
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each new centre is drawn with
    probability proportional to the squared distance D(x)² to the nearest chosen one.

    Returns the indices (K,) of the chosen rows of ``x`` (N, D).
    """
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=gen, device="cpu"))
    idx = [first]
    _, dist = _nearest(x, x[first : first + 1], chunk)
    for _ in range(1, k):
        total = dist.sum()
        if float(total) <= 0.0:  # fewer distinct points than components
            nxt = int(torch.randint(n, (1,), generator=gen, device="cpu"))
        else:
            u = float(torch.rand((), generator=gen, dtype=torch.float64, device="cpu"))
            cum = torch.cumsum(dist, 0)
            nxt = int(torch.searchsorted(cum, (cum[-1] * u).reshape(1)))
            nxt = min(nxt, n - 1)
        idx.append(nxt)
        _, d_new = _nearest(x, x[nxt : nxt + 1], chunk)
        torch.minimum(dist, d_new, out=dist)
    return torch.as_tensor(idx, dtype=torch.int64, device=x.device)


def lloyd(x: torch.Tensor, centers: torch.Tensor, chunk: int, max_iter: int = 100):
    """Lloyd's k-means iterations from ``centers`` (K, D) until the labels stop changing.

    A cluster that loses all its points keeps its previous centre. Returns labels (N,).
    """
    k = centers.shape[0]
    labels, _ = _nearest(x, centers, chunk)
    for _ in range(max_iter):
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        keep = counts == 0
        new = sums / counts.clamp_min(1.0)[:, None]
        centers = torch.where(keep[:, None], centers, new)
        new_labels, _ = _nearest(x, centers, chunk)
        if bool((new_labels == labels).all()):
            break
        labels = new_labels
    return labels


def initial_assignment(x: torch.Tensor, k: int, method: str, gen: torch.Generator, chunk: int):
    """Labels (N,) or responsibilities (N, K) for ``method`` in :data:`INIT_PARAMS`.

    * ``kmeans``: k-means++ seeding then Lloyd's iterations, hard labels.
    * ``k-means++``: the k-means++ centres; every row goes to its nearest centre.
    * ``random_from_data``: K distinct rows drawn uniformly; nearest-centre labels.
    * ``random``: r_ik uniform on (0, 1), normalised over k.

    Unlike scikit-learn, ``k-means++`` and ``random_from_data`` assign every row to
    its nearest centre rather than only the chosen rows, so that the first
    covariances are those of real clusters, not ``reg_covar`` alone.
    """
    n = x.shape[0]
    if method == "random":
        r = torch.rand((n, k), generator=gen, dtype=x.dtype, device="cpu").to(x.device)
        return r / r.sum(1, keepdim=True)
    if method == "random_from_data":
        idx = torch.randperm(n, generator=gen, device="cpu")[:k].to(x.device)
        return _nearest(x, x[idx], chunk)[0]
    idx = kmeans_plusplus(x, k, gen, chunk)
    if method == "k-means++":
        return _nearest(x, x[idx], chunk)[0]
    return lloyd(x, x[idx].clone(), chunk)
