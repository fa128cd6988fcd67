"""Extractive QA with Block-Skim on a local SQuAD v1.1 file: fine-tune, then evaluate EM/F1, kept-token
ratio and FLOPs ratio at several thresholds tau.

Only the SQuAD v1.1 *dev* file is available offline, so its articles are split with a fixed seed into a
training part and an evaluation part (`split_articles`): no article (paragraph, question) is shared between
the two. Numbers are therefore not comparable to the official dev-set numbers of the paper.

Usage (see results/blockskim_squad/README.md for the commands that produced the reported numbers):

    python -m tokenskim.trainers.qa --model PATH --data /work/shared/data/squad/dev-v1.1.json \\
        --output-dir /tmp/blockskim --epochs 2 --taus 0.3 0.5 0.7

Metrics are the official SQuAD v1.1 definitions (answer normalisation, exact match, token F1, max over
the reference answers), implemented here because the project's `metrics.py` covers classification only.
"""

import argparse
import collections
import json
import math
import random
import re
import string
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, get_linear_schedule_with_warmup

from tokenskim.modeling import BlockSkimBertForQuestionAnswering
from tokenskim.modeling.flops import dense_flops, encoder_flops, flops_ratio, kept_token_ratio

# ----------------------------------------------------------------------------------------------------
# Data


def load_squad(path):
    """SQuAD json -> list of articles (each a dict with "paragraphs")."""
    return json.loads(Path(path).read_text())["data"]


def split_articles(articles, eval_fraction=0.2, seed=0):
    """Shuffles the articles with `seed` and returns (train, eval) lists of articles."""
    order = list(range(len(articles)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(articles) * eval_fraction))
    return [articles[i] for i in order[n_eval:]], [articles[i] for i in order[:n_eval]]


def flatten(articles):
    """Articles -> examples `{id, question, context, answers: [{text, answer_start}]}`."""
    return [
        {"id": qa["id"], "question": qa["question"].strip(), "context": p["context"], "answers": qa["answers"]}
        for a in articles for p in a["paragraphs"] for qa in p["qas"]
    ]


def tokenize(examples, tokenizer, max_length, stride):
    """Question/context pairs -> windowed features (the standard HF recipe, context truncated only)."""
    enc = tokenizer(
        [e["question"] for e in examples], [e["context"] for e in examples],
        truncation="only_second", max_length=max_length, stride=stride,
        return_overflowing_tokens=True, return_offsets_mapping=True, padding=False,
    )
    features = []
    for i in range(len(enc["input_ids"])):
        ex = enc["overflow_to_sample_mapping"][i]
        seq_ids = enc.sequence_ids(i)
        offsets = [o if s == 1 else None for o, s in zip(enc["offset_mapping"][i], seq_ids)]
        features.append({
            "example": ex, "input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
            "offsets": offsets,
        })
    return features


def add_answer_positions(features, examples):
    """Token start/end of the first answer in each feature's window; (0, 0) (CLS) when not inside."""
    for f in features:
        answer = examples[f["example"]]["answers"][0]
        a0 = answer["answer_start"]
        a1 = a0 + len(answer["text"])
        ctx = [i for i, o in enumerate(f["offsets"]) if o is not None]
        f["start"] = f["end"] = 0
        if ctx and f["offsets"][ctx[0]][0] <= a0 and f["offsets"][ctx[-1]][1] >= a1:
            f["start"] = next(i for i in ctx if f["offsets"][i][1] > a0)
            f["end"] = next(i for i in reversed(ctx) if f["offsets"][i][0] < a1)
    return features


def collate(features, pad_id=0, with_answers=False):
    """Right-pads a list of features into tensors."""
    n = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), n), pad_id, dtype=torch.long)
    types = torch.zeros(len(features), n, dtype=torch.long)
    mask = torch.zeros(len(features), n, dtype=torch.long)
    for i, f in enumerate(features):
        k = len(f["input_ids"])
        ids[i, :k], types[i, :k], mask[i, :k] = torch.tensor(f["input_ids"]), torch.tensor(f["token_type_ids"]), 1
    batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    if with_answers:
        batch["start_positions"] = torch.tensor([f["start"] for f in features])
        batch["end_positions"] = torch.tensor([f["end"] for f in features])
    return batch


