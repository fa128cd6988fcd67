"""`tokenskim bench`: wall-clock speed of a tokenskim checkpoint against the model a user would otherwise run.

From the same weights it builds up to four variants and times them on the same examples:

- `dense`: the stock `transformers` model (`BertForSequenceClassification` / `Roberta...`, sdpa attention),
  dynamic padding to each batch's longest example;
- `dense_sorted`: the same stock model on batches formed after sorting the examples by length (what an
  informed user does to cut padding);
- `engine_off`: the tokenskim engine with skimming, pruning and exits off (`skim_enabled=False`);
- `skim`: the checkpoint as trained (one such variant per value of `--config-override`, if given).

`dense`, `engine_off` and `skim` see exactly the same batches; `dense_sorted` the same examples grouped
differently. After an untimed pass per variant (which also produces the task metric, kept-token counts
and the analytic FLOPs, and warms every batch shape up) the variants are timed interleaved batch by batch
in a rotating order, `--repeats` times; medians over repeats are reported, and speedups are medians of
per-repeat ratios (paired, so drift in machine load cancels). Speed is never checked by unit tests.

Honest accounting (see DESIGN.md "Honest measurement"): token counts and FLOPs include real tokens only;
padding never counts as work saved; `flops_ratio` is dense MACs / model MACs on the same examples,
from `tokenskim.modeling.flops`.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch

VARIANTS = ("dense", "dense_sorted", "engine_off", "skim")
VARIANT_HELP = {
    "dense": "stock transformers model, sdpa, dynamic padding",
    "dense_sorted": "stock model, batches sorted by length",
    "engine_off": "tokenskim engine, pruning and exits off",
    "skim": "tokenskim model as trained",
}


# ----------------------------------------------------------------------------------------------------
# Data: a list of texts (or pairs) with labels and a metric function. This is all the bench needs.


@dataclass
class BenchData:
    """Examples to benchmark on. `text_pairs` is None for single-sentence tasks.

    metric_fn(predictions, labels) -> {name: value}; `metric_name` is the headline key.
    `regression` makes predictions the squeezed logits instead of argmax.
    """

    texts: list
    labels: list
    metric_fn: Callable
    metric_name: str
    text_pairs: list | None = None
    regression: bool = False
    task: str = "custom"
    source: str = ""


def load_bench_data(task: str | None = None, data_dir: str | None = None, split: str = "validation",
                    max_examples: int | None = None, seed: int = 42, validation_file: str | None = None,
                    text_columns=None, label_column=None, label2id: dict | None = None) -> BenchData:
    """A split of a task through `tokenskim.trainers.data` (the same loader as train/evaluate), scored with
    `tokenskim.trainers.metrics`. `max_examples`: a seeded random subset (`data.subsample`; IMDB's files are
    ordered negative-then-positive, so a prefix would be one class). `label2id`: the model's mapping, for
    models trained on custom labels."""
    from . import data as task_data
    from . import metrics

    raw, spec = task_data.load_task(task=task, data_dir=data_dir, validation_file=validation_file,
                                    text_columns=text_columns, label_column=label_column, splits=(split,))
    ds = raw[split]
    total = ds.num_rows
    ds = task_data.subsample(ds, max_examples, seed)
    convert = task_data.label_to_id(spec, label2id if task is None else None)
    columns = spec.text_columns
    texts = ["" if t is None else str(t) for t in ds[columns[0]]]
    pairs = ["" if t is None else str(t) for t in ds[columns[1]]] if len(columns) > 1 else None
    labels = [convert(v) for v in ds[spec.label_column]]
    names = metrics.metric_names(spec.name, spec.is_regression, spec.num_labels)

    def metric_fn(predictions, references):
        return metrics.compute(names, predictions, references)

    source = f"{spec.name} {split}" + (f" ({data_dir})" if data_dir else "")
    if ds.num_rows < total:
        source += f", seeded random subset of {ds.num_rows}/{total} (seed {seed})"
    return BenchData(texts=texts, labels=labels, metric_fn=metric_fn, metric_name=names[0], text_pairs=pairs,
                     regression=spec.is_regression, task=spec.name, source=source)


# ----------------------------------------------------------------------------------------------------
# Tokenization and batching


@dataclass
class Batch:
    """One padded batch: `inputs` (tensors for the model), `indices` of its examples in the data,
    `lengths` (real tokens per example)."""

    inputs: dict
    indices: list
    lengths: list

    @property
    def size(self):
        return len(self.indices)


def tokenize(tokenizer, data: BenchData, max_length: int) -> list:
    """Per-example token lists (no padding), truncated to `max_length`."""
    args = (data.texts, data.text_pairs) if data.text_pairs is not None else (data.texts,)
    enc = tokenizer(*args, truncation=True, max_length=max_length, padding=False)
    keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
    return [{k: enc[k][i] for k in keys} for i in range(len(data.texts))]


def truncate_features(feature: dict, length: int) -> dict:
    """Shortens an example to `length` tokens, keeping its final special token ([SEP] / </s>)."""
    n = len(feature["input_ids"])
    if length >= n:
        return feature
    return {k: v[: length - 1] + v[-1:] for k, v in feature.items()}


def collate(features: list, pad_token_id: int, device="cpu") -> dict:
    """Right-pads to the longest example; `attention_mask` marks real tokens."""
    seq = max(len(f["input_ids"]) for f in features)
    out = {}
    for key in features[0]:
        fill = pad_token_id if key == "input_ids" else 0
        out[key] = torch.tensor([f[key] + [fill] * (seq - len(f[key])) for f in features], dtype=torch.long)
    out["attention_mask"] = torch.tensor([[1] * len(f["input_ids"]) + [0] * (seq - len(f["input_ids"]))
                                          for f in features], dtype=torch.long)
    return {k: v.to(device) for k, v in out.items()}


def make_batches(features: list, batch_size: int, pad_token_id: int, sort_by_length: bool = False,
                 equal_lengths: bool = False, device="cpu") -> list:
    """Groups examples into padded batches.

    sort_by_length: batches of examples of similar length (longest first), as a user cuts padding.
    equal_lengths: inputs without padding: examples sorted by length, and every batch truncated to its
        shortest example (keeping the final special token), so no batch holds a pad token. The metric
        is then on truncated inputs.
    """
    order = list(range(len(features)))
    if sort_by_length or equal_lengths:
        order.sort(key=lambda i: -len(features[i]["input_ids"]))
    batches = []
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        feats = [features[i] for i in idx]
        if equal_lengths:
            shortest = min(len(f["input_ids"]) for f in feats)
            feats = [truncate_features(f, shortest) for f in feats]
        batches.append(Batch(collate(feats, pad_token_id, device), idx, [len(f["input_ids"]) for f in feats]))
    return batches


# ----------------------------------------------------------------------------------------------------
# Models


def is_tokenskim(model) -> bool:
    return hasattr(model, "skim_model") and hasattr(model.skim_model, "selector")


def stock_class_for(config):
    """The stock `transformers` sequence-classification class with the same parameter names."""
    from transformers import BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

    if isinstance(config, RobertaConfig):
        return RobertaForSequenceClassification, RobertaConfig
    if isinstance(config, BertConfig):
        return BertForSequenceClassification, BertConfig
    raise ValueError(f"no stock dense class for config {type(config).__name__}")


def load_dense(model_dir: str, config, dtype=torch.float32, device="cpu"):
    """Stock dense model on the checkpoint's weights, sdpa attention.

    Returns (model, load_info). Missing keys must be none: the only keys the stock class may leave
    unused are tokenskim's own (selector, exit heads).
    """
    cls, config_cls = stock_class_for(config)
    stock_config = config_cls.from_dict({k: v for k, v in config.to_dict().items() if k not in ("auto_map", "model_type")})
    model, info = cls.from_pretrained(model_dir, config=stock_config, attn_implementation="sdpa", dtype=dtype,
                                      output_loading_info=True)
    if info.get("missing_keys"):
        raise RuntimeError(f"stock dense model is missing weights from {model_dir}: {sorted(info['missing_keys'])}")
    return model.to(device).eval(), {k: sorted(v) if isinstance(v, (set, list)) else v for k, v in info.items()
                                     if k in ("missing_keys", "unexpected_keys", "mismatched_keys")}


def load_variants(model_dir: str, variants=VARIANTS, overrides: Sequence[dict] = (), dtype=torch.float32,
                  device="cpu") -> tuple:
    """Builds the requested variants from one checkpoint folder.

    Returns ({name: model}, info). A plain BERT/RoBERTa checkpoint (not a tokenskim one) gives the dense
    variants only. `overrides`: one skim variant per dict of config values (e.g. thresholds), named
    `skim[key=value]`; without overrides, one `skim` variant as trained.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
    models, info = {}, {"model_dir": model_dir, "model_type": config.model_type}
    skim_capable = hasattr(config, "skim_enabled")
    load = dict(trust_remote_code=True, dtype=dtype)
    if "dense" in variants or "dense_sorted" in variants:
        dense, info["dense_load"] = load_dense(model_dir, config, dtype, device)
        for name in ("dense", "dense_sorted"):
            if name in variants:
                models[name] = dense  # one instance: the two differ only in batching
    if skim_capable and "engine_off" in variants:
        models["engine_off"] = AutoModelForSequenceClassification.from_pretrained(
            model_dir, skim_enabled=False, **load).to(device).eval()
    if skim_capable and "skim" in variants:
        for ov in overrides or [{}]:
            name = "skim" if not ov else "skim[" + ",".join(f"{k}={v}" for k, v in ov.items()) + "]"
            models[name] = AutoModelForSequenceClassification.from_pretrained(model_dir, **load, **ov).to(device).eval()
    info["family"] = type(models[next(n for n in models if n.startswith("skim"))]).__name__ if any(
        n.startswith("skim") for n in models) else None
    return models, info


