"""Where a variant's time goes (`tokenskim bench --profile`): one profiled pass per variant, self time by kind
of op, the top ops, and the share of wall time outside aten ops (Python and dispatch overhead)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping

import torch

from .inputs import Batch
from .timing import synchronize

# kinds of op: first match wins, by prefix of the aten op name
OP_GROUPS = (
    ("matmul (linear layers)", ("aten::addmm", "aten::mm", "aten::linear", "aten::matmul")),
    ("attention (sdpa)", ("aten::_scaled_dot_product", "aten::scaled_dot_product_attention", "aten::_softmax",
                          "aten::softmax", "aten::bmm", "aten::baddbmm")),
    ("layer_norm", ("aten::native_layer_norm", "aten::layer_norm")),
    ("gelu", ("aten::gelu",)),
    ("pack/unpack/drop (index, nonzero, cat, split)", (
        "aten::index", "aten::index_select", "aten::index_copy", "aten::nonzero", "aten::masked", "aten::bincount",
        "aten::repeat_interleave", "aten::cumsum", "aten::cat", "aten::split", "aten::index_put",
        "aten::_local_scalar_dense", "aten::item", "aten::pad", "aten::constant_pad_nd")),
    ("copies and layout (copy_, contiguous, to)", ("aten::copy_", "aten::clone", "aten::contiguous", "aten::_to_copy",
                                                   "aten::to")),
)


def profile_variants(models: Mapping, batches: Mapping, device="cpu") -> str:
    """One profiled pass per variant (after an untimed one); self time grouped by kind of op, the top ops,
    and the share of wall time spent outside aten ops (Python and dispatch overhead)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if str(device).startswith("cuda") else [])
    lines = []
    for name, model in models.items():
        inputs = [b.inputs if isinstance(b, Batch) else b for b in batches[name]]
        with torch.inference_mode():
            for b in inputs:
                model(**b)
            synchronize(device)
            with profile(activities=acts) as prof:
                t0 = time.perf_counter()
                for b in inputs:
                    model(**b)
                synchronize(device)
                wall = time.perf_counter() - t0
        events = prof.key_averages()
        by, calls = Counter(), Counter()
        for e in events:
            group = next((g for g, keys in OP_GROUPS if any(e.key.startswith(k) for k in keys)), "other ops")
            by[group] += e.self_cpu_time_total / 1e6
            calls[group] += e.count
        total = sum(by.values())
        lines.append(f"== {name}: {len(inputs)} batches, wall {wall:.3f} s under the profiler; aten self time "
                     f"{total:.3f} s; outside aten ops (Python, module calls, dispatch) ~{max(wall - total, 0):.3f} s "
                     f"({100 * max(wall - total, 0) / wall:.0f}%)")
        for group, t in by.most_common():
            lines.append(f"   {group:<46} {t:8.3f} s {100 * t / wall:5.1f}% of wall  ({calls[group]} op calls)")
        lines.append("   top ops by self time:")
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]:
            lines.append(f"     {e.key:<48} {e.self_cpu_time_total / 1e6:8.3f} s  {e.count:7d} calls  "
                         f"{e.self_cpu_time_total / max(e.count, 1):8.1f} us/call")
    return "\n".join(lines)

