"""Wall-clock timing of several models on the same examples: interleaved batch by batch in a rotating order,
medians over repeats, speedups as medians of paired per-repeat ratios (so drift in machine load cancels)."""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .inputs import Batch


def synchronize(device):
    """Waits for queued CUDA work, so a timer reads finished work (nothing to wait for on CPU)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class ThroughputStats:
    """Timing of one variant. Rates are medians over repeats of whole-pass figures."""

    examples_per_s: float
    tokens_per_s: float
    latency_p50_ms: float
    latency_p90_ms: float
    pass_seconds: list = field(default_factory=list)  # one per repeat
    latencies_ms: list = field(default_factory=list)  # every batch of every repeat


def _percentile(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def measure_throughput(models: Mapping, batches, *, repeats: int = 5, warmup: int = 2, device="cpu",
                       progress: bool = True, desc: str = "timing") -> dict:
    """Times several models on the same examples, interleaved, and returns {name: ThroughputStats}.

    models: {name: model}. batches: one list of input dicts (or `Batch`) shared by every model, or
    {name: list}, lists of equal length that hold the same examples (e.g. sorted differently).
    Batch i of every model runs back to back, in an order that rotates with i and the repeat, so load
    drift hits all models alike. `warmup` batches per model run untimed first. Reusable by `demo`.
    """
    names = list(models)
    per = batches if isinstance(batches, Mapping) else {n: batches for n in names}
    per = {n: [b.inputs if isinstance(b, Batch) else b for b in per[n]] for n in names}
    counts = {len(v) for v in per.values()}
    if len(counts) != 1:
        raise ValueError(f"every model needs the same number of batches, got {counts}")
    n_batches = counts.pop()
    examples = {n: sum(int(b["attention_mask"].shape[0]) for b in per[n]) for n in names}
    tokens = {n: sum(int(b["attention_mask"].sum()) for b in per[n]) for n in names}
    if len(set(examples.values())) != 1 or len(set(tokens.values())) != 1:
        raise ValueError(f"models must see the same examples: examples {examples}, real tokens {tokens}")

    lat = {n: [[0.0] * n_batches for _ in range(repeats)] for n in names}
    bar = _progress(total=len(names) * (repeats * n_batches + min(warmup, n_batches)), desc=desc, enable=progress)
    gc_was_enabled = gc.isenabled()
    with torch.inference_mode():
        for n in names:
            for b in per[n][:warmup]:
                models[n](**b)
                bar.update(1)
        synchronize(device)
        gc.collect()
        gc.disable()
        try:
            for r in range(repeats):
                for i in range(n_batches):
                    shift = (r + i) % len(names)
                    for n in names[shift:] + names[:shift]:
                        b = per[n][i]
                        synchronize(device)
                        t0 = time.perf_counter()
                        models[n](**b)
                        synchronize(device)
                        lat[n][r][i] = time.perf_counter() - t0
                        bar.update(1)
        finally:
            if gc_was_enabled:
                gc.enable()
    bar.close()
    stats = {}
    for n in names:
        passes = [sum(rep) for rep in lat[n]]
        med = statistics.median(passes)
        flat = [t * 1e3 for rep in lat[n] for t in rep]
        stats[n] = ThroughputStats(examples[n] / med, tokens[n] / med, _percentile(flat, 50), _percentile(flat, 90),
                                   passes, flat)
    return stats


def paired_speedup(stats: Mapping, fast: str, slow: str) -> float:
    """Median over repeats of pass_time(slow) / pass_time(fast) (the repeats ran interleaved)."""
    return statistics.median(s / f for f, s in zip(stats[fast].pass_seconds, stats[slow].pass_seconds))


def _progress(total, desc, enable):
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, disable=not enable, leave=False, dynamic_ncols=True)
    except ImportError:  # pragma: no cover
        class _Null:
            def update(self, *_):
                pass

            def close(self):
                pass

        return _Null()