# ----------------------------------------------------------------------------------------------------
# Untimed pass: predictions, metric, kept tokens, FLOPs


@dataclass
class PassResult:
    """Per-example results of one untimed pass, in data order."""

    predictions: list
    lengths: torch.Tensor  # [N] real tokens
    kept_tokens: torch.Tensor  # [N, layers]
    ffn_tokens: torch.Tensor  # [N, layers]
    exit_layer: torch.Tensor  # [N]
    logits: torch.Tensor  # [N, labels] float32


def run_pass(model, batches: Sequence[Batch], num_examples: int, regression: bool = False) -> PassResult:
    """Runs every batch once (no timing) and gathers outputs back into data order.

    For the stock model every real token enters every layer, so its counts are the lengths.
    """
    layers = model.config.num_hidden_layers
    lengths = torch.zeros(num_examples, dtype=torch.long)
    kept = torch.zeros(num_examples, layers, dtype=torch.long)
    ffn = torch.zeros_like(kept)
    exit_layer = torch.full((num_examples,), layers, dtype=torch.long)
    logits_all = None
    with torch.inference_mode():
        for b in batches:
            out = model(**b.inputs)
            idx = torch.tensor(b.indices)
            lens = torch.tensor(b.lengths)
            lengths[idx] = lens
            logits = out.logits.float().cpu()
            if logits_all is None:
                logits_all = torch.zeros(num_examples, logits.shape[-1])
            logits_all[idx] = logits
            if getattr(out, "kept_tokens", None) is not None:
                kept[idx] = out.kept_tokens.cpu()
                ffn[idx] = out.ffn_tokens.cpu()
                if getattr(out, "exit_layer", None) is not None:
                    exit_layer[idx] = out.exit_layer.cpu()
            else:
                kept[idx] = lens[:, None].expand(-1, layers)
                ffn[idx] = kept[idx]
    preds = logits_all.squeeze(-1).tolist() if regression else logits_all.argmax(-1).tolist()
    return PassResult(preds, lengths, kept, ffn, exit_layer, logits_all)


