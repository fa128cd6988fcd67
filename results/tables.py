"""The README's results tables, regenerated from the JSON files in results/<experiment>/ (markdown on stdout).

    python results/tables.py                        # every table, in the README's order
    python results/tables.py pyramid budget_sst2    # some experiments

Each experiment folder holds the script that produced its JSON and a README with the command; this file only
formats what those runs wrote.
"""

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def read(*parts):
    return json.loads(HERE.joinpath(*parts).read_text())


def table(header: list, rows: list) -> str:
    """A markdown table from a header row and rows of cells."""
    lines = ["| " + " | ".join(str(c) for c in line) + " |" for line in (header, *rows)]
    return "\n".join([lines[0], "|" + "---|" * len(header), *lines[1:]])


def x(value) -> str:
    """A ratio as `2.10x`, or `-` when absent."""
    return "-" if value is None else f"{value:.2f}x"


def pct(value) -> str:
    """A score in [0, 1] as points, `86.70`."""
    return f"{100 * value:.2f}"


# ----------------------------------------------------------------------------------------------------
# budget_sst2/: budget-trained Transkimmer, LTP and STTABT, and the inference knob swept by `tokenskim calibrate`

BUDGET_RUNS = {
    "dense-e1": "dense-e1 (1 epoch)",
    "dense-e2": "dense-e2 (2 epochs)",
    "tk-t0.5": "Transkimmer, budget 0.5",
    "tkd-t0.5": "Transkimmer, dense first, budget 0.5",
    "ltp-t0.5": "LTP, budget 0.5",
    "ltp-t0.3": "LTP, budget 0.3",
    "sttabt-t0.4": "STTABT, budget 0.4 (layers 1-5)",
}


