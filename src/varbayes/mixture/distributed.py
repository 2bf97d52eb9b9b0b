"""Data sharded across processes: EM and CAVI under ``torch.distributed``.

Every quantity a mixture fit needs from the data is a *sum over data points*: the
sufficient statistics (N_k, Σ_i r_ik x_i, Σ_i r_ik q(x_i)), the log-likelihood
Σ_i log p(x_i) and the count N. When each of P processes holds a shard of the rows,
one ``all_reduce(SUM)`` of those sums per iteration gives every process the
statistics of the whole data set, so all processes take the same M-step and reach
the same model as one process holding all rows (up to the order of floating-point
additions). The initialisation, too, runs over all shards: k-means++ draws each
centre from all rows with probability D(x)² / Σ D² summed over every process, Lloyd's
steps all-reduce the per-cluster sums, and ``random_from_data`` draws global row
indices. All processes draw the same numbers (an int ``random_state`` seeds each; with
None or a generator, rank 0's draw is broadcast as the seed), so they start from the
same parameters: for an int seed, the ones a single process holding the rows in shard
order would start from. Sorted or clustered shards are therefore fine.

Run, for example, with two CPU processes (gloo), each reading its share of the rows
of a .npy file (memory-mapped, so no process loads the whole array)::

    torchrun --nproc_per_node=2 -m varbayes.mixture data.npy -k 8 --save model

or, in your own script started by ``torchrun``, call
``torch.distributed.init_process_group("gloo")`` (``"nccl"`` on GPUs), load this
process's shard and call ``GaussianMixture(..., distributed=True).fit(shard)``.
"""

from __future__ import annotations

import torch

from varbayes._distributed import end_process_group


def is_active() -> bool:
    """True when ``torch.distributed`` is available, initialised and has > 1 process."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device(t: torch.Tensor) -> torch.Tensor:
    # gloo reduces CPU tensors; NCCL needs CUDA tensors. Keep each where its backend wants it.
    backend = torch.distributed.get_backend()
    if backend == "nccl" and t.device.type != "cuda":
        return t.cuda()
    if backend == "gloo" and t.device.type != "cpu":
        return t.cpu()
    return t


def allreduce_sum(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sum each tensor over all processes with ONE collective; returns new tensors."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dev = flat.device
    buf = _comm_device(flat.contiguous())
    torch.distributed.all_reduce(buf, op=torch.distributed.ReduceOp.SUM)
    buf = buf.to(dev)
    out, pos = [], 0
    for t in tensors:
        out.append(buf[pos : pos + t.numel()].view_as(t))
        pos += t.numel()
    return out


def broadcast(tensors: list[torch.Tensor], src: int = 0) -> list[torch.Tensor]:
    """Rank ``src``'s values of ``tensors`` (same shapes on every rank), on every rank."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dev = flat.device
    buf = _comm_device(flat.contiguous())
    torch.distributed.broadcast(buf, src=src)
    buf = buf.to(dev)
    out, pos = [], 0
    for t in tensors:
        out.append(buf[pos : pos + t.numel()].view_as(t).clone())
        pos += t.numel()
    return out


def main(argv=None) -> int:
    """Entry point of ``torchrun ... -m varbayes.mixture DATA.npy -k K``."""
    import argparse
    import os

    import numpy as np

    p = argparse.ArgumentParser(
        prog="torchrun --nproc_per_node=P -m varbayes.mixture",
        description="EM (or CAVI) on a .npy file whose rows are sharded over torchrun processes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("data", help=".npy file of shape (N, D)")
    p.add_argument("-k", "--n-components", type=int, required=True, help="K")
    p.add_argument("--covariance", default="full", help="covariance type")
    p.add_argument("--variational", action="store_true", help="CAVI instead of EM")
    p.add_argument("--max-iter", type=int, default=100, help="largest number of iterations")
    p.add_argument("--tol", type=float, default=None, help="tolerance on the ELBO per datum")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation")
    p.add_argument("--backend", default=None, help="gloo or nccl (default: nccl if CUDA)")
    p.add_argument("--save", default=None, help="directory for the model (rank 0 writes it)")
    args = p.parse_args(argv)

    from varbayes.mixture import GaussianMixture, VariationalGaussianMixture

    try:
        rows = np.load(args.data, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"data: cannot read {args.data!r} as a .npy array ({exc})") from exc
    if rows.ndim != 2:
        raise ValueError(f"data must hold a 2-D array (N, D); got shape {rows.shape}")
    cuda = torch.cuda.is_available()
    backend = args.backend or ("nccl" if cuda else "gloo")
    torch.distributed.init_process_group(backend)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if backend == "nccl" else "cpu"
    finished = False
    try:
        bounds = np.linspace(0, rows.shape[0], world + 1).astype(int)
        shard = np.array(rows[bounds[rank] : bounds[rank + 1]], dtype=np.float64)  # a copy
        cls = VariationalGaussianMixture if args.variational else GaussianMixture
        extra = {} if args.tol is None else {"tol": args.tol}
        model = cls(
            args.n_components,
            covariance_type=args.covariance,
            max_iter=args.max_iter,
            **extra,
            random_state=args.seed,
            device=device,
            distributed=True,
        ).fit(shard)
        if rank == 0:
            print(f"{world} processes ({backend}), {rows.shape[0]} rows")
            print(f"ELBO per datum: {model.lower_bound_:.6f}")
            print(f"iterations: {model.n_iter_}, converged: {model.converged_}")
            if args.save:
                model.save(args.save)
                print(f"saved: {args.save}")
        finished = True
    finally:
        end_process_group(finished)
    return 0