def accounting(model, result: PassResult) -> dict:
    """Kept-token ratio, analytic FLOPs ratio and per-layer keep rates from a pass (real tokens only)."""
    from tokenskim.modeling import flops

    dense = flops.dense_flops(result.lengths, model.config)
    ours = flops.model_macs(model, result.kept_tokens, result.ffn_tokens, result.exit_layer)
    real = result.lengths.double().sum()
    return {
        "kept_token_ratio": flops.kept_token_ratio(result.kept_tokens, result.lengths),
        "flops_ratio": flops.flops_ratio(dense, ours),
        "dense_gmacs": float(dense.sum()) / 1e9,
        "model_gmacs": float(ours.sum()) / 1e9,
        "kept_per_layer": (result.kept_tokens.double().sum(0) / real).tolist(),
        "ffn_per_layer": (result.ffn_tokens.double().sum(0) / real).tolist(),
        "mean_exit_layer": float(result.exit_layer.double().mean()),
    }


# ----------------------------------------------------------------------------------------------------
# Timing


def _sync(device):
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
        _sync(device)
        gc.collect()
        gc.disable()
        try:
            for r in range(repeats):
                for i in range(n_batches):
                    shift = (r + i) % len(names)
                    for n in names[shift:] + names[:shift]:
                        b = per[n][i]
                        _sync(device)
                        t0 = time.perf_counter()
                        models[n](**b)
                        _sync(device)
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


# ----------------------------------------------------------------------------------------------------
# Memory


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


