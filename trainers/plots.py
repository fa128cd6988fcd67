"""PNG plots of `tokenskim bench` results (matplotlib, headless)."""

from __future__ import annotations

import os


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _short(path):
    return os.path.basename(os.path.normpath(path)) or path


def _is_skim(variant):
    return variant.startswith("skim")


def kept_per_layer_plot(report, path):
    """Fraction of real tokens entering each layer (as Transkimmer's Figure 4), one line per skim variant.

    Token decisions do not depend on batching, so one batch size (the largest) is shown.
    """
    plt = _plt()
    records = [r for r in report["records"] if _is_skim(r["variant"])]
    if not records:
        return None
    largest = max(r["batch_size"] for r in records)
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in records:
        if r["batch_size"] != largest:
            continue
        kept = r["kept_per_layer"]
        layers = list(range(1, len(kept) + 1))
        label = f"{_short(r['model'])} {r['variant']}".replace(" skim", "") + f" (kept {r['kept_token_ratio']:.2f})"
        ax.plot(layers, kept, marker="o", label=label)
        if r.get("ffn_per_layer") and r["ffn_per_layer"] != kept:
            ax.plot(layers, r["ffn_per_layer"], marker="x", linestyle="--", label=label + " FFN")
    ax.axhline(1.0, color="grey", linestyle=":", label="dense")
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction of real tokens entering the layer")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Tokens kept per layer, {report['task']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def pareto_plot(report, path):
    """Task metric against measured speedup over the stock dense model, per batch size, with the
    Pareto frontier (points no other point beats on both axes)."""
    plt = _plt()
    pts = [r for r in report["records"] if _is_skim(r["variant"]) and r.get("speedup_vs_dense") is not None]
    dense = [r for r in report["records"] if r["variant"] == "dense"]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    sizes = sorted({r["batch_size"] for r in pts})
    markers = "os^Dv<>p"
    for k, bs in enumerate(sizes):
        group = [r for r in pts if r["batch_size"] == bs]
        xs = [r["speedup_vs_dense"] for r in group]
        ys = [r["metric_value"] for r in group]
        line = ax.scatter(xs, ys, marker=markers[k % len(markers)], label=f"batch {bs}")
        for r, x, y in zip(group, xs, ys):
            name = _short(r["model"]) + (r["variant"][4:] if r["variant"] != "skim" else "")
            ax.annotate(f"{name}\nFLOPs {r['flops_ratio']:.1f}x", (x, y), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
        front = _pareto_front(list(zip(xs, ys)))
        if len(front) > 1:
            ax.plot(*zip(*front), color=line.get_facecolor()[0], alpha=0.5)
    seen = set()
    for r in dense:
        if r["model"] in seen or r.get("metric_value") is None:
            continue
        seen.add(r["model"])
        ax.scatter([1.0], [r["metric_value"]], marker="*", color="black", s=80,
                   label="dense" if len(seen) == 1 else None)
    ax.axvline(1.0, color="grey", linestyle=":")
    ax.set_xlabel("measured speedup over stock dense (same weights, same inputs)")
    ax.set_ylabel(pts[0]["metric_name"])
    ax.set_title(f"{report['task']}: metric vs measured speedup ({report['environment']['device']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _pareto_front(points):
    """Points not dominated (higher x and higher y both better), sorted by x."""
    front = [p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)]
    return sorted(front)


def throughput_plot(report, path):
    """Examples per second of every variant at every batch size (first model), bars."""
    plt = _plt()
    if not report["records"]:
        return None
    model = report["records"][0]["model"]
    records = [r for r in report["records"] if r["model"] == model]
    sizes = sorted({r["batch_size"] for r in records})
    variants = list(dict.fromkeys(r["variant"] for r in records))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(variants)
    for j, v in enumerate(variants):
        ys = [next((r["throughput"] for r in records if r["batch_size"] == bs and r["variant"] == v), 0) for bs in sizes]
        bars = ax.bar([i + j * width for i in range(len(sizes))], ys, width, label=v)
        for b, y in zip(bars, ys):
            ax.annotate(f"{y:.0f}", (b.get_x() + b.get_width() / 2, y), ha="center", fontsize=6,
                        xytext=(0, 2), textcoords="offset points")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sizes))], [f"batch {bs}" for bs in sizes])
    ax.set_ylabel("examples / s (median)")
    env = report["environment"]
    ax.set_title(f"{_short(model)} on {report['task']}: {env['device']}, {env['threads']} threads, torch {env['torch']}",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def bench_plots(report, output_dir) -> list:
    """Writes every plot that the report has data for; returns their paths."""
    out = [
        kept_per_layer_plot(report, os.path.join(output_dir, "kept_per_layer.png")),
        pareto_plot(report, os.path.join(output_dir, "pareto.png")),
        throughput_plot(report, os.path.join(output_dir, "throughput.png")),
    ]
    return [p for p in out if p]