# ----------------------------------------------------------------------------------------------------
# Official SQuAD v1.1 metric


def normalize_answer(s):
    """Lower case, remove punctuation, articles (a, an, the) and extra whitespace (official v1.1 script)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(prediction, ground_truth):
    pred, truth = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    common = collections.Counter(pred) & collections.Counter(truth)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(truth)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction, ground_truth):
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def squad_v1_metrics(predictions: dict, examples) -> dict:
    """`{"exact_match", "f1"}` in percent, max over each question's reference answers; a question without
    a prediction scores 0 (as in the official script)."""
    em = f1 = 0.0
    for e in examples:
        truths = [a["text"] for a in e["answers"]]
        pred = predictions.get(e["id"])
        if pred is None:
            continue
        em += max(exact_match_score(pred, t) for t in truths)
        f1 += max(f1_score(pred, t) for t in truths)
    return {"exact_match": 100.0 * em / len(examples), "f1": 100.0 * f1 / len(examples)}


SKIPPED = -1e30  # skipped positions carry the dtype's lowest logit


def best_spans(examples, features, start_logits, end_logits, n_best=20, max_answer_length=30):
    """Each example's best context span over its features (start + end logit), as text."""
    best = {}
    for f, s_log, e_log in zip(features, start_logits, end_logits):
        starts = np.argsort(s_log)[::-1][:n_best]
        ends = np.argsort(e_log)[::-1][:n_best]
        for s in starts:
            for e in ends:
                if f["offsets"][s] is None or f["offsets"][e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                if s_log[s] < SKIPPED or e_log[e] < SKIPPED:  # a position Block-Skim skipped
                    continue
                score = s_log[s] + e_log[e]
                ex = examples[f["example"]]
                if ex["id"] not in best or score > best[ex["id"]][0]:
                    best[ex["id"]] = (score, ex["context"][f["offsets"][s][0] : f["offsets"][e][1]])
    return {k: v[1] for k, v in best.items()}


# ----------------------------------------------------------------------------------------------------
# Training and evaluation


def train(model, features, epochs, batch_size, lr, warmup=0.1, seed=0, log_every=50):
    model.train()
    rng = random.Random(seed)
    steps = epochs * math.ceil(len(features) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, int(warmup * steps), steps)
    step, t0, log = 0, time.time(), collections.defaultdict(float)
    for _ in range(epochs):
        order = list(range(len(features)))
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            batch = collate([features[j] for j in order[i : i + batch_size]], with_answers=True)
            out = model(**batch)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(), sched.step(), opt.zero_grad()
            step += 1
            log["n"] += 1
            log["loss"] += out.loss.item()
            log["block_loss"] += out.skim_loss.item() if out.skim_loss is not None else 0.0
            if step % log_every == 0 or step == steps:
                print(f"step {step}/{steps} loss {log['loss'] / log['n']:.4f} block_loss "
                      f"{log['block_loss'] / log['n']:.4f} {time.time() - t0:.0f}s", flush=True)
                log.clear()
    return model


@torch.no_grad()
def evaluate(model, examples, features, batch_size=32):
    """EM/F1, kept-token ratio, FLOPs ratio (dense / Block-Skim, CNN included) and wall time, at the
    model's current `config.skim_threshold` and `config.skim_enabled`."""
    model.eval()
    starts, ends, lengths, kept, ffn = [], [], [], [], []
    t0 = time.perf_counter()
    for i in range(0, len(features), batch_size):
        batch = collate(features[i : i + batch_size])
        out = model(**batch)
        real = batch["attention_mask"].bool()
        for b in range(len(real)):
            n = int(real[b].sum())
            starts.append(out.start_logits[b, :n].float().numpy())
            ends.append(out.end_logits[b, :n].float().numpy())
        lengths.append(real.sum(1))
        kept.append(out.kept_tokens)
        ffn.append(out.ffn_tokens)
    seconds = time.perf_counter() - t0
    lengths, kept, ffn = torch.cat(lengths), torch.cat(kept), torch.cat(ffn)
    config = model.config
    cnn = model.bert.selector.predictor_macs(kept)
    macs = encoder_flops(kept, ffn, config) + cnn
    metrics = squad_v1_metrics(best_spans(examples, features, starts, ends), examples)
    return {
        **metrics,
        "kept_token_ratio": kept_token_ratio(kept, lengths),
        "ffn_token_ratio": kept_token_ratio(ffn, lengths),
        "flops_ratio": flops_ratio(dense_flops(lengths, config), macs),
        "cnn_share_of_macs": float(cnn.sum() / macs.sum()),
        "seconds": seconds,
        "features": len(features),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a BERT checkpoint (or a saved Block-Skim model with --eval-only)")
    ap.add_argument("--data", default="/work/shared/data/squad/dev-v1.1.json")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--eval-fraction", type=float, default=0.2)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--max-train-examples", type=int, default=None)
    ap.add_argument("--max-eval-examples", type=int, default=None)
    ap.add_argument("--max-length", type=int, default=384)
    ap.add_argument("--stride", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=8e-5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--block-size", type=int, default=32)
    ap.add_argument("--skim-layers", type=int, nargs="*", default=None)
    ap.add_argument("--balance-factor", type=float, default=20.0)
    ap.add_argument("--skim-coefficient", type=float, default=1.0, help="alpha; 0 trains without the block loss")
    ap.add_argument("--taus", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--skip-dense-row", action="store_true", help="do not evaluate with skimming off")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    train_articles, eval_articles = split_articles(load_squad(args.data), args.eval_fraction, args.split_seed)
    train_ex, eval_ex = flatten(train_articles), flatten(eval_articles)
    if args.max_train_examples:
        train_ex = random.Random(args.seed).sample(train_ex, min(args.max_train_examples, len(train_ex)))
    if args.max_eval_examples:
        eval_ex = eval_ex[: args.max_eval_examples]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    print(f"articles train {len(train_articles)} eval {len(eval_articles)}; questions train {len(train_ex)} "
          f"eval {len(eval_ex)}", flush=True)

    fields = {"block_size": args.block_size, "skim_layers": args.skim_layers, "balance_factor": args.balance_factor,
              "skim_coefficient": args.skim_coefficient}
    if args.eval_only:  # --skim-layers may pick a subset of the trained predictors (the others are unused)
        overrides = {} if args.skim_layers is None else {"skim_layers": args.skim_layers}
        model = BlockSkimBertForQuestionAnswering.from_pretrained(args.model, **overrides)
    else:
        model = BlockSkimBertForQuestionAnswering.from_pretrained(args.model, **fields)
        model.config.skim_enabled = args.skim_coefficient > 0  # alpha 0: a plain QA fine-tune, no CNN loss
        features = add_answer_positions(tokenize(train_ex, tokenizer, args.max_length, args.stride), train_ex)
        print(f"training features {len(features)}", flush=True)
        t0 = time.time()
        train(model, features, args.epochs, args.batch_size, args.lr, seed=args.seed)
        print(f"training took {time.time() - t0:.0f}s", flush=True)
        model.config.skim_enabled = True
        model.save_pretrained(out_dir / "model")
        tokenizer.save_pretrained(out_dir / "model")

    eval_features = tokenize(eval_ex, tokenizer, args.max_length, args.stride)
    rows = []
    settings = [] if args.skip_dense_row else [("off", None)]
    if args.skim_coefficient > 0 or args.eval_only:  # alpha 0 trains no CNN: only the dense row means something
        settings += [("on", tau) for tau in args.taus]
    for mode, tau in settings:
        model.config.skim_enabled = mode == "on"
        if tau is not None:
            model.config.skim_threshold = tau
        layers = sorted(int(l) for l in model.bert.selector.predictors)
        row = {"skim": mode, "tau": tau, "skim_layers": layers, **evaluate(model, eval_ex, eval_features)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    (out_dir / "results.json").write_text(json.dumps({"args": vars(args), "results": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