# ----------------------------------------------------------------------------------------------------
# Profile: where the time goes (for engine work; `--profile`)

OP_GROUPS = (  # first match wins, by prefix of the aten op name
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
    from collections import Counter

    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if str(device).startswith("cuda") else [])
    lines = []
    for name, model in models.items():
        inputs = [b.inputs if isinstance(b, Batch) else b for b in batches[name]]
        with torch.inference_mode():
            for b in inputs:
                model(**b)
            _sync(device)
            with profile(activities=acts) as prof:
                t0 = time.perf_counter()
                for b in inputs:
                    model(**b)
                _sync(device)
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


# ----------------------------------------------------------------------------------------------------
# The benchmark


def environment(device, threads=None) -> dict:
    import transformers

    env = {
        "device": str(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "command": " ".join([os.path.basename(sys.argv[0])] + [shlex.quote(a) for a in sys.argv[1:]]) if sys.argv else "",
    }
    try:
        from importlib.metadata import version

        env["tokenskim"] = version("tokenskim")
    except Exception:
        env["tokenskim"] = None
    env["code"] = code_version()
    if str(device).startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
    try:
        env["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return env


def code_version() -> dict:
    """Which engine was measured: git commit of the tokenskim checkout (if any), modeling files that differ
    from it, and a hash of the modeling sources as imported (a dirty working tree is common mid-work)."""
    import hashlib
    import subprocess

    import tokenskim.modeling as modeling

    folder = os.path.dirname(os.path.abspath(modeling.__file__))
    digest = hashlib.sha1()
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as fh:
                digest.update(name.encode() + fh.read())
    out = {"modeling_sha1": digest.hexdigest()[:12]}
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=folder, capture_output=True, text=True, timeout=10)  # noqa: E731
        head = run("rev-parse", "--short", "HEAD")
        if head.returncode == 0:
            out["git_commit"] = head.stdout.strip()
            out["modeling_dirty"] = [line[3:] for line in run("status", "--porcelain", ".").stdout.splitlines()]
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def benchmark(model_dirs: Sequence[str], data: BenchData, batch_sizes: Sequence[int], *, device="cpu",
              dtype=torch.float32, max_length: int | None = None, equal_lengths: bool = False,
              variants=VARIANTS, overrides: Sequence[dict] = (), repeats: int = 5, warmup: int = 2,
              memory: bool = True, progress: bool = True, tokenizer=None, log=print, profile: bool = False) -> dict:
    """Runs the whole benchmark and returns the `bench.json` content (see `run` for the files)."""
    from transformers import AutoTokenizer

    from .evaluate import default_max_length

    report = {"schema": "tokenskim-bench/1", "environment": environment(device), "task": data.task,
              "data_source": data.source, "num_examples": len(data.texts), "equal_lengths": equal_lengths,
              "repeats": repeats, "warmup_batches": warmup, "dtype": str(dtype).replace("torch.", ""),
              "models": [], "records": []}
    for model_dir in model_dirs:
        models, info = load_variants(model_dir, variants, overrides, dtype, device)
        config = next(iter(models.values())).config
        tok = tokenizer or AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
        limit = config.max_position_embeddings - (config.pad_token_id + 1 if "roberta" in config.model_type else 0)
        # default: the length the model was fine-tuned with (config.training_max_length, else the tokenizer's)
        length = min(max_length or default_max_length(tok, config, fallback=limit), limit)
        features = tokenize(tok, data, length)
        info["max_length"] = length
        report["models"].append(info)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else config.pad_token_id
        for bs in batch_sizes:
            plain = make_batches(features, bs, pad_id, equal_lengths=equal_lengths, device=device)
            sorted_ = make_batches(features, bs, pad_id, sort_by_length=True, equal_lengths=equal_lengths,
                                   device=device)
            per = {n: (sorted_ if n == "dense_sorted" else plain) for n in models}
            records = _bench_one(models, per, data, bs, device, repeats, warmup, memory, progress,
                                 desc=f"{os.path.basename(os.path.normpath(model_dir))} bs={bs}")
            if profile:
                text = profile_variants({k: m for k, m in models.items() if k != "dense_sorted"}, per, device)
                report.setdefault("profiles", {})[f"{model_dir} batch {bs}"] = text
                if log:
                    log(text)
            for rec in records:
                rec.update(model=model_dir, max_length=length)
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


def _bench_one(models, per, data, bs, device, repeats, warmup, memory, progress, desc):
    n = len(data.texts)
    passes, acct, metrics = {}, {}, {}
    for name, model in models.items():  # untimed: outputs, accounting, and a warm-up of every shape
        passes[name] = run_pass(model, per[name], n, data.regression)
        acct[name] = accounting(model, passes[name])
        metrics[name] = data.metric_fn(passes[name].predictions, data.labels)
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
            rec["max_abs_logit_diff_vs_dense"] = float((passes[name].logits - passes["dense"].logits).abs().max())
            rec["prediction_agreement_vs_dense"] = sum(
                int(a == b) for a, b in zip(passes[name].predictions, passes["dense"].predictions)) / n
        records.append(rec)
    return records


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


# ----------------------------------------------------------------------------------------------------
# Reports


def format_table(records) -> str:
    """Markdown table, one row per model, batch size and variant."""
    head = ("| model | batch | variant | ex/s | tok/s | p50 ms | p90 ms | peak MiB | metric | kept | FLOPs ratio "
            "| vs dense | vs dense sorted | vs engine off | realized/FLOPs |")
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]

    def f(v, spec):
        return "-" if v is None else format(v, spec)

    for r in records:
        lines.append("| " + " | ".join([
            os.path.basename(os.path.normpath(r.get("model", ""))) or "-", str(r["batch_size"]), r["variant"],
            f(r["throughput"], ".1f"), f(r["tokens_per_s"], ".0f"), f(r["latency_p50_ms"], ".1f"),
            f(r["latency_p90_ms"], ".1f"), f(r.get("peak_memory_mib"), ".0f"),
            f(r.get("metric_value"), ".4f"), f(r["kept_token_ratio"], ".3f"), f(r["flops_ratio"], ".2f"),
            f(r.get("speedup_vs_dense"), ".2f"), f(r.get("speedup_vs_dense_sorted"), ".2f"),
            f(r.get("speedup_vs_engine_off"), ".2f"), f(r.get("realized_over_flops"), ".2f"),
        ]) + " |")
    return "\n".join(lines)


