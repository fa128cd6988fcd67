"""The token selector contract: what a method family implements to decide which tokens stay, and the keep-ratio
losses the families share. The engine (`engine.py`) calls a selector's hooks; a family adds a `TokenSelector`
subclass and its loss, nothing else.
"""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class SelectorOutput:
    """A selector hook's answer when it has more to report than the keep score: `record` (anything the family's
    loss or head needs, e.g. Block-Skim's block logits, STTABT's ApproxNet outputs) travels to the model's output
    as one entry of `records`, in call order. Selectors keep no state between or within forward passes."""

    score: torch.Tensor | None
    record: object = None


def take_score(answer, records: list):
    """A hook's keep score (or None); its record, if it reported one, is appended to `records`."""
    if isinstance(answer, SelectorOutput):
        if answer.record is not None:
            records.append(answer.record)
        return answer.score
    return answer


class TokenSelector(nn.Module):
    """Decides which tokens stay. The default keeps every token.

    `before_layer` and `after_attention` return a *keep score* per token, a logit: the token stays where
    `score >= 0` (a bool decision is also accepted and taken as it is), or a `SelectorOutput` holding the score
    and a record for the model's output. In training the engine turns the score into a differentiable gate in
    [0, 1] with `gate` (straight-through or soft). The engine always keeps each row's protected tokens (CLS, or a
    longer prefix the model names, e.g. a QA question) and each sequence's `min_kept_tokens` best-scored tokens,
    never scores padding, and makes decisions cumulative: a dropped token never comes back. `loss_weight` scales
    `loss()` in the model's total loss.
    """

    loss_weight = 0.0
    min_kept_tokens = 0
    default_learning_rate = None  # the selector's own learning rate when training names none (None: the model's)

    def gate(self, layer_idx: int, score: torch.Tensor) -> torch.Tensor:
        """Training: the gate in [0, 1] for a keep score `[...]`. The default is the hard decision, no gradient."""
        return (score >= 0).to(score.dtype)

    def plan(self, hidden: torch.Tensor, real: torch.Tensor, hard: bool):
        """Optional: every layer's decision at once, from the whole batch before layer 0, or None.

        hidden: `[batch, seq, hidden]` embeddings output; real: `[batch, seq]` bool. Returns `[layers, batch, seq]`
        in the padded layout, bool keep masks (`hard`) or final gates in [0, 1] (training), possibly inside a
        `SelectorOutput`; the engine then uses `plan[l]` in place of `before_layer(l, ...)`, as it is (no `gate`, no
        `min_kept_tokens` floor; protected tokens still stay).
        """
        return None

    def before_layer(self, layer_idx: int, hidden: torch.Tensor, hard: bool):
        """Keep score of the tokens about to enter layer `layer_idx`. hidden: `[..., hidden]` -> `[...]`, or None."""
        return None

    def needs_received_attention(self, layer_idx: int) -> bool:
        """Whether `after_attention` of this layer needs the attention each token receives."""
        return False

    def attention_block_size(self, layer_idx: int) -> int:
        """Block size b > 0 if `after_attention` of this layer needs the diagonal b x b blocks of each
        sequence's attention probabilities (`AttentionBlocks`, Block-Skim's signal), else 0."""
        return 0

    def after_attention(self, layer_idx: int, received, hard: bool, tokens=None):
        """Keep score after the attention of layer `layer_idx`, or None, from what the selector asked for: the
        attention each token receives `[...]` float32, with `tokens` `[...]` float32, the (soft-)kept tokens of each
        token's sequence that the attention ran over, or the `AttentionBlocks` (their `token_block` has the score's
        shape; tokens None)."""
        return None

    def loss(self, masks: list, real: torch.Tensor):
        """Auxiliary loss from the per-layer keep masks (training mode), or None."""
        return None

    def macs(self, kept_tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The selector's own work per example `[batch]` (MACs, float64) from the tokens that entered each layer's
        attention `kept_tokens` `[batch, layers]` and each example's real tokens `lengths` `[batch]`;
        `flops.model_macs` adds it to the encoder's."""
        return torch.zeros(kept_tokens.shape[0], dtype=torch.float64, device=kept_tokens.device)


KEEP_ALL = TokenSelector()  # what the engine runs with `skim_enabled=False`: no decision at all


def keep_ratio_loss(masks, real):
    """Mean over layers and examples of (kept real tokens / real tokens). Padding never counts.

    masks: list of `[B, S]` keep masks (one per layer); real: `[B, S]` bool.
    """
    realf = real.to(masks[0].dtype)
    per_layer = torch.stack([(m * realf).sum(1) for m in masks]) / realf.sum(1)  # [L, B]
    return per_layer.mean()


def budget_loss(masks, real, target: float, min_kept: int = 0):
    """Mean over examples of `|kept ratio - target|`: drives each sequence's share of (token, layer) pairs kept
    to `target` and holds it there. Its push is bounded (a constant slope), unlike the paper's loss it stops at
    the target, and it pulls back up when a sequence keeps too few tokens: a one-sided hinge let tokens the task
    barely uses drift away below the target (measured on the synthetic task of tests/test_budget.py: 0.21 kept
    at a target of 0.3).

    Per sequence, not pooled over the batch, and a sequence's target is never below what the `min_kept` floor
    keeps (`min(n, min_kept) / n` for n real tokens): pooled over a batch of short training rows, the floor
    alone used up most of the budget, so the only way to meet it was to drop every other token, and the
    model learnt to skim long inputs far below the target (SST-2 phrases in training, sentences at test: 0.42
    kept in training, 0.31 on the dev set, for a target of 0.4).

    The ratio counts the tokens inference keeps (mask > 0.5), with the soft masks' gradient (straight-through), so
    the budget is a budget on what inference does: LTP's soft masks count a token at 0.3 as 0.3 of a token where
    inference drops it. (On SST-2 it changed little: 0.662 kept on dev against 0.670 counting soft masks, both above
    a budget of 0.5 that the short training phrases meet.) Masks that are already 0/1 in value (Transkimmer's
    straight-through decisions) count the same either way.

    masks: list of `[B, S]` keep masks (one per layer); real: `[B, S]` bool.
    """
    realf = real.to(masks[0].dtype)
    lengths = realf.sum(1)
    kept = [(m > 0.5).to(m.dtype) + m - m.detach() for m in masks]
    ratio = torch.stack([(m * realf).sum(1) for m in kept]).mean(0) / lengths  # [B]
    floor = lengths.clamp(max=min_kept) / lengths
    return (ratio - torch.clamp(floor, min=target)).abs().mean()
