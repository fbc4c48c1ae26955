"""Device and thread helpers: checked device names, thread counts set for one block only."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

__all__ = ["side_generators", "torch_device", "torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (unchanged if None), then restore the
    previous count: no process-wide change outlives the call."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_device(device: str | torch.device) -> torch.device:
    """``torch.device(device)``, with a one-line ValueError for a bad name or missing CUDA."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") \
            from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(dev)!r} was requested but CUDA is not available on this "
                         "machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={str(dev)!r} was requested but this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    return dev


def side_generators(seeds: Sequence[int], device: str | torch.device, multiplier: int,
                    offset: int) -> list[torch.Generator]:
    """One generator per model for a part of training that must not draw from the training
    generators (an ``extra_loss``), seeded ``(seed * multiplier + offset) mod (2^63 - 1)``: each
    part picks its own constants, so that the parts' streams differ from each other and from
    the training stream of the same seed."""
    return [torch.Generator(device=device).manual_seed((int(s) * multiplier + offset)
                                                       % (2**63 - 1)) for s in seeds]
