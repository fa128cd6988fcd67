"""`tokenskim predict`: labels for many texts, as fast as the model allows.

    tokenskim predict --model DIR_OR_HUB_NAME --input FILE_OR_HUB_DATASET --output preds.jsonl \\
        [--text-columns COL[,COL2]] [--batch-size 32] [--device cpu] [--dtype float32] [--max-length N]
    accelerate launch [--num_processes N] -m tokenskim.trainers.cli predict ...    (one shard per process)

The input is read in chunks of `--chunk-size` rows, in file order. Within a chunk the rows are sorted by token
length and batched, so a batch pads little: padding is real work for a dense model, and any batch runs as long as
its longest row. With several processes each takes every N-th row of the sorted chunk (the shards get the same
mix of lengths); the main process gathers the chunk's predictions, puts them back in input order and appends them
to the output. An interrupted run therefore continues after the last chunk written (`--overwrite` starts over).

Output, one row per input row in input order: `index`, `label` (the model's `id2label` name) and `score` (its
probability); a regression model writes `index` and `score`. JSON lines, or CSV/TSV by the output's extension.
At the end a summary (also written to `<output>.summary.json`): examples/s of the whole run (tokenizing and
writing included), the kept-token ratio and the FLOPs ratio (`tokenskim.modeling.flops`; 1.0 for a dense model).
"""

import argparse
import csv
import io
import json
import time
from pathlib import Path

import datasets
import torch
from tqdm.auto import tqdm

from . import data
from .errors import UsageError
from .evaluate import default_max_length, load_classifier
from .trainer import eval_counts, skim_metrics

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
INPUT_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".txt")


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="a fine-tuned classifier: checkpoint folder or Hub name")
    parser.add_argument("--input", required=True,
                        help="a .csv, .tsv, .json/.jsonl or .txt file (one text per line), or a Hub dataset name")
    parser.add_argument("--output", required=True, help="the predictions: .jsonl (or .json), .csv or .tsv")
    parser.add_argument("--text-columns", type=lambda s: tuple(c for c in s.split(",") if c), metavar="COL[,COL2]",
                        help="text column, or a pair for sentence-pair models (default: 'text', or the only text column)")
    parser.add_argument("--text-column", dest="text_columns", type=lambda s: (s,), help=argparse.SUPPRESS)
    parser.add_argument("--dataset-config", help="the Hub dataset's configuration")
    parser.add_argument("--split", default="train", help="the Hub dataset's split (default train)")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per forward pass (default 32)")
    parser.add_argument("--max-length", type=int,
                        help="truncate to this many tokens (default: the length the model was fine-tuned with)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: Accelerate's device for this process)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32", help="weights and activations (default float32)")
    parser.add_argument("--chunk-size", type=int, default=2048,
                        help="rows sorted together and written at once; an interrupted run resumes after the "
                             "last chunk written (default 2048)")
    parser.add_argument("--overwrite", action="store_true", help="start over instead of resuming an existing output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# ----------------------------------------------------------------------------------------------------
# Input


def read_input(source: str, config=None, split="train") -> datasets.Dataset:
    """A local file (by extension; .txt is one text per line, column `text`) or a Hub dataset split."""
    path = Path(source)
    if path.is_file():
        if path.suffix.lower() == ".txt":
            return data.read_file("text", path)
        builder, read = data.file_read_options(path)
        return data.read_file(builder, path, **read)
    if path.suffix.lower() in INPUT_SUFFIXES or path.is_absolute() or source.startswith((".", "~")):
        raise UsageError(f"input file not found: {source}")  # a path, not a Hub name such as stanfordnlp/imdb
    if data.hub_is_offline():
        raise UsageError(f"{source!r} is not a file and the Hub is offline (HF_HUB_OFFLINE): give a local file")
    return datasets.load_dataset(source, config, split=split)


def text_columns_of(ds: datasets.Dataset, given=None) -> tuple:
    """The column(s) to classify: `given`, else `text`, else the only string column."""
    if given:
        data.check_columns(ds, given)
        return tuple(given)
    if "text" in ds.column_names:
        return ("text",)
    strings = [c for c, f in ds.features.items() if getattr(f, "dtype", None) in ("string", "large_string")]
    if len(strings) == 1:
        return (strings[0],)
    raise UsageError(f"which column holds the text? The input has columns {ds.column_names}: "
                     "give --text-columns COL (or COL1,COL2 for sentence pairs)")


# ----------------------------------------------------------------------------------------------------
# Output: rows appended chunk by chunk, so a long run can resume


class PredictionFile:
    """The output file: JSON lines, or CSV/TSV with a header row (`fields`)."""

    def __init__(self, path, fields):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".jsonl", ".json", ".csv", ".tsv"):
            raise UsageError(f"--output {path}: unsupported file type {suffix!r}; use .jsonl, .csv or .tsv")
        self.delimiter = {".csv": ",", ".tsv": "\t"}.get(suffix)
        self.fields = fields

    def rows_written(self) -> int:
        """Complete rows already in the file. A partly written last line (an interrupted write) is cut off."""
        if not self.path.is_file():
            return 0
        text = self.path.read_bytes()
        complete = text[: text.rfind(b"\n") + 1]
        if len(complete) != len(text):
            self.path.write_bytes(complete)
        lines = complete.count(b"\n")
        return max(lines - 1, 0) if self.delimiter else lines

    def start(self, overwrite: bool) -> int:
        """Rows to skip: 0 for a new (or overwritten) file, which gets its header now."""
        done = 0 if overwrite else self.rows_written()
        if done == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(self._format([dict(zip(self.fields, self.fields))]) if self.delimiter else "",
                                 encoding="utf-8")
        return done

    def append(self, rows: list):
        with open(self.path, "a", encoding="utf-8", newline="") as f:
            f.write(self._format(rows))
            f.flush()

    def _format(self, rows: list) -> str:
        if self.delimiter is None:
            return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.fields, delimiter=self.delimiter, lineterminator="\n")
        writer.writerows(rows)
        return buf.getvalue()


