"""The untimed pass of a benchmark variant: predictions, token counts and logits in data order, and the cost
accounting made from them (kept-token ratio, FLOPs ratio from `tokenskim.modeling.flops`; real tokens only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokenskim.modeling import flops

from .inputs import Batch


@dataclass
class PassResult:
    """Per-example results of one untimed pass, in data order."""

    predictions: list | None  # None for QA: its answers come from the windows' post-processing (`qa.py`)
    lengths: torch.Tensor  # [N] real tokens
    kept_tokens: torch.Tensor  # [N, layers]
    ffn_tokens: torch.Tensor  # [N, layers]
    exit_layer: torch.Tensor  # [N]
    logits: torch.Tensor  # [N, labels] float32; QA: [N, tokens, 2] (start, end), zero past a window's real tokens


def output_logits(out) -> torch.Tensor:
    """A model output's task logits: `logits` `[batch, labels]`, or for extractive QA the start and end logits
    stacked, `[batch, seq, 2]`."""
    if getattr(out, "start_logits", None) is not None:
        return torch.stack((out.start_logits, out.end_logits), dim=-1)
    return out.logits


def run_pass(model, batches: Sequence[Batch], num_examples: int, regression: bool = False) -> PassResult:
    """Runs every batch once (no timing) and gathers outputs back into data order.

    For the stock model every real token enters every layer, so its counts are the lengths. Per-token (QA)
    logits are zeroed past each example's real tokens, so they do not depend on how the examples were batched.
    """
    layers = model.config.num_hidden_layers
    lengths = torch.zeros(num_examples, dtype=torch.long)
    kept = torch.zeros(num_examples, layers, dtype=torch.long)
    ffn = torch.zeros_like(kept)
    exit_layer = torch.full((num_examples,), layers, dtype=torch.long)
    logits_all = None
    width = max(int(b.inputs["input_ids"].shape[1]) for b in batches)
    with torch.inference_mode():
        for b in batches:
            out = model(**b.inputs)
            idx = torch.tensor(b.indices)
            lens = torch.tensor(b.lengths)
            lengths[idx] = lens
            logits = output_logits(out).float().cpu()
            if logits.dim() == 3:
                padding = torch.arange(logits.shape[1]) >= lens[:, None]
                logits = F.pad(logits.masked_fill(padding[..., None], 0), (0, 0, 0, width - logits.shape[1]))
            if logits_all is None:
                logits_all = torch.zeros(num_examples, *logits.shape[1:])
            logits_all[idx] = logits
            if getattr(out, "kept_tokens", None) is not None:
                kept[idx] = out.kept_tokens.cpu()
                ffn[idx] = out.ffn_tokens.cpu()
                if getattr(out, "exit_layer", None) is not None:
                    exit_layer[idx] = out.exit_layer.cpu()
            else:
                kept[idx] = lens[:, None].expand(-1, layers)
                ffn[idx] = kept[idx]
    if logits_all.dim() == 3:
        preds = None
    else:
        preds = logits_all.squeeze(-1).tolist() if regression else logits_all.argmax(-1).tolist()
    return PassResult(preds, lengths, kept, ffn, exit_layer, logits_all)


def accounting(model, result: PassResult) -> dict:
    """Kept-token ratio, analytic FLOPs ratio and per-layer keep rates from a pass (real tokens only)."""
    dense = flops.dense_flops(result.lengths, model.config)
    ours = flops.model_macs(model, result.kept_tokens, result.ffn_tokens, result.exit_layer,
                           lengths=result.lengths)
    real = result.lengths.double().sum()
    return {
        "kept_token_ratio": flops.kept_token_ratio(result.kept_tokens, result.lengths),
        "flops_ratio": flops.flops_ratio(dense, ours),
        "dense_gmacs": float(dense.sum()) / 1e9,
        "model_gmacs": float(ours.sum()) / 1e9,
        "kept_per_layer": (result.kept_tokens.double().sum(0) / real).tolist(),
        "ffn_per_layer": (result.ffn_tokens.double().sum(0) / real).tolist(),
        "mean_exit_layer": float(result.exit_layer.double().mean()),
    }

