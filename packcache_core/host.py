"""The host a generation runs on: intra-op threads, and freed activation blocks kept.

What it is: `prepare_host(device, threads)`, the one call every entry point makes before it
generates (`packcache serve`, `packcache generate`, the benchmarks, the training script): it
sets torch's intra-op threads and, on a CPU, tunes the allocator with `keep_freed_blocks()`;
`release_freed_blocks()` hands free heap back at once after a rare large burst (big uploads).
What it is not: a device memory manager (CUDA tensors use PyTorch's caching allocator) or
anything a result depends on (threads and allocator change speed, never a value).

Threads: by default one intra-op thread (`DEFAULT_THREADS`). OpenMP's parallel regions end in a
barrier, and a CPU shared with other work deschedules one of the threads at some of the many
small ops of a step; every other thread then waits for it. Measured on the 2-core development
VM with two CPU-bound processes beside it: `packcache generate` of the default clip took 11.4 s
per latent frame with two threads and 0.37 s with one (benchmarks/README.md, "Threads"). On an
idle CPU more threads help large models; `threads` (PACKCACHE_THREADS, `--threads`) sets it.

`keep_freed_blocks()` tunes glibc's malloc (the allocator PyTorch's CPU tensors come from):
blocks up to 32 MiB come from one heap that all threads share, and up to 1 GiB of freed heap
stays mapped instead of going back to the kernel.

Why: by default glibc returns the top of the heap to the kernel once more than twice its mmap
threshold (at most 2 x 32 MiB) is free there, and maps blocks above the threshold afresh. A
forward that carries several requests' rows frees and allocates tens of MiB per layer (four
`paper-shaped` requests: an MLP activation of 8 rows x 988 tokens x 688 in float32 is 22 MB),
so those temporaries keep coming back as new pages that the kernel zero-fills on first touch.
Measured on a 2-core CPU (benchmarks/README.md, "Step-level batching"): with four
`paper-shaped` requests the median batched denoising tick took 12.8 s with glibc's defaults and
11.9 s tuned, while interleaved ticks took 11.6 s either way (batched / interleaved throughput
0.90x -> 0.98x); a batched forward of the four took 1.0-1.2 million minor page faults with the
defaults, 0.96 million tuned. The ~240,000 left per request and step, in both modes, are the
sampler's (slots, codes) float32 temporaries (~245 MB each), above glibc's largest mmap
threshold (32 MiB), so mapped afresh either way. A thread other than the main one (the
server's engine) allocates from an arena of its own, whose 64 MiB sub-heaps are unmapped when
free whatever the trim threshold, hence one arena.

Invariant: nothing changes at import; the call changes where freed memory goes, never a value.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import NamedTuple

import torch

DEFAULT_THREADS = 1  # intra-op threads unless the caller says otherwise (see above)

# mallopt parameters (glibc's malloc.h) and the values we set
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
SETTINGS = (
    (M_ARENA_MAX, 1),
    (M_MMAP_THRESHOLD, 32 << 20),  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
    (M_TRIM_THRESHOLD, 1 << 30),
)


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return libc if libc is not None and hasattr(libc, "gnu_get_libc_version") else None


def keep_freed_blocks() -> bool:
    """Tune glibc's malloc for this process (see the module docstring).

    Returns False where the C library is not glibc (nothing is changed there)."""
    libc = _glibc()
    if libc is None:
        return False
    return all([libc.mallopt(param, value) == 1 for param, value in SETTINGS])


class Host(NamedTuple):
    threads: int
    malloc_tuned: bool  # False on a GPU, or where the C library is not glibc


def prepare_host(
    device: torch.device | str, threads: int | None = None, tune_malloc: bool = True
) -> Host:
    """Set up this process for generating on `device`: `threads` intra-op threads (default
    `DEFAULT_THREADS`) and, on a CPU, glibc's malloc tuned (`keep_freed_blocks`; a benchmark
    comparing allocators passes `tune_malloc=False`)."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    n = threads or DEFAULT_THREADS
    torch.set_num_threads(n)
    cpu = torch.device(device).type == "cpu"
    return Host(n, cpu and tune_malloc and keep_freed_blocks())


def release_freed_blocks() -> bool:
    """Hand the free pages of the heap back to the kernel now (glibc's `malloc_trim(0)`),
    whatever the trim threshold: for after a rare large burst (decoding big uploaded images),
    so the process does not keep its peak. Engine activations freed too are mapped afresh on
    their next use. Returns False where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
