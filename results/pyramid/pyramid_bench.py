"""Measurements of LTP alone, early exit alone and Magic Pyramid against the stock dense model.

For one task's evaluation split it reports, at batch size 32 (batches in data order, dynamic padding):
task metric, analytic FLOPs ratio (exit heads included), kept-token ratio, mean exit layer and measured
speedup vs the stock dense model (sdpa) and vs the tokenskim engine with pruning and exits off; a tau
sweep for early exit and Magic Pyramid (the paper's Table 3); and speedup by length bucket (1-35, 35-70,
>70 tokens; the paper's Figure 1). Timing uses tokenskim.trainers.bench.timing: variants interleaved batch by
batch, medians of paired per-repeat ratios.

    python results/pyramid/pyramid_bench.py --task sst2 --dense D --ltp L --early-exit E --magic-pyramid M \\
        [--tau auto --ee-tau auto] --taus 0.1,0.2,0.3,0.5,0.8 --output results/pyramid/pyramid_sst2.json
"""

import argparse
import json
import os
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tokenskim.modeling import flops
from tokenskim.trainers.bench.environment import environment
from tokenskim.trainers.bench.inputs import load_bench_data, make_batches, tokenize
from tokenskim.trainers.bench.passes import run_pass
from tokenskim.trainers.bench.timing import measure_throughput, paired_speedup
from tokenskim.trainers.bench.variants import load_dense

BUCKETS = {"short (1-35)": (1, 35), "middle (35-70)": (36, 70), "long (>70)": (71, 10**9)}


def load(path, **config):
    return AutoModelForSequenceClassification.from_pretrained(path, **config).eval()


def cost(model, result):
    """Dense MACs and model MACs (encoder + exit heads) per example."""
    return flops.dense_flops(result.lengths, model.config), flops.model_macs(model, result.kept_tokens, result.ffn_tokens, result.exit_layer,
                                                                         lengths=result.lengths)


def summarize(model, result, data, idx=None):
    """Metric, FLOPs ratio, kept-token ratio and mean exit layer over the examples `idx` (all if None)."""
    idx = torch.arange(len(data.labels)) if idx is None else torch.as_tensor(idx)
    dense, ours = cost(model, result)
    preds = [result.predictions[i] for i in idx.tolist()]
    labels = [data.labels[i] for i in idx.tolist()]
    return {
        "metric": data.metric_fn(preds, labels)[data.metric_name],
        "flops_ratio": flops.flops_ratio(dense[idx], ours[idx]),
        "kept_token_ratio": flops.kept_token_ratio(result.kept_tokens[idx], result.lengths[idx]),
        "mean_exit_layer": float(result.exit_layer[idx].double().mean()),
        "exit_counts": torch.bincount(result.exit_layer[idx] - 1, minlength=model.config.num_hidden_layers).tolist(),
    }


