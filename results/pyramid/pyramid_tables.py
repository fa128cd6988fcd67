"""Markdown tables from the JSON files of `pyramid_bench.py` (main comparison, tau sweep, buckets).

    python results/pyramid/pyramid_tables.py results/pyramid/pyramid_sst2.json [results/pyramid/pyramid_ag_news.json ...]
"""

import json
import sys

NAMES = {"dense": "dense fine-tune (stock transformers)", "engine_off": "tokenskim engine, pruning and exits off",
         "ltp": "LTP", "early_exit": "early exit", "magic_pyramid": "Magic Pyramid"}


def f(value, spec=".2f"):
    return "-" if value is None else format(value, spec)


def x(value):
    """A ratio as `2.10x`, or `-` when absent."""
    return "-" if value is None else f"{value:.2f}x"


def main_table(r):
    lines = [
        f"| {r['task']} ({r['num_examples']} ex., batch {r['batch_size']}) | metric | FLOPs ratio | kept tokens "
        "| mean exit layer | measured speedup vs dense | vs engine off |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in r["main"].items():
        label = NAMES[name]
        if name == "early_exit":
            label += f" (tau {r['ee_tau']})"
        if name == "magic_pyramid":
            label += f" (tau {r['tau']})"
        lines.append(
            f"| {label} | {100 * m['metric']:.2f} | {x(m['flops_ratio'])} | {f(m['kept_token_ratio'], '.3f')} "
            f"| {f(m['mean_exit_layer'])} | {x(m.get('speedup_vs_dense'))} | {x(m.get('speedup_vs_engine_off'))} |"
        )
    return "\n".join(lines)


def sweep_table(r):
    lines = ["| tau | EE metric | EE FLOPs ratio | EE measured | MP metric | MP FLOPs ratio | MP measured |",
             "|---|---|---|---|---|---|---|"]
    for row in r["sweep"]:
        ee, mp = row.get("early_exit", {}), row.get("magic_pyramid", {})
        lines.append(
            f"| {row['tau']} | {100 * ee.get('metric', float('nan')):.2f} | {x(ee.get('flops_ratio'))} "
            f"| {x(ee.get('speedup_vs_dense'))} | {100 * mp.get('metric', float('nan')):.2f} "
            f"| {x(mp.get('flops_ratio'))} | {x(mp.get('speedup_vs_dense'))} |"
        )
    return "\n".join(lines)


def bucket_table(r):
    lines = ["| length bucket | examples | LTP FLOPs / measured | EE FLOPs / measured | MP FLOPs / measured | dense metric | MP metric |",
             "|---|---|---|---|---|---|---|"]
    for bucket, e in r["buckets"].items():
        cells = [f"{x(e[n]['flops_ratio'])} / {x(e[n].get('speedup_vs_dense'))}" if n in e else "-"
                 for n in ("ltp", "early_exit", "magic_pyramid")]
        lines.append(f"| {bucket} | {e['examples']} | " + " | ".join(cells)
                     + f" | {100 * e['dense']['metric']:.2f} | {100 * e['magic_pyramid']['metric']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        r = json.load(open(path))
        print(f"### {r['task']}: {r['data']}\n")
        print(main_table(r), "\n")
        print(f"tau rule: {r.get('tau_rule')}\n")
        print(sweep_table(r), "\n")
        print(bucket_table(r), "\n")
