"""The benchmark's outputs: a markdown table per run, `bench.md` (setup and targets), `bench.json`, the
profiles and the plots."""

from __future__ import annotations

import json
import os

from .variants import VARIANT_HELP


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
        f"- data: {report['data_source']}; {report['num_examples']} examples{_windows(report)}; "
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


def _windows(report) -> str:
    """QA: what its examples are (the first model's windows; each record carries its own counts)."""
    first = report["models"][0] if report["models"] else {}
    if "num_questions" not in first:
        return ""
    return f" (windows of {first['num_questions']} questions: {first['max_length']} tokens, stride {first['doc_stride']})"


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
        from .. import plots as plotting

        written += plotting.bench_plots(report, output_dir)
    return written
