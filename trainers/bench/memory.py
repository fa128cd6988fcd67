"""Peak memory of running a model on a benchmark's largest batches."""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Sequence

import torch

from .inputs import Batch


class PeakMemory:
    """Peak memory of a block of work, in MiB above the level before it.

    CUDA: `torch.cuda.max_memory_allocated` (exact for tensors). CPU: the process's resident-set high
    water mark (VmHWM), reset through /proc/self/clear_refs after `malloc_trim`; includes allocator
    slack, so read it as an upper bound of activation memory. None where the OS does not allow it.
    """

    def __init__(self, device):
        self.device = str(device)
        self.base = None

    def __enter__(self):
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except OSError:
                pass
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")
                self.base = _proc_status_kib("VmRSS")
            except OSError:
                self.base = None
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak_mib = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        elif self.base is not None:
            self.peak_mib = max(_proc_status_kib("VmHWM") - self.base, 0) / 1024
        else:
            self.peak_mib = None
        return False


def _proc_status_kib(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise OSError(key)


def peak_memory(model, batches: Sequence[Batch], device, largest: int = 3):
    """Peak memory (MiB) of running the `largest` batches by padded size (the peak is set there)."""
    big = sorted(batches, key=lambda b: -b.inputs["input_ids"].numel())[:largest]
    with torch.inference_mode(), PeakMemory(device) as pm:
        for b in big:
            model(**b.inputs)
    return pm.peak_mib

