"""`tokenskim calibrate`: pick a trained model's inference knob for a target FLOPs ratio, without retraining.

Each family has one knob that trades tokens for accuracy at inference, monotone in the work saved:
Transkimmer's `keep_threshold` (P(keep) a token needs), LTP's and Magic Pyramid's `threshold_scale`
(a factor on the learned thresholds), and early exit's `exit_threshold` (tau; `--knob exit_threshold` for
Magic Pyramid). `calibrate` evaluates the model on a calibration split (by default 1,000 seeded training
rows, not the evaluation split) over a coarse grid of the knob, then bisects to the smallest setting that
reaches `--target-flops`, writes it into the folder's `config.json`, and draws the metric-vs-FLOPs curve it
searched (`calibration.png`, with every point in `calibration.json`).

Magic Pyramid has two knobs that both reach a FLOPs target: pruning harder or exiting sooner. `--knob
threshold_scale,exit_threshold` searches them together (`joint_search`): from pruning alone to the trained
pruning with exits, a few threshold scales, each with the smallest exit threshold that reaches the target, and
of those pairs the one that scores best on the calibration rows. Choosing by score wants rows the model never
trained on: train with `--holdout-samples N` and calibrate with `--calibration-split holdout --holdout-samples N`
(on training rows, harder pruning costs less than it does on new inputs).

    tokenskim calibrate --model DIR --task sst2 --target-flops 2.0
"""

import json
import math
from pathlib import Path

from . import data, metrics
from .errors import UsageError
from .evaluate import add_data_arguments, check_model_fits_task, default_max_length, evaluate_model, load_classifier

# knob -> (low, high, to search space, from search space); searched where the FLOPs ratio grows with it
KNOBS = {
    "keep_threshold": (1e-5, 1 - 1e-5, lambda p: math.log(p / (1 - p)), lambda z: 1 / (1 + math.exp(-z))),
    "threshold_scale": (0.0, 8.0, lambda x: x, lambda x: x),
    "exit_threshold": (0.0, 1.0, lambda x: x, lambda x: x),
}
# two knobs searched together (`joint_search`): (outer, inner)
JOINT_KNOBS = {"threshold_scale,exit_threshold": ("threshold_scale", "exit_threshold")}
CALIBRATION_FILE = "calibration.json"


def default_knob(config) -> str:
    """The family's knob: the first of `KNOBS` the config has."""
    for name in KNOBS:
        if hasattr(config, name):
            return name
    raise UsageError(f"{config.model_type} models have no inference knob ({', '.join(KNOBS)}): nothing to calibrate")


def search(evaluate, knob: str, target_flops: float, grid_points: int = 6, bisect_steps: int = 6) -> tuple:
    """The smallest knob value whose FLOPs ratio reaches `target_flops`, and every point evaluated.

    evaluate: knob value -> results dict with `flops_ratio`. The knob is searched on a grid (in logit
    space for probabilities) and then bisected between the last grid point below the target and the first
    one at or above it. Returns `(value or None when the target is out of reach, points sorted by knob)`.
    """
    low, high, forward, backward = KNOBS[knob]
    points = {}

    def at(z):
        value = float(f"{backward(z):.6g}")
        if value not in points:
            points[value] = evaluate(value)
        return value, points[value]["flops_ratio"]

    zs = [forward(low) + (forward(high) - forward(low)) * i / (grid_points - 1) for i in range(grid_points)]
    below, above = None, None
    for z in zs:
        _, ratio = at(z)
        if ratio >= target_flops:
            above = z
            break
        below = z
    if above is None:
        return None, sorted(points.items())
    if below is not None:
        for _ in range(bisect_steps):
            mid = (below + above) / 2
            _, ratio = at(mid)
            below, above = (below, mid) if ratio >= target_flops else (mid, above)
    return float(f"{backward(above):.6g}"), sorted(points.items())


