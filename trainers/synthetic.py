"""Random-weight checkpoints of a named size that skim to a chosen FLOPs ratio, so anyone can read how much of
a FLOPs saving their hardware turns into time (`tokenskim bench --synthetic bert-base --target-flops 2`),
without a trained model.

The checkpoint is a Transkimmer model with random weights whose predictors give every token a keep score
of unit spread (so each layer keeps a steady share of the tokens still in: a geometric keep schedule, as
trained models tend to have); its `keep_threshold` is then searched on the benchmark's own batches
(`calibrate.search`) until the analytic FLOPs ratio reaches the target. The accuracy of such a model means
nothing; its speed is what the benchmark reads.
"""

import json
import math
from pathlib import Path

import torch
from transformers import BertConfig

SIZES = {  # hidden, layers, heads, feed-forward
    "minilm": (384, 6, 12, 1536),
    "bert-base": (768, 12, 12, 3072),
    "bert-large": (1024, 24, 16, 4096),
}


def synthetic_config(size: str, vocab_size: int, num_labels: int = 2) -> BertConfig:
    """A BERT config of a named size (`SIZES`) or from a config.json path."""
    if size in SIZES:
        hidden, layers, heads, ffn = SIZES[size]
        return BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                          num_attention_heads=heads, intermediate_size=ffn, num_labels=num_labels)
    path = Path(size)
    if not path.is_file():
        from .errors import UsageError

        raise UsageError(f"--synthetic {size!r}: give one of {', '.join(SIZES)} or a config.json file")
    values = json.loads(path.read_text())
    values.update(vocab_size=vocab_size, num_labels=num_labels)
    return BertConfig(**{k: v for k, v in values.items() if k not in ("auto_map", "model_type", "architectures")})


def synthetic_model(config: BertConfig, seed: int = 0):
    """A random Transkimmer model whose predictors score tokens `N(0, ~1)` (no keep-biased init)."""
    from tokenskim.modeling import TranskimmerBertConfig, TranskimmerBertForSequenceClassification

    torch.manual_seed(seed)
    fields = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "transformers_version")}
    model = TranskimmerBertForSequenceClassification(TranskimmerBertConfig(**fields, skim_bias_init=0.0))
    with torch.no_grad():
        for predictor in model.bert.selector.predictors:
            last = predictor[-1]  # Linear(hidden, 2) on GELU(LayerNorm(.)) features
            last.weight.normal_(0.0, 1.0 / math.sqrt(config.hidden_size))
            last.bias.zero_()
    return model.eval()


def fit_keep_threshold(model, batches, num_examples: int, target_flops: float) -> float:
    """Sets (and returns) the model's `keep_threshold` so that its FLOPs ratio on `batches` reaches `target_flops`."""
    from .bench.passes import accounting, run_pass
    from .calibrate import search

    def evaluate(value):
        model.config.keep_threshold = value
        return accounting(model, run_pass(model, batches, num_examples))

    chosen, points = search(evaluate, "keep_threshold", target_flops)
    if chosen is None:
        best = max(r["flops_ratio"] for _, r in points)
        from .errors import UsageError

        raise UsageError(f"--target-flops {target_flops}: these inputs reach at most {best:.2f}x "
                         "(min_kept_tokens and CLS always stay); ask for less")
    model.config.keep_threshold = chosen
    return chosen


def save_synthetic(size: str, tokenizer, folder, batches, num_examples: int, target_flops: float,
                   num_labels: int = 2) -> Path:
    """Builds, fits and saves a synthetic checkpoint (with `tokenizer`) to `folder`; returns the folder."""
    model = synthetic_model(synthetic_config(size, len(tokenizer), num_labels))
    fit_keep_threshold(model, batches, num_examples, target_flops)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