def keep_rates(result: dict) -> str:
    layers = sorted((k for k in result if k.startswith("keep_rate_layer_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    return " ".join(f"{result[k]:.2f}" for k in layers) or "-"


def budget_of(name: str) -> str:
    """The kept-token budget in a run's name (`-t<R>` of run.sh's names, whatever follows: `mpr-t0.2-...-tau0.6`
    is 0.2), or `-`."""
    match = re.search(r"-t(\d[\d.]*)", name)
    return match.group(1) if match else "-"


def budget_runs(folder: str, runs: dict, base: str, base_label: str = "dense 2 ep.") -> str:
    """One row per run of results/budget_sst2/run.sh (`runs`: name -> label), against the dense run `base`."""
    base_accuracy = read(folder, "json", f"{base}.json")["accuracy"]
    rows = []
    for name, label in runs.items():
        r = read(folder, "json", f"{name}.json")
        rows.append([label, budget_of(name), pct(r["accuracy"]), f"{100 * (r['accuracy'] - base_accuracy):+.2f}",
                     f"{r['kept_token_ratio']:.3f}", x(r["flops_ratio"]), keep_rates(r)])
    return table(["run", "target kept", "accuracy", f"change vs {base_label}", "kept-token ratio", "FLOPs ratio",
                  "keep rate per layer"], rows)


def budget_experiment(folder: str, runs: dict, base: str, base_label: str, *sweeps) -> str:
    """A results folder of budget runs: the runs' table against `base`, then each knob sweep (paths in `folder`)."""
    return "\n\n".join([budget_runs(folder, runs, base, base_label), *(knob_sweep(folder, *path) for path in sweeps)])


def budget_sst2() -> str:
    return budget_experiment("budget_sst2", BUDGET_RUNS, "dense-e2", "dense 2 ep.", ("calibration", "tk-t0.5.json"))


# ----------------------------------------------------------------------------------------------------
# sst2_full/: the same recipe on the full SST-2 training set

FULL_RUNS = {
    "dense-e1": "dense-e1 (1 epoch)",
    "densec-e2": "densec-e2 (dense-e1 + 1 dense epoch)",
    "tkd-t0.6": "Transkimmer, budget 0.6",
    "tkd-t0.45": "Transkimmer, budget 0.45",
    "tkd-t0.3": "Transkimmer, budget 0.3",
    "tkd-t0.2": "Transkimmer, budget 0.2",
    "tkdkd-t0.45": "Transkimmer, budget 0.45, distilling dense-e1",
    "tkd-t0.45-k0.518-hard": "Transkimmer, budget 0.45, then 0.5 epoch at keep_threshold 0.518 with the predictors frozen",
    "tkdn0-t0.47": "Transkimmer, budget 0.47, no predictor before layer 0 (the paper's width)",
    "tkdp64-t0.45": "Transkimmer, budget 0.45, predictors 64 wide",
    "tkdp64-t0.45-k0.488": "the same, keep_threshold 0.488 (its 2x point)",
    "tkdp64n0-t0.6": "Transkimmer, budget 0.6, predictors 64 wide, none before layer 0 (the recipe's default now)",
    "tkdp64n0-t0.47": "Transkimmer, budget 0.47, the same predictors",
    "tkdp64n0-t0.47-s43": "Transkimmer, budget 0.47, the same predictors, seed 43",
    "tkdp64n0-t0.35": "Transkimmer, budget 0.35, the same predictors",
    "tkdp64n0-t0.25": "Transkimmer, budget 0.25, the same predictors",
    "tkr-t0.47": "Transkimmer, budget 0.47, the README's budget command with the command's defaults (the same settings)",
    "tkdp64n0s6-t0.47": "Transkimmer, budget 0.47, the same predictors at 6e-3 (1e-3 x hidden / width)",
    "ltp-t0.5": "LTP, budget 0.5",
    "ltp-t0.4": "LTP, budget 0.4",
    "ltp-t0.3": "LTP, budget 0.3",
    "ltp-t0.2": "LTP, budget 0.2",
    "ltpr-t0.6": "LTP log-relative, budget 0.6",
    "ltpr-t0.5": "LTP log-relative, budget 0.5",
    "ltpr-t0.4": "LTP log-relative, budget 0.4",
    "ltpr-t0.4-s43": "LTP log-relative, budget 0.4, seed 43",
    "ltpr-t0.3": "LTP log-relative, budget 0.3",
    "ltpr-t0.5-soft": "LTP log-relative, budget 0.5, budget on soft masks",
}


def knob_sweep(*path) -> str:
    """Every setting `tokenskim calibrate` searched (its calibration.json): metric, kept ratio, FLOPs, keep rates."""
    sweep = read(*path)
    knob, rows = sweep["knob"], []
    names = knob.split(",")  # two knobs searched together: their values as a list, "a / b" in the table
    for p in sorted(sweep["points"], key=lambda p: p["flops_ratio"]):
        value = [p[n] for n in names] if len(names) > 1 else p[knob]
        note = " (as trained)" if value == sweep["trained_value"] else ""
        note += " (chosen)" if value == sweep["chosen"] else ""
        shown = " / ".join(f"{v:.3g}" for v in value) if len(names) > 1 else f"{value:.3g}"
        rows.append([f"{shown}{note}", pct(p["accuracy"]), f"{p['kept_token_ratio']:.3f}", x(p["flops_ratio"]),
                     keep_rates(p)])
    return table([" / ".join(names), "accuracy", "kept-token ratio", "FLOPs ratio", "keep rate per layer"], rows)


def sst2_full() -> str:
    return budget_experiment("sst2_full", FULL_RUNS, "densec-e2", "dense 2 ep.", ("calibration", "tkd-t0.45.json"),
                             ("calibration", "ltp-t0.5.json"), ("calibration", "tkd-t0.45-k0.518-hard.json"),
                             ("calibration", "tkdp64-t0.45.json"), ("calibration", "tkdp64n0-t0.47.json"))


# ----------------------------------------------------------------------------------------------------
# imdb_512/: the budget recipe on 512-token reviews

IMDB_RUNS = {
    "dense-e1": "dense-e1 (1 epoch)",
    "densec-e2": "densec-e2 (dense-e1 + 1 dense epoch)",
    "tkd-t0.3": "Transkimmer, budget 0.3",
    "tkd-t0.3-k0.571": "the same, keep_threshold 0.571 (the knob's 3x point)",
    "tkd-t0.3-s43": "Transkimmer, budget 0.3, seed 43",
    "ltpr-t0.25": "LTP log-relative, budget 0.25",
    "tkdp64n0-t0.3-slr6e-3": "Transkimmer, budget 0.3, the recipe's predictors (64 wide, none before layer 0) at 6e-3",
    "tkdp64n0-t0.3-slr6e-3-k0.35": "the same, keep_threshold 0.35",
    "tkdp64n0-t0.3-slr6e-3-kd2": "the same training, distilling densec-e2",
    "tkdd-t0.28": "Transkimmer, budget 0.28, from densec-e2 (3 epochs in all; its change is from its own start)",
}


def imdb_512() -> str:
    return budget_experiment("imdb_512", IMDB_RUNS, "densec-e2", "dense 2 ep.", ("calibration", "tkd-t0.3.json"),
                             ("calibration", "ltpr-t0.25.json"))


# ----------------------------------------------------------------------------------------------------
# ag_news_pyramid/: Magic Pyramid with a budget on AG News

AG_NEWS_RUNS = {
    "dense-e1": "dense-e1 (1 epoch)",
    "densec-e2": "dense-e1 + 1 dense epoch (the encoder's epochs in most rows below)",
    "densec-e2.5": "dense-e1 + 1.5 dense epochs (those of the rows with a 1-epoch soft stage)",
    "mp-t0.25": "Magic Pyramid, budget 0.25, thresholds at lr 1e-3",
    "mp-t0.25-slr1e-4": "Magic Pyramid, budget 0.25, thresholds at lr 1e-4",
    "mpr-t0.25": "Magic Pyramid, budget 0.25, log-relative thresholds at lr 1e-2",
    "mpr-t0.25-slr5e-2": "Magic Pyramid, budget 0.25, log-relative thresholds at lr 5e-2",
    "mpr-t0.25-ft3": "Magic Pyramid, budget 0.25, log-relative thresholds at lr 1e-2, final_threshold 3",
    "mpr-t0.25-ft3-exit5e-3": "the same, exit heads retrained 1 epoch at 5e-3",
    "mpr-t0.25-pfl-ft3": "final_threshold 3, layer 0 may prune (prune_first_layer)",
    "mpr-t0.25-pfl-ft6": "final_threshold 6, layer 0 may prune",
    "mpr-t0.25-pfl-ft3-soft1-slr3e-2": "final_threshold 3, layer 0 may prune, soft stage 1 epoch, thresholds at 3e-2",
    "mpr-t0.25-pfl-ft3-soft1-slr3e-2-exit5e-3": "the same, exit heads 1 epoch at 5e-3",
    "mpr-t0.25-pfl-ft3-soft1-slr3e-2-scale1.9": "the same, hard stage and exit heads under threshold_scale 1.9",
    "mpr-t0.2-pfl-ft3-soft1-slr3e-2-exit5e-3": "budget 0.2, otherwise as the best run (exit heads 1 epoch at 5e-3)",
    "mpr-t0.25-f1-pfl-ft3-soft1-slr3e-2-exit5e-3": "budget 0.25, min_kept_tokens 1 (otherwise as the best run)",
    "mpr-t0.2-f1-pfl-ft3-soft1-slr3e-2-exit5e-3": "budget 0.2, min_kept_tokens 1",
    "mpr-t0.2-f1-pfl-ft3-soft1-slr3e-2-exit5e-3-tau0.6": "the same, exit_threshold 0.6 (picked on the calibration rows)",
    "mpr-t0.18-f1-pfl-ft3-soft1-slr3e-2-exit5e-3": "budget 0.18, min_kept_tokens 1",
    "mpr-t0.18-f1-pfl-ft3-soft1-slr3e-2-exit5e-3-tau0.4": "the same, exit_threshold 0.4 (its 4x point on the calibration rows)",
}


def ag_news_pyramid() -> str:
    return budget_experiment("ag_news_pyramid", AG_NEWS_RUNS, "densec-e2", "dense 2 ep.",
                             ("calibration_threshold_scale_mp-t0.25.json",),
                             ("calibration_exit_threshold_mpr-t0.25.json",),
                             ("calibration_exit_threshold_mpr-t0.25-ft3-exit5e-3.json",),
                             ("calibration_exit_threshold_mpr-t0.25-pfl-ft3-soft1-slr3e-2-exit5e-3.json",),
                             ("calibration_threshold_scale_mpr-t0.25-pfl-ft3-soft1-slr3e-2-exit5e-3.json",),
                             ("calibration_exit_threshold_mpr-t0.2-f1-pfl-ft3-soft1-slr3e-2-exit5e-3.json",))


# ag_news_pyramid/holdout.sh: 1,000 training rows held out, both knobs calibrated together on them

AG_NEWS_HOLDOUT_RUNS = {
    "ho-dense-e1": "dense-e1 (1 epoch on the 5,080 rows left)",
    "ho-densec-e2": "dense-e1 + 1 dense epoch",
    "ho-densec-e3": "dense-e1 + 2 dense epochs (the control of the run from densec-e2)",
}
for _run, _label in (("mpr-t0.2", "budget 0.2"), ("mpr-t0.2-s43", "budget 0.2, seed 43"), ("mpr-t0.25", "budget 0.25"),
                     ("mpr-t0.2-soft1e-5", "budget 0.2, the soft stage's encoder at 1e-5 (its thresholds at 3e-2)"),
                     ("mpr-t0.2-exit2", "budget 0.2 (the first model), exit heads retrained 2 epochs"),
                     ("mpr-t0.2-kd", "budget 0.2, the pruning stages distilling densec-e2 (alpha 0.5, T 1)"),
                     ("mpr-t0.2-kd-s43", "budget 0.2, distilling densec-e2, seed 43"),
                     ("mpr-t0.15-kd", "budget 0.15, distilling densec-e2"),
                     ("mpr-t0.2-hard2", "budget 0.2, hard stage 1.5 epochs"),
                     ("mpr-t0.2-kdhard2", "budget 0.2, distilling densec-e2, hard stage 1.5 epochs"),
                     ("mpr-t0.2-from2", "budget 0.2, from densec-e2 (its control: densec-e3)")):
    AG_NEWS_HOLDOUT_RUNS.update({
        f"ho-{_run}": f"Magic Pyramid, {_label}, min_kept_tokens 1 (as trained: tau 0.1)",
        f"ho-{_run}-joint4x": "the same, both knobs calibrated together to 4x on the held-out rows",
        f"ho-{_run}-exit4x": "the same, exit_threshold alone at 4x (the same search)",
        f"ho-{_run}-scale4x": "the same, threshold_scale alone at 4x (no exits)",
    })


def ag_news_holdout() -> str:
    """The runs only: each joint search (about 50 pairs) is in `calibration_joint_ho-*.json`, its curve in the PNG."""
    return budget_runs("ag_news_pyramid", AG_NEWS_HOLDOUT_RUNS, "ho-densec-e2")


# ----------------------------------------------------------------------------------------------------
# demo/ (`tokenskim demo`), bench_*_cpu/ (`tokenskim bench`), predict_imdb_cpu/ (`tokenskim predict`)


def demo() -> str:
    from tokenskim.trainers.demo import format_table

    return format_table(read("demo", "demo_target0.47.json")["rows"])


def bench(folder: str) -> str:
    """Per model and batch size: throughput of the three variants, their paired speedups, the FLOPs ratio."""
    report = read(folder, "bench.json")
    groups = {}
    for r in report["records"]:
        groups.setdefault((r["model"], r["batch_size"]), {})[r["variant"]] = r
    rows, named = [], set()
    for (model, batch), g in groups.items():
        dense, off, skim = g["dense"], g["engine_off"], g["skim"]
        label = Path(model).name
        if model not in named:
            named.add(model)
            label += f" ({skim['metric_name']} {pct(skim['metric_value'])})"
        rows.append([label, batch, f"{dense['throughput']:.1f}", f"{off['throughput']:.1f}", f"{skim['throughput']:.1f}",
                     x(off["speedup_vs_dense"]), x(skim["speedup_vs_dense"]), x(skim["speedup_vs_engine_off"]),
                     f"{skim['flops_ratio']:.2f}", f"{skim['realized_over_flops']:.2f}"])
    return table(["model", "batch", "stock dense ex/s", "engine, skimming off", "skimming", "engine off / stock",
                  "skimming / stock", "skimming / engine off", "FLOPs ratio", "realized/FLOPs"], rows)


def bench_cpu() -> str:
    return "\n\n".join(f"{folder}:\n\n{bench(folder)}" for folder in ("bench_imdb_cpu", "bench_sst2_cpu"))


def predict_imdb_cpu() -> str:
    rows = [[r["model"], f"{r['accuracy']:.4f}", f"{r['examples_per_second']:.1f}", x(r["speedup_vs_dense"]),
             f"{r['kept_token_ratio']:.3f}", x(r["flops_ratio"])] for r in read("predict_imdb_cpu", "results.json")]
    return table(["model", "accuracy", "examples/s", "speedup", "kept-token ratio", "FLOPs ratio"], rows)


# ----------------------------------------------------------------------------------------------------
# transkimmer_vs_dense/: the skim coefficient sweep on SST-2, and dense vs Transkimmer on five tasks

LAMBDAS = (0.1, 0.2, 0.3, 0.5, 1.0)
TASK_RUNS = ("sst2-dense", "pilot-c0.5-s1e-3", "mrpc-dense", "mrpc-tk-c0.5", "cola-dense", "cola-tk-c0.5",
             "stsb-dense", "stsb-tk-c0.5", "imdb-dense", "imdb-dense2", "imdb-tk-c0.5")


def transkimmer_vs_dense() -> str:
    from tokenskim.trainers.metrics import metric_names

    dense = read("transkimmer_vs_dense", "sst2-dense.json")["accuracy"]
    rows = []
    for lam in LAMBDAS:
        r = read("transkimmer_vs_dense", f"pilot-c{lam}-s1e-3.json")
        rows.append([lam, pct(r["accuracy"]), f"{100 * (r['accuracy'] - dense):+.2f}",
                     f"{100 * r['kept_token_ratio']:.1f}%", x(r["flops_ratio"])])
    sweep = table(["lambda", "accuracy", "change", "kept tokens", "FLOPs ratio"], rows)
    rows = []
    for name in TASK_RUNS:
        r = read("transkimmer_vs_dense", f"{name}.json")
        metric = ", ".join(f"{n} {pct(r[n])}" for n in metric_names(r["task"]))
        rows.append([name, r["task"], r["method"], metric, f"{r['kept_token_ratio']:.3f}", x(r["flops_ratio"]),
                     r["num_examples"]])
    tasks = table(["run", "task", "method", "metric", "kept-token ratio", "FLOPs ratio", "eval rows"], rows)
    return sweep + "\n\n" + tasks


# ----------------------------------------------------------------------------------------------------
# pyramid/: LTP, early exit and Magic Pyramid (`pyramid_bench.py`): main comparison, tau sweep, length buckets

PYRAMID_NAMES = {"dense": "dense fine-tune (stock transformers)", "engine_off": "tokenskim engine, pruning and exits off",
                 "ltp": "LTP", "early_exit": "early exit", "magic_pyramid": "Magic Pyramid"}


def pyramid_main(r) -> str:
    rows = []
    for name, m in r["main"].items():
        tau = {"early_exit": r["ee_tau"], "magic_pyramid": r["tau"]}.get(name)
        label = PYRAMID_NAMES[name] + ("" if tau is None else f" (tau {tau})")
        rows.append([label, pct(m["metric"]), x(m["flops_ratio"]), f"{m['kept_token_ratio']:.3f}",
                     f"{m['mean_exit_layer']:.2f}", x(m.get("speedup_vs_dense")), x(m.get("speedup_vs_engine_off"))])
    return table([f"{r['task']} ({r['num_examples']} ex., batch {r['batch_size']})", "metric", "FLOPs ratio",
                  "kept tokens", "mean exit layer", "measured speedup vs dense", "vs engine off"], rows)


def pyramid_sweep(r) -> str:
    rows = []
    for row in r["sweep"]:
        cells = [row["tau"]]
        for name in ("early_exit", "magic_pyramid"):
            m = row.get(name, {})
            cells += [pct(m.get("metric", float("nan"))), x(m.get("flops_ratio")), x(m.get("speedup_vs_dense"))]
        rows.append(cells)
    return table(["tau", "EE metric", "EE FLOPs ratio", "EE measured", "MP metric", "MP FLOPs ratio", "MP measured"], rows)


def pyramid_buckets(r) -> str:
    rows = []
    for bucket, e in r["buckets"].items():
        cells = [f"{x(e[n]['flops_ratio'])} / {x(e[n].get('speedup_vs_dense'))}" if n in e else "-"
                 for n in ("ltp", "early_exit", "magic_pyramid")]
        rows.append([bucket, e["examples"], *cells, pct(e["dense"]["metric"]), pct(e["magic_pyramid"]["metric"])])
    return table(["length bucket", "examples", "LTP FLOPs / measured", "EE FLOPs / measured", "MP FLOPs / measured",
                  "dense metric", "MP metric"], rows)


def pyramid() -> str:
    parts = []
    for name in ("pyramid_sst2.json", "pyramid_ag_news.json"):
        r = read("pyramid", name)
        parts += [f"{r['task']}: {r['data']}", pyramid_main(r), f"tau rule: {r.get('tau_rule')}", pyramid_sweep(r),
                  pyramid_buckets(r)]
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------------------------------
# blockskim_squad/: Block-Skim on SQuAD v1.1, one model at several thresholds


def blockskim_squad() -> str:
    rows = []
    for r in read("blockskim_squad", "blockskim_squad_minilm.json")["results"]:
        tau = "skim off" if r["skim"] == "off" else r["tau"]
        rows.append([tau, f"{r['exact_match']:.2f}", f"{r['f1']:.2f}", f"{100 * r['kept_token_ratio']:.1f}%",
                     f"{r['flops_ratio']:.2f}"])
    return table(["tau", "EM", "F1", "kept tokens", "FLOPs ratio"], rows)


# ----------------------------------------------------------------------------------------------------
# squad_qa/: dense, Transkimmer-QA and Block-Skim trained the same way, scored on the dev split, timed by bench

SQUAD_RUNS = {"dense": "dense",
              "tkd": "Transkimmer-QA from dense, budget 0.5", "block-skim": "Block-Skim, tau 0.5",
              "tk-bounded": "Transkimmer-QA from MiniLM, budget 0.5, bounded mask gradient"}


def squad_qa() -> str:
    rows = []
    for name, label in SQUAD_RUNS.items():
        r = read("squad_qa", "json", f"{name}.json")
        rows.append([label, f"{r['exact_match']:.2f}", f"{r['f1']:.2f}", f"{r['kept_token_ratio']:.3f}",
                     x(r["flops_ratio"])])
    scores = table(["model", "EM", "F1", "kept-token ratio", "FLOPs ratio"], rows)
    rows = []
    for r in read("squad_qa", "bench", "bench.json")["records"] + read("squad_qa", "bench_block_skim", "bench.json")["records"]:
        rows.append([Path(r["model"]).name, r["variant"], f"{r['throughput']:.1f}", f"{r['metric']['exact_match']:.2f}",
                     f"{r['metric']['f1']:.2f}", f"{r['flops_ratio']:.2f}", x(r.get("speedup_vs_dense")),
                     x(r.get("speedup_vs_dense_sorted")), f"{r['realized_over_flops']:.2f}" if "realized_over_flops" in r else "-"])
    timed = table(["model", "variant", "windows/s", "EM", "F1", "FLOPs ratio", "vs dense", "vs dense sorted",
                   "realized/FLOPs"], rows)
    return scores + "\n\n" + timed


def timed(folder: str) -> str:
    """Every variant of a `tokenskim bench` run: throughput, metric, FLOPs ratio, speedups against both dense
    baselines and against the engine with skimming off."""
    report = read(*folder.split("/"), "bench.json")
    rows = [[Path(r["model"]).name, r["batch_size"], r["variant"], f"{r['throughput']:.1f}", pct(r["metric_value"]),
             f"{r['kept_token_ratio']:.3f}", f"{r['flops_ratio']:.2f}", x(r.get("speedup_vs_dense")),
             x(r.get("speedup_vs_dense_sorted")), x(r.get("speedup_vs_engine_off")),
             f"{r['realized_over_flops']:.2f}" if "realized_over_flops" in r else "-"] for r in report["records"]]
    return table(["model", "batch", "variant", "ex/s", "metric", "kept", "FLOPs ratio", "vs dense", "vs dense sorted",
                  "vs engine off", "realized/FLOPs"], rows)


EXPERIMENTS = {
    "sst2_full": sst2_full,
    "ag_news_pyramid": ag_news_pyramid,
    "ag_news_holdout": ag_news_holdout,
    "imdb_512": imdb_512,
    "budget_sst2": budget_sst2,
    "demo": demo,
    "bench_cpu": bench_cpu,
    "predict_imdb_cpu": predict_imdb_cpu,
    "transkimmer_vs_dense": transkimmer_vs_dense,
    "pyramid": pyramid,
    "blockskim_squad": blockskim_squad,
    "squad_qa": squad_qa,
    "budget_sst2_timed": lambda: timed("budget_sst2/bench"),
    "sst2_full_timed": lambda: timed("sst2_full/bench"),
    "sst2_full_timed_tk": lambda: timed("sst2_full/bench_tk_recipe"),
    "imdb_512_timed": lambda: "\n\n".join(timed(f"imdb_512/{folder}") for folder in ("bench", "bench_ltpr", "bench_tk_recipe")),
    "ag_news_pyramid_timed": lambda: timed("ag_news_pyramid/bench"),
    "ag_news_holdout_timed": lambda: timed("ag_news_pyramid/bench_ho"),
    "imdb_512_synthetic": lambda: timed("bench_imdb_cpu/synthetic_minilm"),
}


def main(names):
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise SystemExit(f"unknown experiment(s) {unknown}; choose from {', '.join(EXPERIMENTS)}")
    for name in names or EXPERIMENTS:
        print(f"## {name}\n\n{EXPERIMENTS[name]()}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