# ----------------------------------------------------------------------------------------------------
# Prediction


def is_regression(config) -> bool:
    return config.problem_type == "regression" or config.num_labels == 1


def prediction_rows(logits: torch.Tensor, indices, config) -> list:
    """Output rows of one batch: the label name and its probability, or the regression score."""
    logits = logits.float().cpu()
    if is_regression(config):
        return [{"index": i, "score": float(v)} for i, v in zip(indices, logits[:, 0])]
    probs = logits.softmax(-1)
    score, label = probs.max(-1)
    return [{"index": i, "label": config.id2label[int(k)], "score": float(s)} for i, k, s in zip(indices, label, score)]


def length_sorted_batches(lengths, batch_size: int, rank: int = 0, world: int = 1) -> list:
    """Positions in a chunk, longest first, this process's share (every `world`-th), cut into batches."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])[rank::world]
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


@torch.no_grad()
def predict_chunk(model, collate, encoded, first_index: int, batches, device, progress=None, world=1):
    """Predictions `[{index, label, score}]` and token counts of this process's batches of one chunk."""
    rows, counts = [], []
    num_layers = model.config.num_hidden_layers
    for batch_positions in batches:
        features = [{k: encoded[k][p] for k in encoded} for p in batch_positions]
        inputs = {k: v.to(device) for k, v in collate(features).items()}
        outputs = model(**inputs)
        rows += prediction_rows(outputs["logits"], [first_index + p for p in batch_positions], model.config)
        batch_counts = eval_counts(outputs, inputs["attention_mask"], num_layers)
        exit_layer = outputs.get("exit_layer")
        counts.append([c.cpu() for c in (*batch_counts, *(() if exit_layer is None else (exit_layer,)))])
        if progress is not None:
            progress.update(len(batch_positions) * world)
    return rows, counts


