"""The benchmark itself: for each checkpoint and batch size, an untimed pass per variant (metric, kept tokens,
FLOPs, and a warm-up of every batch shape), then the variants timed interleaved on the same examples; one
record per variant with throughput, latency, memory, accounting and paired speedups; then the speed targets."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ..squad import SKIPPED_LOGIT
from .environment import environment
from .inputs import BenchData, make_batches
from .memory import peak_memory
from .passes import accounting, run_pass
from .profiling import profile_variants
from .qa import QABenchData
from .report import format_table
from .timing import measure_throughput, paired_speedup
from .variants import VARIANTS, load_variants


def benchmark(model_dirs: Sequence[str], data: BenchData | QABenchData, batch_sizes: Sequence[int], *, device="cpu",
              dtype=torch.float32, max_length: int | None = None, equal_lengths: bool = False,
              variants=VARIANTS, overrides: Sequence[dict] = (), repeats: int = 5, warmup: int = 2,
              memory: bool = True, progress: bool = True, tokenizer=None, log=print, profile: bool = False) -> dict:
    """Runs the whole benchmark and returns the `bench.json` content (`report.write_outputs` writes the files).

    data: classification examples (`BenchData`) or questions (`QABenchData`, whose windows are the examples);
    each model reads them as its tokenizer, max length (and QA stride) make them (`data.encode`)."""
    from transformers import AutoTokenizer

    from ..evaluate import default_max_length, position_limit

    report = {"schema": "tokenskim-bench/1", "environment": environment(device), "task": data.task,
              "data_source": data.source, "num_examples": None, "equal_lengths": equal_lengths,
              "repeats": repeats, "warmup_batches": warmup, "dtype": str(dtype).replace("torch.", ""),
              "models": [], "records": []}
    for model_dir in model_dirs:
        models, info = load_variants(model_dir, variants, overrides, dtype, device, data.head)
        config = next(iter(models.values())).config
        tok = tokenizer or AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
        limit = position_limit(config)
        # default: the length the model was fine-tuned with (config.training_max_length, else the tokenizer's)
        length = min(max_length or default_max_length(tok, config, fallback=limit), limit)
        examples = data.encode(tok, config, length)
        features = examples.features
        info.update(max_length=length, **examples.settings)
        report["models"].append(info)
        report["num_examples"] = report["num_examples"] or len(features)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else config.pad_token_id
        for bs in batch_sizes:
            plain = make_batches(features, bs, pad_id, equal_lengths=equal_lengths, device=device)
            sorted_ = make_batches(features, bs, pad_id, sort_by_length=True, equal_lengths=equal_lengths,
                                   device=device)
            per = {n: (sorted_ if n == "dense_sorted" else plain) for n in models}
            records = _bench_one(models, per, data, examples, bs, device, repeats, warmup, memory, progress,
                                 desc=f"{os.path.basename(os.path.normpath(model_dir))} bs={bs}")
            if profile:
                text = profile_variants({k: m for k, m in models.items() if k != "dense_sorted"}, per, device)
                report.setdefault("profiles", {})[f"{model_dir} batch {bs}"] = text
                if log:
                    log(text)
            for rec in records:
                rec.update(model=model_dir, max_length=length, **examples.settings)
            report["records"].extend(records)
            if log:
                log(format_table([r for r in records]))
    report["environment"]["threads"] = torch.get_num_threads()
    try:
        report["environment"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    report["targets"] = check_targets(report["records"])
    return report


def _bench_one(models, per, data, examples, bs, device, repeats, warmup, memory, progress, desc):
    n = len(examples.features)
    passes, acct, metrics, predictions = {}, {}, {}, {}
    for name, model in models.items():  # untimed: outputs, accounting, and a warm-up of every shape
        passes[name] = run_pass(model, per[name], n, data.regression)
        acct[name] = accounting(model, passes[name])
        predictions[name], metrics[name] = examples.score(passes[name])
    stats = measure_throughput(models, {k: per[k] for k in models}, repeats=repeats, warmup=warmup, device=device,
                               progress=progress, desc=desc)
    load_1min = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # other work on the machine while timing
    mem = {name: (peak_memory(models[name], per[name], device) if memory else None) for name in models}
    real_tokens = int(passes[next(iter(models))].lengths.sum())
    records = []
    for name, model in models.items():
        st, ac = stats[name], acct[name]
        padded = sum(int(b.inputs["input_ids"].numel()) for b in per[name])
        rec = {
            "variant": name,
            "batch_size": bs,
            "throughput": st.examples_per_s,
            "tokens_per_s": st.tokens_per_s,
            "latency_p50_ms": st.latency_p50_ms,
            "latency_p90_ms": st.latency_p90_ms,
            "pass_seconds": st.pass_seconds,
            "peak_memory_mib": mem[name],
            "metric": metrics[name],
            "metric_name": data.metric_name,
            "metric_value": metrics[name].get(data.metric_name),
            "num_examples": n,
            "num_batches": len(per[name]),
            "real_tokens": real_tokens,
            "padding_fraction": 1 - real_tokens / padded,
            "loadavg_1min_after_timing": load_1min,
            **ac,
        }
        for base in ("dense", "dense_sorted", "engine_off"):
            if base in stats and base != name:
                rec[f"speedup_vs_{base}"] = paired_speedup(stats, name, base)
        if "speedup_vs_engine_off" in rec and name.startswith("skim"):
            rec["realized_over_flops"] = rec["speedup_vs_engine_off"] / ac["flops_ratio"]
        if "dense" in passes and name != "dense":
            rec["max_abs_logit_diff_vs_dense"] = max_logit_diff(passes[name].logits, passes["dense"].logits)
            rec["prediction_agreement_vs_dense"] = sum(
                int(a == b) for a, b in zip(predictions[name], predictions["dense"])) / len(predictions[name])
        records.append(rec)
    return records


def max_logit_diff(logits, reference) -> float:
    """Largest |logits - reference| over the logits both computed: positions a QA model skipped (Block-Skim's
    lowest logit, at or below `squad.SKIPPED_LOGIT`) hold no value to compare."""
    both = (logits > SKIPPED_LOGIT) & (reference > SKIPPED_LOGIT)
    return float((logits - reference)[both].abs().max()) if both.any() else 0.0


def check_targets(records) -> list:
    """The benchmark's speed targets, evaluated per model and batch size where the variants were measured."""
    out = []
    groups = {}
    for r in records:
        groups.setdefault((r["model"], r["batch_size"]), {})[r["variant"]] = r
    for (model, bs), g in groups.items():
        off = g.get("engine_off")
        if off and "speedup_vs_dense" in off:
            padded = off["padding_fraction"] > 0
            s = off["speedup_vs_dense"]
            out.append({"model": model, "batch_size": bs,
                        "target": "engine_off faster than dense (padded inputs)" if padded
                        else "engine_off within 5% of dense (no padding)",
                        "value": s, "met": bool(s > 1.0) if padded else bool(s >= 0.95)})
        for name, r in g.items():
            if not name.startswith("skim"):
                continue
            if "realized_over_flops" in r and bs >= 32:
                out.append({"model": model, "batch_size": bs, "variant": name,
                            "target": "realized speedup vs engine_off >= 0.9x FLOPs ratio (CPU, bs>=32)",
                            "value": r["realized_over_flops"], "met": bool(r["realized_over_flops"] >= 0.9)})
            if bs == 1 and "speedup_vs_dense" in r:
                out.append({"model": model, "batch_size": bs, "variant": name,
                            "target": "skim not slower than dense at batch 1",
                            "value": r["speedup_vs_dense"], "met": bool(r["speedup_vs_dense"] >= 1.0)})
    return out

