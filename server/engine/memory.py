"""Device memory as the engine sees it: the admission budget and the allocated/peak readings.

What it is: `CudaMemory` (PyTorch's caching-allocator counters, cheap host-side reads) and
`TrackedMemory` for CPUs, where no allocator reports tensor bytes: there the engine tells it what
it holds (model weights, live KV caches, reservations) and the activation estimate of each step.
`resolve_budget` picks the budget that admission control fills. What it is not: device-level
truth; DCGM/NVML see other processes and the CUDA context, which these counters do not.

Invariant: `end_step` returns the largest memory in use during the step just run, and `peak`
never decreases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import torch

log = logging.getLogger(__name__)
CPU_DEFAULT_BUDGET = 4 << 30


class DeviceMemory(Protocol):
    device: str  # the label on memory metrics, e.g. "cuda:0" or "cpu"

    def free_bytes(self) -> int | None:
        """Free device memory now, or None where the device has no such notion."""
        ...

    def track(self, kv_bytes: int, reserved_bytes: int) -> None:
        """What the engine's admitted requests hold and have reserved (CPU bookkeeping)."""
        ...

    def begin_step(self) -> None: ...

    def end_step(self, activation_bytes: int) -> int:
        """Peak bytes during the step; `activation_bytes` is the step's own estimate."""
        ...

    def allocated(self) -> int: ...

    def reserved(self) -> int: ...

    def peak(self) -> int: ...

    def transient(self, fn: Callable[[], object]) -> int | None:
        """Most bytes `fn()` held at once beyond what was allocated before it, or None where
        the device cannot tell."""
        ...


class CudaMemory:
    """PyTorch's CUDA allocator counters for one device."""

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self.device = str(device)
        self._peak = 0

    def free_bytes(self) -> int | None:
        torch.cuda.empty_cache()  # blocks the allocator keeps count as used otherwise
        free, _total = torch.cuda.mem_get_info(self._device)
        return int(free)

    def track(self, kv_bytes: int, reserved_bytes: int) -> None:
        pass  # the allocator knows

    def begin_step(self) -> None:
        torch.cuda.reset_peak_memory_stats(self._device)

    def end_step(self, activation_bytes: int) -> int:
        step_peak = int(torch.cuda.max_memory_allocated(self._device))
        self._peak = max(self._peak, step_peak)
        return step_peak

    def allocated(self) -> int:
        return int(torch.cuda.memory_allocated(self._device))

    def reserved(self) -> int:
        return int(torch.cuda.memory_reserved(self._device))

    def peak(self) -> int:
        return max(self._peak, self.allocated())

    def transient(self, fn: Callable[[], object]) -> int | None:
        torch.cuda.synchronize(self._device)
        before = int(torch.cuda.memory_allocated(self._device))
        torch.cuda.reset_peak_memory_stats(self._device)
        fn()
        torch.cuda.synchronize(self._device)
        return int(torch.cuda.max_memory_allocated(self._device)) - before


class TrackedMemory:
    """CPU bookkeeping: weights + live KV caches (+ the step's activation estimate at its peak)."""

    def __init__(self, weight_bytes: int, device: str = "cpu") -> None:
        self.device = device
        self.weight_bytes = weight_bytes
        self._kv = 0
        self._reserved = 0
        self._peak = weight_bytes

    def free_bytes(self) -> int | None:
        return None

    def track(self, kv_bytes: int, reserved_bytes: int) -> None:
        self._kv, self._reserved = kv_bytes, reserved_bytes
        self._peak = max(self._peak, self.allocated())

    def begin_step(self) -> None:
        pass

    def end_step(self, activation_bytes: int) -> int:
        step_peak = self.allocated() + activation_bytes
        self._peak = max(self._peak, step_peak)
        return step_peak

    def allocated(self) -> int:
        return self.weight_bytes + self._kv

    def reserved(self) -> int:
        return self.weight_bytes + self._reserved

    def peak(self) -> int:
        return self._peak

    def transient(self, fn: Callable[[], object]) -> int | None:
        return None  # no allocator reports tensor bytes on a CPU


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def memory_for(device: torch.device, weight_bytes: int) -> DeviceMemory:
    if device.type == "cuda":
        return CudaMemory(device)
    return TrackedMemory(weight_bytes, str(device))


def resolve_budget(configured: int | None, memory: DeviceMemory, headroom: int) -> int:
    """The configured budget, else free device memory minus headroom, else the CPU default."""
    if configured is not None:
        return configured
    free = memory.free_bytes()
    if free is None:
        return CPU_DEFAULT_BUDGET
    budget = free - headroom
    if budget <= 0:
        log.warning("only %d bytes free after warm-up, below the headroom %d", free, headroom)
    return max(0, budget)
