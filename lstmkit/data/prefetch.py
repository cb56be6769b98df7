"""Overlap host-to-device copies with compute: iterate a loader with each batch copied one batch ahead.

    for x, y in CUDAPrefetcher(loader, "cuda"):
        loss = model(x, y) ...          # batch k computes while batch k+1 is being copied

How it is safe:
* host tensors are pinned (page-locked; kept as they are if the loader already pins), so a
  `non_blocking=True` copy is a real asynchronous DMA instead of a staged synchronous one;
* the copies run on a side CUDA stream; an event recorded after them is waited on by the
  consumer's stream before the batch is handed out, so no kernel reads a half-copied batch;
* each device tensor is `record_stream`-ed on the consumer's stream, so the caching allocator
  does not hand its memory to the next copy while the consumer's kernels may still read it;
* the pinned source stays referenced until its copy has been waited on.
On a CPU device, or without CUDA, batches pass through `.to(device)` unchanged in order.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

import torch


def _map(obj: Any, fn) -> Any:
    """Apply fn to every tensor of a batch (tensors, tuples, lists, dicts, other values as they are)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_map(v, fn) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map(v, fn) for v in obj)
    if isinstance(obj, MutableMapping):
        # A copy keeps the caller's type and what it carries beyond the items (a defaultdict's
        # factory), which type(obj)({...}) would take for its first argument.
        out = copy.copy(obj)
        for k, v in obj.items():
            out[k] = _map(v, fn)
        return out
    if isinstance(obj, Mapping):  # read-only: nothing to assign into, so a plain dict
        return {k: _map(v, fn) for k, v in obj.items()}
    return obj


class CUDAPrefetcher:
    """Iterate `loader`, yielding each batch on `device`, copied one batch ahead on a side stream.

    loader: any iterable of batches (tensors, or tuples/lists/dicts of them).
    device: the target device; "cuda" devices use the overlapped path.
    pin:    pin host tensors that are not pinned yet (True); False copies them as they are.
    """

    def __init__(self, loader: Iterable, device: torch.device | str, pin: bool = True) -> None:
        self.loader = loader
        self.device = torch.device(device)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():  # torch's own error would be an AssertionError at the first batch
                raise ValueError(f"device: expected a device this machine has, got {str(self.device)!r} "
                                 "(torch.cuda.is_available() is False)")
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
        self.pin = pin

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        if self.device.type != "cuda":
            for batch in self.loader:
                yield _map(batch, lambda t: t.to(self.device))
            return
        side = torch.cuda.Stream(self.device)
        it = iter(self.loader)
        pending = self._start(it, side)
        while pending is not None:
            batch, host, event = pending
            consumer = torch.cuda.current_stream(self.device)
            consumer.wait_event(event)
            _map(batch, lambda t: t.record_stream(consumer) if t.is_cuda else None)
            del host  # the copy is ordered before anything the consumer does next
            try:
                pending = self._start(it, side)  # the next copy overlaps with this batch's compute
            except Exception:  # the loader's own error: after the batches it gave, as on the CPU path
                yield batch
                raise
            yield batch

    def _start(self, it: Iterator, side: torch.cuda.Stream):
        try:
            host = next(it)
        except StopIteration:
            return None

        def pinned(t: torch.Tensor) -> torch.Tensor:
            if self.pin and t.device.type == "cpu" and not t.is_pinned():
                return t.pin_memory()
            return t
        host = _map(host, pinned)
        with torch.cuda.stream(side):
            batch = _map(host, lambda t: t.to(self.device, non_blocking=True))
            event = torch.cuda.Event()
            event.record(side)
        return batch, host, event