def summary(model, counts: list, examples: int, seconds: float, max_length: int) -> dict:
    """examples/s of the run, and the kept-token and FLOPs ratios over every row predicted."""
    out = {"examples": examples, "seconds": round(seconds, 3), "examples_per_second": examples / seconds if seconds else 0.0,
           "max_length": max_length}
    if counts:
        columns = [torch.cat(c) for c in zip(*counts)]
        out.update(skim_metrics(model, *columns[:3], exit_layer=columns[3] if len(columns) > 3 else None))
        out["tokens_per_example"] = float(columns[0].double().mean())
    return out


def run(args):
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list, gather_object

    if args.batch_size < 1 or args.chunk_size < 1:
        raise UsageError("--batch-size and --chunk-size must be positive")
    # without a GPU Accelerate sets up processes launched together (WORLD_SIZE > 1) only when told to use the CPU
    on_cpu = args.device == "cpu" if args.device else not torch.cuda.is_available()
    state = PartialState(cpu=on_cpu)
    main = state.is_main_process
    device = torch.device(args.device) if args.device else state.device
    model, tokenizer = load_classifier(args.model, dtype=DTYPES[args.dtype])
    model.to(device)
    ds = read_input(args.input, args.dataset_config, args.split)
    columns = text_columns_of(ds, args.text_columns)
    max_length = args.max_length or default_max_length(tokenizer, model.config)
    output = PredictionFile(args.output, ["index", "score"] if is_regression(model.config) else ["index", "label", "score"])

    done = [output.start(args.overwrite) if main else None]
    broadcast_object_list(done)  # every process skips the same rows
    done, total = done[0], ds.num_rows
    if done > total:
        raise UsageError(f"{args.output} has {done} rows but the input has {total}: is it another input's "
                         "predictions? Pass --overwrite to start over")
    if done and main:
        print(f"resuming: {done} of {total} rows already in {args.output}")

    collate = data.collator(tokenizer)
    progress = tqdm(total=total, initial=done, unit="ex", desc="predict", disable=not main or args.no_progress)
    counts, start = [], time.perf_counter()
    for begin in range(done, total, args.chunk_size):
        end = min(begin + args.chunk_size, total)
        encoded = data.encode_texts(tokenizer, ds[begin:end], columns, max_length)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        batches = length_sorted_batches(lengths, args.batch_size, state.process_index, state.num_processes)
        rows, chunk_counts = predict_chunk(model, collate, encoded, begin, batches, device,
                                           progress if main else None, state.num_processes)
        counts += chunk_counts
        rows = gather_object(rows)
        if main:
            output.append(sorted(rows, key=lambda r: r["index"]))
            progress.n = end
            progress.refresh()
    progress.close()
    seconds = time.perf_counter() - start

    # every process's token counts, for the ratios over all rows predicted in this run
    counts = gather_object([counts])
    state.destroy_process_group()  # a gloo group left to interpreter exit can abort the process
    if not main:
        return 0
    report = summary(model, [c for per_process in counts for c in per_process], total - done, seconds, max_length)
    report.update(model=args.model, input=args.input, output=args.output, processes=state.num_processes,
                  device=str(device), dtype=args.dtype, batch_size=args.batch_size,
                  num_layers=model.config.num_hidden_layers)
    Path(f"{args.output}.summary.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(format_summary(report))
    return 0


def format_summary(report: dict) -> str:
    lines = [f"wrote {report['output']} ({report['examples']} rows predicted in this run, "
             f"{report['processes']} process(es), {report['device']}, {report['dtype']})"]
    if report["examples"]:
        lines.append(f"  examples/s         {report['examples_per_second']:.1f}  ({report['seconds']:.1f} s)")
        for key in ("kept_token_ratio", "flops_ratio", "tokens_per_example"):
            if key in report:
                lines.append(f"  {key:<18} {report[key]:.3f}")
        if report.get("mean_exit_layer", report["num_layers"] - 1) < report["num_layers"] - 1:  # some rows exited early
            lines.append(f"  {'mean_exit_layer':<18} {report['mean_exit_layer']:.3f}")
    return "\n".join(lines)