def joint_search(evaluate, knobs: tuple, trained_outer: float, target_flops: float, metric: str,
                 steps: int = 4) -> tuple:
    """Two knobs for one target. The outer knob alone (the inner one at its lowest, e.g. no exits) reaches the
    target at some value E (`search`); from `steps` outer values evenly spaced from the trained one towards E,
    each with the smallest inner value that reaches the target (`search` again), and E alone, the pair with
    the highest `metric`.

    evaluate: (outer value, inner value) -> results dict with `flops_ratio` and `metric`. Returns `(chosen
    (outer, inner) pair or None when no pair reaches the target, points [((outer, inner), results)] in search
    order)`.
    """
    seen = {}

    def at(outer, inner):  # each pair evaluated once (the searches meet at the trained value with no exits)
        if (outer, inner) not in seen:
            seen[outer, inner] = evaluate(outer, inner)
        return seen[outer, inner]

    inner_low = KNOBS[knobs[1]][0]
    edge, edge_points = search(lambda value: at(value, inner_low), knobs[0], target_flops)
    points = [((value, inner_low), results) for value, results in edge_points]
    candidates = [(edge, inner_low)] if edge is not None else []
    if edge is None:  # pruning alone cannot reach the target: the inner knob at the trained outer value
        outers = [trained_outer]
    else:  # from the trained value (or no pruning, when the trained value already reaches it) towards E
        start = trained_outer if trained_outer < edge else KNOBS[knobs[0]][0]
        outers = [float(f"{start + (edge - start) * i / steps:.6g}") for i in range(steps)]
    for outer in outers:
        inner, inner_points = search(lambda value: at(outer, value), knobs[1], target_flops)
        points += [((outer, value), results) for value, results in inner_points]
        if inner is not None:
            candidates.append((outer, inner))
    points = list(dict(points).items())  # each pair once, in the order first evaluated
    if not candidates:
        return None, points
    scores = dict(points)
    return max(candidates, key=lambda pair: scores[pair][metric]), points


def show(value) -> str:
    """A knob value, or a pair of them, for labels and messages."""
    return "/".join(f"{v:.3g}" for v in value) if isinstance(value, tuple) else f"{value:.3g}"


