"""`tokenskim bench`: wall-clock speed of a tokenskim checkpoint against the model a user would otherwise run.

From the same weights it builds up to four variants and times them on the same examples:

- `dense`: the stock `transformers` model (`BertForSequenceClassification` / `BertForQuestionAnswering` /
  `Roberta...`, sdpa attention), dynamic padding to each batch's longest example;
- `dense_sorted`: the same stock model on batches formed after sorting the examples by length (what an
  informed user does to cut padding);
- `engine_off`: the tokenskim engine with skimming, pruning and exits off (`skim_enabled=False`);
- `skim`: the checkpoint as trained (one such variant per value of `--config-override`, if given).

`dense`, `engine_off` and `skim` see exactly the same batches; `dense_sorted` the same examples grouped
differently. After an untimed pass per variant (which also produces the task metric, kept-token counts
and the analytic FLOPs, and warms every batch shape up) the variants are timed interleaved batch by batch
in a rotating order, `--repeats` times; medians over repeats are reported, and speedups are medians of
per-repeat ratios (paired, so drift in machine load cancels). Speed is never checked by unit tests.

Extractive QA checkpoints (`--task squad` / `squad_v2`) are benchmarked on the windows of the questions' contexts,
their metric SQuAD's EM/F1 over the text answers post-processed from each variant's logits (`qa`).

Honest accounting (see DESIGN.md "Honest measurement"): token counts and FLOPs include real tokens only;
padding never counts as work saved; `flops_ratio` is dense MACs / model MACs on the same examples,
from `tokenskim.modeling.flops`.

The package, one job per module: `inputs` (examples, tokens, batches), `qa` (QA windows and answers), `variants`
(the models), `passes` (the untimed pass and its accounting), `timing`, `memory`, `profiling`, `environment`,
`runner` (the benchmark and its targets), `report` (bench.json, bench.md, plots). This file is the command line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os

import torch

from .. import data as task_data
from .. import squad
from ..errors import UsageError
from .inputs import BenchData, load_bench_data, make_batches, tokenize
from .qa import load_qa_bench_data
from .report import write_outputs
from .runner import benchmark
from .variants import VARIANTS


def _int_list(text):
    return [int(x) for x in text.split(",") if x.strip()]


def parse_overrides(items) -> list:
    """`["key=v1,v2", "other=w"]` -> one dict per combination, values parsed as JSON where possible."""
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
    parser.add_argument("--task", default=None,
                        help="a known task (sst2, imdb, ..., squad, squad_v2 for QA checkpoints; see trainers/data.py)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the layout of ../shared/data (default: $TOKENSKIM_DATA_DIR, else ../shared/data)")
    parser.add_argument("--split", default="validation", choices=["validation", "train"])
    parser.add_argument("--validation-file", default=None,
                        help="your own data (.csv/.tsv/.json/.jsonl; with --task squad/squad_v2 a SQuAD-format file)")
    parser.add_argument("--text-columns", type=lambda s: tuple(c for c in s.split(",") if c), default=None,
                        metavar="COL[,COL2]", help="text column(s) of your own data")
    parser.add_argument("--label-column", default=None)
    parser.add_argument("--batch-sizes", type=_int_list, default=[1, 8, 32], help="comma-separated, default 1,8,32")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="truncate inputs, QA: the window length (default: the length the model was trained with)")
    parser.add_argument("--max-examples", type=int, default=None,
                        help="seeded random subset of the split; QA: this many windows at most, in whole questions "
                             "taken in a seeded random order (a question is scored only with all its windows)")
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
    squad.add_arguments(parser)


def synthetic_folder(args, data: BenchData, device) -> str:
    """`--synthetic`: a random checkpoint fitted to `--target-flops` on these inputs, saved under the output folder."""
    from transformers import AutoTokenizer

    from ..demo import minilm_path
    from ..synthetic import save_synthetic

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or minilm_path())
    features = tokenize(tokenizer, data, args.max_length or 128)
    batches = make_batches(features, max(args.batch_sizes), tokenizer.pad_token_id)
    folder = os.path.join(args.output_dir, f"synthetic-{os.path.basename(args.synthetic)}")
    labels = 1 if data.regression else max(2, len(set(data.labels)))
    save_synthetic(args.synthetic, tokenizer, folder, batches, len(features), args.target_flops, labels)
    print(f"synthetic {args.synthetic} model skimming to FLOPs ratio >= {args.target_flops}: {folder}")
    return folder


def check_models_fit_task(model_dirs, spec):
    """Each checkpoint has the head and outputs of a known task (`evaluate.check_model_fits_task`'s errors)."""
    from transformers import AutoConfig

    from ..evaluate import check_model_fits_task

    for model_dir in model_dirs:
        check_model_fits_task(AutoConfig.from_pretrained(model_dir, trust_remote_code=True), spec)


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
    spec = task_data.get_task(args.task) if args.task else None
    if spec is not None and args.model:
        check_models_fit_task(args.model, spec)
    if args.article_split is not None and not (spec is not None and spec.is_qa):
        raise UsageError("--article-split splits SQuAD-style data by article: give --task squad or squad_v2")
    if spec is not None and spec.is_qa:
        if args.synthetic or args.equal_lengths:
            raise UsageError("--synthetic and --equal-lengths are for classification: QA windows keep their offsets whole")
        data = load_qa_bench_data(spec.name, args, args.data_dir, args.split, args.max_examples, args.seed,
                                  args.validation_file)
    else:
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
