"""Zero-shot pilot for LTP's final threshold: the dense fine-tune loaded as LTP with hard thresholds (no pruning
training) on the task's evaluation split, one line per theta_L; pyramid_runs.sh (this folder) picks the largest theta_L
within 2 points of the dense model.

    python results/pyramid/ltp_threshold_pilot.py sst2 DENSE_DIR 0,0.01,0.02,0.04,0.06,0.08
"""
import sys, torch
from tokenskim.modeling import LTPBertForSequenceClassification, flops
from tokenskim.trainers.bench.inputs import load_bench_data, make_batches, tokenize
from tokenskim.trainers.bench.passes import run_pass
torch.set_num_threads(2)
task, path = sys.argv[1], sys.argv[2]
thetas = [float(t) for t in sys.argv[3].split(",")]
data = load_bench_data(task)
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(path)
feats = tokenize(tok, data, 128)
batches = make_batches(feats, 64, tok.pad_token_id)
m = LTPBertForSequenceClassification.from_pretrained(path).eval()
for th in thetas:
    m.config.final_threshold = th
    m.config.skim_enabled = th > 0
    r = run_pass(m, batches, len(feats))
    acc = data.metric_fn(r.predictions, data.labels)[data.metric_name]
    d = flops.dense_flops(r.lengths, m.config); o = flops.model_macs(m, r.kept_tokens, r.ffn_tokens, lengths=r.lengths)
    print(f"theta {th}: {data.metric_name} {acc:.4f} flops_ratio {flops.flops_ratio(d, o):.2f} kept {flops.kept_token_ratio(r.kept_tokens, r.lengths):.3f} mean_len {r.lengths.float().mean():.1f}", flush=True)