def format_markdown(report) -> str:
    env = report["environment"]
    lines = [
        f"# tokenskim bench: {report['task']}",
        "",
        f"- command: `{env.get('command', '')}`",
        f"- date: {env['date']}; device: {env['device']} ({env.get('gpu') or env.get('cpu')}); "
        f"torch {env['torch']}, transformers {env['transformers']}; threads {env['threads']}; dtype {report['dtype']}",
        f"- code: {env.get('code')}",
        f"- data: {report['data_source']}; {report['num_examples']} examples; "
        f"{'inputs WITHOUT padding (each batch truncated to its shortest example)' if report['equal_lengths'] else 'dynamic padding'}",
        f"- timing: {report['repeats']} interleaved repeats after warm-up, medians; speedups are medians of "
        "per-repeat paired ratios; load average at start/end "
        f"{env.get('loadavg_start')} / {env.get('loadavg_end')}",
        "- variants: " + "; ".join(f"`{k}` = {v}" for k, v in VARIANT_HELP.items()),
        "",
        format_table(report["records"]),
        "",
        "## Speed targets",
        "",
    ]
    for t in report.get("targets", []):
        lines.append(f"- {'MET' if t['met'] else 'MISSED'}: {t['target']} — "
                     f"{os.path.basename(os.path.normpath(t['model']))} bs={t['batch_size']} "
                     f"{t.get('variant', '')}: {t['value']:.3f}")
    return "\n".join(lines) + "\n"


def write_outputs(report, output_dir, plots=True) -> list:
    os.makedirs(output_dir, exist_ok=True)
    written = []
    path = os.path.join(output_dir, "bench.json")
    with open(path, "w") as fh:
        json.dump(report, fh, indent=1)
    written.append(path)
    path = os.path.join(output_dir, "bench.md")
    with open(path, "w") as fh:
        fh.write(format_markdown(report))
    written.append(path)
    if report.get("profiles"):
        path = os.path.join(output_dir, "profile.txt")
        with open(path, "w") as fh:
            for key, text in report["profiles"].items():
                fh.write(f"# {key}\n{text}\n\n")
        written.append(path)
    if plots:
        from . import plots as plotting

        written += plotting.bench_plots(report, output_dir)
    return written


# ----------------------------------------------------------------------------------------------------
# Command line


def _int_list(text):
    return [int(x) for x in text.split(",") if x.strip()]