def calibration_plot(points, knob, chosen, metric: str, target_flops: float, path) -> Path:
    """Metric against FLOPs ratio for every knob value (or pair of values) evaluated; the chosen one marked."""
    from .plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    if points and isinstance(points[0][0], tuple):
        # two knobs (too many points to label): the outer knob alone (inner at its lowest), then one line per outer
        # value over the inner one's values; the metric axis from 0.1 below the best point
        outer_name, inner_name = knob.split(",")
        low = KNOBS[inner_name][0]
        lines = {f"{outer_name} alone": [r for value, r in points if value[1] == low]}
        for outer in sorted({value[0] for value, _ in points if value[1] != low}):
            lines[f"{outer_name}={outer:.3g}, {inner_name} searched"] = [r for value, r in points if value[0] == outer]
        for label, line in lines.items():
            line = sorted(line, key=lambda r: r["flops_ratio"])
            ax.plot([r["flops_ratio"] for r in line], [r[metric] for r in line], "o-", markersize=3, label=label)
        best = max(r[metric] for _, r in points)
        ax.set_ylim(best - 0.1, best + 0.01)
    else:
        by_flops = sorted(points, key=lambda p: p[1]["flops_ratio"])
        ax.plot([r["flops_ratio"] for _, r in by_flops], [r[metric] for _, r in by_flops], "o-", color="#3b6ea8",
                label=f"{knob} searched")
        for value, r in by_flops:
            ax.annotate(show(value), (r["flops_ratio"], r[metric]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    if chosen is not None:
        r = dict(points)[chosen]
        ax.plot([r["flops_ratio"]], [r[metric]], "*", markersize=14, color="#d1495b", label=f"chosen {knob}={show(chosen)}")
    ax.axvline(target_flops, color="grey", linestyle=":", label=f"target {target_flops:g}x")
    ax.set_xlabel("FLOPs ratio (dense / model)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="a local fine-tuned tokenskim checkpoint folder (its config is rewritten)")
    add_data_arguments(parser)
    parser.add_argument("--target-flops", type=float, required=True, help="the FLOPs ratio to reach (2.0 = half the work)")
    parser.add_argument("--knob", choices=[*KNOBS, *JOINT_KNOBS], metavar="KNOB",
                        help=f"the setting to search: {', '.join(KNOBS)} (default: the family's); Magic Pyramid: "
                             "also threshold_scale,exit_threshold, both together")
    parser.add_argument("--calibration-split", choices=["train", "holdout", "validation"], default="train",
                        help="rows to calibrate on (default: train, so the evaluation split stays unseen; holdout: the "
                             "training rows `tokenskim train --holdout-samples N` set aside, which the model never saw)")
    parser.add_argument("--holdout-samples", type=int, help="with --calibration-split holdout: the N given to train")
    parser.add_argument("--max-calibration-samples", type=int, default=1000, help="seeded subset size (default 1000)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dry-run", action="store_true", help="search and plot, but leave config.json as it is")
    parser.add_argument("--max-metric-drop", type=float, default=0.05,
                        help="leave config.json as it is when the chosen value scores more than this below the "
                             "trained value on the calibration rows (metric units: 0.05 = 5 points; default 0.05)")


def run(args):
    folder = Path(args.model)
    if not (folder / "config.json").is_file():
        raise UsageError(f"{folder} is not a local checkpoint folder (no config.json): calibrate rewrites its config")
    model, tokenizer = load_classifier(str(folder))
    knob = args.knob or default_knob(model.config)
    names = JOINT_KNOBS.get(knob, (knob,))
    for name in names:
        if not hasattr(model.config, name):
            raise UsageError(f"{model.config.model_type} has no {name}; try --knob {default_knob(model.config)}")
    raw, spec = data.load_task(
        task=args.task, data_dir=args.data_dir, train_file=args.train_file, validation_file=args.validation_file,
        dataset_name=args.dataset_name, dataset_config=args.dataset_config, validation_split=args.validation_split,
        text_columns=args.text_columns, label_column=args.label_column, problem_type=args.problem_type,
        splits=("train" if args.calibration_split == "holdout" else args.calibration_split,),
    )
    if args.calibration_split == "holdout":
        if args.holdout_samples is None:
            raise UsageError("--calibration-split holdout needs --holdout-samples, the number given to tokenskim train")
        rows = data.hold_out(raw["train"], args.holdout_samples)[1]
    else:
        rows = raw[args.calibration_split]
    rows = data.subsample(rows, args.max_calibration_samples, args.seed)
    check_model_fits_task(model.config, spec)
    max_length = args.max_length or default_max_length(tokenizer, model.config)
    metric = metrics.metric_names(spec.name, spec.is_regression, spec.num_labels)[0]
    joint = len(names) > 1
    values_of = (lambda value: value) if joint else (lambda value: (value,))  # a knob value as a tuple of values

    def evaluate(*values):
        for name, value in zip(names, values):
            setattr(model.config, name, value)  # selectors read the live config
        results = evaluate_model(model, tokenizer, rows, spec, args.batch_size, max_length)
        print(f"  {knob}={show(values if joint else values[0]):<10} {metric} {results[metric]:.4f}  "
              f"flops_ratio {results['flops_ratio']:.2f}  kept {results['kept_token_ratio']:.3f}")
        return results

    print(f"calibrating {knob} of {folder} on {rows.num_rows} {args.calibration_split} rows for FLOPs ratio >= {args.target_flops}")
    trained = tuple(getattr(model.config, name) for name in names)
    trained_value = trained if joint else trained[0]
    trained_metric = evaluate(*trained)[metric]
    if joint:
        chosen, points = joint_search(evaluate, names, float(trained[0]), args.target_flops, metric)
    else:
        chosen, points = search(evaluate, knob, args.target_flops)
    record = {
        "knob": knob, "trained_value": trained_value, "trained_metric": trained_metric, "chosen": chosen,
        "target_flops": args.target_flops, "split": args.calibration_split, "rows": rows.num_rows, "metric": metric,
        "points": [{**dict(zip(names, values_of(value))), **results} for value, results in points],
    }
    (folder / CALIBRATION_FILE).write_text(json.dumps(record, indent=2) + "\n")
    plot = calibration_plot(points, knob, chosen, metric, args.target_flops, folder / "calibration.png")
    if chosen is None:
        print(f"no {knob} in its range reaches FLOPs ratio {args.target_flops}; config.json left as it is ({plot})")
        return 1
    chosen_metric = dict(points)[chosen][metric]
    drop = trained_metric - chosen_metric
    print(f"{knob} = {show(chosen)}: {metric} {chosen_metric:.4f}, {drop:+.4f} below the trained value "
          f"{show(trained_value)} ({trained_metric:.4f})")
    if drop > args.max_metric_drop:
        print(f"that is more than --max-metric-drop {args.max_metric_drop:g}: config.json left as it is ({plot}); "
              f"this model cannot reach {args.target_flops}x with {knob} alone, retrain with a smaller budget")
        return 1
    if not args.dry_run:  # only the knobs change: edit the file rather than re-serialise the config
        path = folder / "config.json"
        saved = json.loads(path.read_text())
        saved.update(zip(names, values_of(chosen)))
        path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    print(f"{knob} = {show(chosen)} (trained with {show(trained_value)})"
          + ("" if args.dry_run else f", written to {folder / 'config.json'}") + f"; curve: {plot}")
    return 0
