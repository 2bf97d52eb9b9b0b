"""Ending a ``torch.distributed`` process group that varbayes itself started."""

from __future__ import annotations

import gc

import torch.distributed as dist


def end_process_group(finished: bool) -> None:
    """Destroy the default process group, after a barrier when every rank ``finished``.

    The barrier keeps a rank from tearing down its connections while rank 0 is still
    writing files (without it gloo may abort the early rank). ``gc.collect()`` first frees
    wrappers such as ``DistributedDataParallel``, which sit in reference cycles and would
    otherwise keep the group's worker threads alive until interpreter shutdown. After an
    error on this rank (``finished=False``) no barrier is entered: the other ranks may never
    reach it.
    """
    gc.collect()
    try:
        if finished:
            dist.barrier()  # raises, rather than hangs, when a peer has already gone
    finally:
        dist.destroy_process_group()
