"""Analytic cost of an encoder run, in multiply-accumulates (MACs), from the token counts a model reports.

Per layer with hidden size d, feed-forward size f, n tokens in attention and n' in the feed-forward block:
attention 2*d*n^2 + 4*d^2*n, feed-forward 2*d*f*n' (= 8*d^2*n' for f = 4d). Only real tokens count:
padding is never work saved. Embeddings and task heads are left out (the same for every variant).
"""

import torch


def layer_macs(attention_tokens, ffn_tokens, hidden: int, intermediate: int):
    """MACs of one layer; token counts may be ints or tensors of any shape."""
    n, m = attention_tokens, ffn_tokens
    return 2 * hidden * n * n + 4 * hidden * hidden * n + 2 * hidden * intermediate * m


def encoder_flops(kept_tokens, ffn_tokens, config, selector_macs_per_token: int = 0) -> torch.Tensor:
    """MACs per example `[batch]` from per-layer counts `[batch, layers]` (see `SkimModelOutput`).

    selector_macs_per_token: the token selector's own cost per token and layer (e.g. Transkimmer's
    predictor), charged on the tokens it scores; or, for a selector whose cost is not per kept token (STTABT's
    ApproxNet runs once over every real token), a callable `kept_tokens [batch, layers] -> MACs [batch]`.
    """
    kept, ffn = kept_tokens.double(), ffn_tokens.double()
    macs = layer_macs(kept, ffn, config.hidden_size, config.intermediate_size).sum(-1)
    if callable(selector_macs_per_token):
        return macs + selector_macs_per_token(kept_tokens).double()
    return macs + selector_macs_per_token * kept.sum(-1)


def dense_flops(lengths, config) -> torch.Tensor:
    """MACs per example `[batch]` of the dense encoder on `lengths` `[batch]` real tokens."""
    n = lengths.double()
    return layer_macs(n, n, config.hidden_size, config.intermediate_size) * config.num_hidden_layers


def flops_ratio(dense_macs, model_macs) -> float:
    """Dense cost / model cost over a whole set (2.0 means half the work)."""
    return float(dense_macs.sum() / model_macs.sum())


def kept_token_ratio(kept_tokens, lengths) -> float:
    """Fraction of (real token, layer) pairs that were processed: sum kept / (sum lengths * layers)."""
    return float(kept_tokens.double().sum() / (lengths.double().sum() * kept_tokens.shape[-1]))
