"""Analytic cost of an encoder run, in multiply-accumulates (MACs), from the token counts a model reports.

The one place where tokenskim turns counts into cost: training metrics, evaluate, predict, bench, explain and the
results scripts all call `model_macs` and `dense_flops`.

Per layer with hidden size d, feed-forward size f, n tokens in attention and n' in the feed-forward block:
attention 2*d*n^2 + 4*d^2*n, feed-forward 2*d*f*n' (= 8*d^2*n' for f = 4d). Only real tokens count:
padding is never work saved. On top of the layers, `model_macs` charges what a model computes to decide: its
token selector's own work (`TokenSelector.macs`) and the exit heads it evaluated. Embeddings and the final task
head are left out (the same for every variant).
"""

import torch


def layer_macs(attention_tokens, ffn_tokens, hidden: int, intermediate: int):
    """MACs of one layer; token counts may be ints or tensors of any shape."""
    n, m = attention_tokens, ffn_tokens
    return 2 * hidden * n * n + 4 * hidden * hidden * n + 2 * hidden * intermediate * m


def encoder_flops(kept_tokens, ffn_tokens, config) -> torch.Tensor:
    """MACs per example `[batch]` of the encoder layers alone, from per-layer counts `[batch, layers]` (see
    `SkimModelOutput`)."""
    kept, ffn = kept_tokens.double(), ffn_tokens.double()
    return layer_macs(kept, ffn, config.hidden_size, config.intermediate_size).sum(-1)


def exit_head_macs(exit_layer: torch.Tensor, config) -> torch.Tensor:
    """MACs of the exit heads evaluated for each sequence `[batch]`: one head after each layer it ran,
    but the last layer (the final classifier). Small next to the encoder: d*d + d*N per head and sequence."""
    d = config.hidden_size
    heads = exit_layer.clamp(max=config.num_hidden_layers - 1).double()
    return heads * (d * d + d * config.num_labels)


def model_macs(model, kept_tokens, ffn_tokens, exit_layer=None, *, lengths) -> torch.Tensor:
    """MACs per example `[batch]` of everything `model`'s encoder computed: its layers on the tokens they ran, its
    token selector's own work, and the exit heads it evaluated (when `exit_layer` `[batch]` is given). A stock
    `transformers` model, or a tokenskim model with `skim_enabled=False`, costs its layers alone.

    kept_tokens, ffn_tokens: `[batch, layers]` from the model's output; lengths: `[batch]` real tokens.
    """
    config = model.config
    macs = encoder_flops(kept_tokens, ffn_tokens, config)
    base = getattr(model, "skim_model", None)
    if base is None or not base.skim_enabled:
        return macs
    macs = macs + base.selector.macs(kept_tokens, lengths.to(kept_tokens.device)).to(macs)
    if exit_layer is not None and getattr(model, "exit_heads", None) is not None and config.exit_enabled:
        macs = macs + exit_head_macs(exit_layer, config).to(macs)
    return macs


def dense_flops(lengths, config) -> torch.Tensor:
    """MACs per example `[batch]` of the dense encoder on `lengths` `[batch]` real tokens."""
    n = lengths.double()
    return layer_macs(n, n, config.hidden_size, config.intermediate_size) * config.num_hidden_layers


def flops_ratio(dense_macs, macs) -> float:
    """Dense cost / model cost over a whole set (2.0 means half the work)."""
    return float(dense_macs.sum() / macs.sum())


def kept_token_ratio(kept_tokens, lengths) -> float:
    """Fraction of (real token, layer) pairs that were processed: sum kept / (sum lengths * layers)."""
    return float(kept_tokens.double().sum() / (lengths.double().sum() * kept_tokens.shape[-1]))