def parse_overrides(items) -> list:
    """`["key=v1,v2", "other=w"]` -> one dict per combination, values parsed as JSON where possible."""
    import itertools

    if not items:
        return []
    axes = []
    for item in items:
        key, _, values = item.partition("=")
        if not key or not values:
            raise argparse.ArgumentTypeError(f"--config-override wants KEY=V1[,V2...], got {item!r}")
        axes.append([(key.strip(), _json_or_str(v.strip())) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)]


def _json_or_str(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def add_arguments(parser):
    parser.add_argument("--model", action="append", metavar="DIR",
                        help="checkpoint folder (repeat for several; the Pareto plot compares them)")
    parser.add_argument("--synthetic", metavar="SIZE",
                        help="instead of --model: random weights of a named size (minilm, bert-base, bert-large) or a "
                             "config.json, skimming to --target-flops (trainers/synthetic.py)")
    parser.add_argument("--target-flops", type=float, default=2.0, help="--synthetic: the FLOPs ratio to skim to")
    parser.add_argument("--tokenizer", help="--synthetic: the tokenizer (default: the packaged MiniLM's, BERT uncased)")
    parser.add_argument("--task", default=None, help="a known task (sst2, imdb, ...; see trainers/data.py)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the layout of ../shared/data (default: $TOKENSKIM_DATA_DIR, else ../shared/data)")
    parser.add_argument("--split", default="validation", choices=["validation", "train"])
    parser.add_argument("--validation-file", default=None, help="your own data (.csv/.tsv/.json/.jsonl) instead of --task")
    parser.add_argument("--text-columns", type=lambda s: tuple(c for c in s.split(",") if c), default=None,
                        metavar="COL[,COL2]", help="text column(s) of your own data")
    parser.add_argument("--label-column", default=None)
    parser.add_argument("--batch-sizes", type=_int_list, default=[1, 8, 32], help="comma-separated, default 1,8,32")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--max-length", type=int, default=None, help="truncate inputs (default: the model's maximum)")
    parser.add_argument("--max-examples", type=int, default=None, help="seeded random subset of the split")
    parser.add_argument("--seed", type=int, default=42, help="seed of --max-examples' subset")
    parser.add_argument("--equal-lengths", action="store_true",
                        help="inputs without padding: each batch truncated to its shortest example")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--config-override", action="append", default=[], metavar="KEY=V1[,V2]",
                        help="one skim variant per value (e.g. an exit threshold); repeat for a grid")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches per variant before timing")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one pass per variant (torch.profiler) and write profile.txt")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--output-dir", required=True)


def synthetic_folder(args, data: BenchData, device) -> str:
    """`--synthetic`: a random checkpoint fitted to `--target-flops` on these inputs, saved under the output folder."""
    from transformers import AutoTokenizer

    from .demo import minilm_path
    from .synthetic import save_synthetic

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or minilm_path())
    features = tokenize(tokenizer, data, args.max_length or 128)
    batches = make_batches(features, max(args.batch_sizes), tokenizer.pad_token_id)
    folder = os.path.join(args.output_dir, f"synthetic-{os.path.basename(args.synthetic)}")
    labels = 1 if data.regression else max(2, len(set(data.labels)))
    save_synthetic(args.synthetic, tokenizer, folder, batches, len(features), args.target_flops, labels)
    print(f"synthetic {args.synthetic} model skimming to FLOPs ratio >= {args.target_flops}: {folder}")
    return folder


def run(args):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()  # load reports go to bench.json ("models")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available")
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    if not args.task and not args.validation_file:
        raise SystemExit("give --task (e.g. sst2) or --validation-file")
    if bool(args.model) == bool(args.synthetic):
        raise SystemExit("give --model DIR (one or more) or --synthetic SIZE")
    label2id = None
    if not args.task and args.model:
        from transformers import AutoConfig

        label2id = AutoConfig.from_pretrained(args.model[0], trust_remote_code=True).label2id
    data = load_bench_data(args.task, args.data_dir, args.split, args.max_examples, args.seed, args.validation_file,
                           args.text_columns, args.label_column, label2id)
    model_dirs = args.model or [synthetic_folder(args, data, device)]
    report = benchmark(model_dirs, data, args.batch_sizes, device=device, dtype=getattr(torch, args.dtype),
                       max_length=args.max_length, equal_lengths=args.equal_lengths, variants=variants,
                       overrides=parse_overrides(args.config_override), repeats=args.repeats, warmup=args.warmup,
                       memory=not args.no_memory, progress=not args.no_progress, profile=args.profile)
    for path in write_outputs(report, args.output_dir, plots=not args.no_plots):
        print(f"wrote {path}")
    return 0
