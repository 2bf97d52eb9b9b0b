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

(the same as ``varbayes gmm fit data.npy -k 8 --distributed ...`` under torchrun)

or, in your own script started by ``torchrun``, call
``torch.distributed.init_process_group("gloo")`` (``"nccl"`` on GPUs), load this
process's shard and call ``GaussianMixture(..., distributed=True).fit(shard)``.
"""

from __future__ import annotations

import torch


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