def timed(models, batches, repeats, base="dense"):
    stats = measure_throughput(models, batches, repeats=repeats, warmup=2, progress=False)
    out = {n: {"examples_per_s": s.examples_per_s} for n, s in stats.items()}
    for n in models:
        if n != base:
            out[n]["speedup_vs_dense"] = paired_speedup(stats, n, base)
            if "engine_off" in models and n != "engine_off":
                out[n]["speedup_vs_engine_off"] = paired_speedup(stats, n, "engine_off")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--dense", required=True, help="the dense fine-tune (stock transformers checkpoint)")
    p.add_argument("--ltp")
    p.add_argument("--early-exit")
    p.add_argument("--magic-pyramid")
    p.add_argument("--tau", default="auto", help="tau of Magic Pyramid in the main comparison; 'auto': the largest "
                   "tau of --taus whose metric is at most --max-drop below the dense model's (selected on this split)")
    p.add_argument("--ee-tau", default="auto", help="the same for early exit alone")
    p.add_argument("--max-drop", type=float, default=0.01, help="for 'auto': allowed metric drop (0.01 = 1 point)")
    p.add_argument("--taus", default="0.1,0.2,0.3,0.4,0.5,0.6,0.8")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sweep-repeats", type=int, default=1, help="timing repeats per tau (0: FLOPs only)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.strftime("%Y-%m-%d %H:%M:%S")

    data = load_bench_data(args.task)
    tok = AutoTokenizer.from_pretrained(args.dense)
    features = tokenize(tok, data, args.max_length)
    batches = make_batches(features, args.batch_size, tok.pad_token_id)
    n = len(features)

    taus = [float(t) for t in args.taus.split(",")]
    models = {"dense": load_dense(args.dense, load(args.dense).config)[0]}
    ref = args.magic_pyramid or args.ltp or args.early_exit
    models["engine_off"] = load(ref, skim_enabled=False, exit_enabled=False) if args.magic_pyramid else load(ref)
    if not args.magic_pyramid:
        for field in ("skim_enabled", "exit_enabled"):
            if hasattr(models["engine_off"].config, field):
                setattr(models["engine_off"].config, field, False)
    if args.ltp:
        models["ltp"] = load(args.ltp)
    if args.early_exit:
        models["early_exit"] = load(args.early_exit)
    if args.magic_pyramid:
        models["magic_pyramid"] = load(args.magic_pyramid)

    report = {"task": args.task, "data": data.source, "num_examples": n, "batch_size": args.batch_size,
              "started": started, "environment": environment("cpu", args.threads), "main": {}, "sweep": [],
              "buckets": {}}
    dense_pass = run_pass(models["dense"], batches, n)
    dense_metric = summarize(models["dense"], dense_pass, data)["metric"]

    # tau sweep (the paper's Table 3): metric and FLOPs for every tau (untimed passes)
    sweep = {name: {} for name in ("early_exit", "magic_pyramid") if name in models}
    for tau in taus:
        for name in sweep:
            models[name].config.exit_threshold = tau
            sweep[name][tau] = summarize(models[name], run_pass(models[name], batches, n), data)
    chosen = {}
    for name, flag in (("early_exit", args.ee_tau), ("magic_pyramid", args.tau)):
        if name in sweep:
            ok = [t for t in taus if sweep[name][t]["metric"] >= dense_metric - args.max_drop - 1e-9]
            chosen[name] = float(flag) if flag != "auto" else (max(ok) if ok else min(taus))
            models[name].config.exit_threshold = chosen[name]
    report.update(tau=chosen.get("magic_pyramid"), ee_tau=chosen.get("early_exit"), tau_rule=(
        f"largest tau in {taus} with metric >= dense - {args.max_drop}, selected on this evaluation split"
        if "auto" in (args.tau, args.ee_tau) else "given"))
    print("chosen tau:", chosen, "dense metric:", dense_metric, flush=True)

    passes = {name: (dense_pass if name == "dense" else run_pass(m, batches, n)) for name, m in models.items()}
    for name, m in models.items():
        report["main"][name] = summarize(m, passes[name], data)
    for name, t in timed(models, batches, args.repeats).items():
        report["main"][name].update(t)
    print(json.dumps(report["main"], indent=1))

    # measured speedup of every tau of the sweep, if asked
    for tau in taus:
        row = {"tau": tau, **{name: dict(sweep[name][tau]) for name in sweep}}
        if args.sweep_repeats > 0:
            for name in sweep:
                models[name].config.exit_threshold = tau
            sweep_models = {"dense": models["dense"], **{name: models[name] for name in sweep}}
            for name, t in timed(sweep_models, batches, args.sweep_repeats).items():
                if name != "dense":
                    row[name].update(t)
        report["sweep"].append(row)
        print(json.dumps(row), flush=True)
    for name, tau in chosen.items():
        models[name].config.exit_threshold = tau

    # length buckets (the paper's Figure 1): the same models on batches drawn from one bucket at a time
    lengths = passes["dense"].lengths
    for bucket, (lo, hi) in BUCKETS.items():
        idx = [i for i in range(n) if lo <= int(lengths[i]) <= hi]
        if not idx:
            continue
        sub = [features[i] for i in idx]
        sub_batches = make_batches(sub, args.batch_size, tok.pad_token_id)
        for b in sub_batches:  # indices into the whole set, for summarize()
            b.indices = [idx[i] for i in b.indices]
        entry = {"examples": len(idx)}
        bucket_models = {k: v for k, v in models.items() if k != "engine_off"}
        for name, m in bucket_models.items():
            entry[name] = summarize(m, passes[name], data, idx)
        for name, t in timed(bucket_models, sub_batches, args.repeats).items():
            entry[name].update(t)
        report["buckets"][bucket] = entry
        print(bucket, json.dumps(entry))

    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        report["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    with open(args.output, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
