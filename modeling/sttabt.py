"""STTABT: Sparse Token Transformers with Attention Back-Tracking (Lee et al., ICLR 2023).

Every layer's keep set is decided up front, before the main encoder runs:

1. ApproxNet, the same encoder shrunk (hidden and FFN sizes divided by `approx_factor`, same depth and head
   count), runs over each whole sequence and gives its attention maps, averaged over heads.
2. Attention back-tracking starts from the token the task reads (CLS for classification) and walks from
   the last layer down: the importance of the tokens entering layer l is what the kept tokens of layer l + 1
   (the outputs of layer l) give them through layer l's attention rows, weighted by their own importance.
3. Concrete masking turns the importance s (normalised to (0, 1]) into a keep mask with a learnable
   per-layer keep probability p_l: `mask = sigmoid((logit p_l + logit s) / T)`, T = 0.1. Training uses this
   soft mask; inference thresholds it at 0.5 (`logit p_l + logit s > 0`), and the engine physically drops
   the tokens before each layer. Each lower layer keeps a superset of the layer above.

ApproxNet learns by distillation from the main model's dense pass (per-head attention KL, hidden-state MSE
through a projection, prediction KL); p_l learns from the task loss and a keep-ratio term, which also reach
ApproxNet through s while it is trainable (the paper trains threshold and importance jointly with the task).
The main model's gradients come from the task loss only. The training recipe is `tokenskim train --method
sttabt` (stages in tokenskim's trainers/recipes.py and trainers/stages.py): dense fine-tune, ApproxNet
distillation, masked training with ApproxNet frozen.

Choices and differences from the paper / reference code, on purpose:
- ApproxNet reads the main model's embeddings output through a down-projection (`d -> d / k`) instead of
  owning small embeddings: the main embeddings are computed anyway, so this costs one `d x d/k` matmul per
  token (counted in FLOPs); there is no second vocabulary table (BERT-base at k = 4 would add 5.9M
  parameters); RoBERTa's position-id rules come for free; and ApproxNet starts from pretrained token
  representations. The input is detached so distillation never changes the main model's embeddings.
- Layer 0 never prunes: the tokens entering the first layer are all real tokens, and back-tracking stops
  at layer 1 (the paper also back-tracks through the first layer and drops input tokens). ApproxNet has
  already paid for every token at that point; in exchange `kept_tokens[:, 0]` is each sequence's real
  length, which lets the FLOPs accounting charge ApproxNet's (quadratic) cost exactly through
  `STTABTSelector.macs` without any other input.
- Importance never decreases going down for tokens already kept (`s_l >= s_{l+1}` on kept tokens): a kept
  token's own state is needed below through the residual path. Without this, CLS would carry only its
  self-attention weight into lower layers.
- Keep sets are thresholded per sequence (no batch-wide top-k as in the reference code), so a sequence is
  pruned the same way alone or in any batch, and tokens are removed from the packed batch, not masked.
- ApproxNet's linear layers run on the real tokens only; its attention pads q/k/v once per layer for one
  batched softmax (a loop over sequences cost more in overhead than the padding does). FLOPs count real
  tokens only, as everywhere in tokenskim; the padding's extra work shows in wall-clock time.
- The keep-ratio term counts real tokens only (padding is never scored or counted) and is an L1 term
  (`skim_coefficient * mean keep ratio`), or `(ratio - target)^2` with `target_keep_ratio`.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import BertConfig, RobertaConfig

from .approxnet import ApproxNet, ApproxNetOutput, attention_kl, dense_teacher, eval_mode, hidden_mse, prediction_kl
from .engine import first_real
from .heads import SkimForSequenceClassification
from .models import (
    SkimModel,
    SkimModelOutput,
    SkimSequenceClassifierOutput,
    returns_tuple_unless_return_dict,
)
from .selector import SelectorOutput, TokenSelector
from .flops import layer_macs

EPS = 1e-6  # importance scores are clamped to [EPS, 1 - EPS] before the logit


@dataclass
class STTABTFields:
    r"""STTABT's configuration fields.

    skim_enabled: False runs the same engine with every token kept (ApproxNet is not run).
    approx_factor: ApproxNet's hidden and FFN sizes are the main model's divided by this (4 or 8 in the paper).
    concrete_temperature: T of the Concrete mask `sigmoid((logit p + logit s) / T)` used in training.
    keep_logit_init: initial logit p_l of every layer's keep probability; a token is kept at inference when
        its normalised importance s > 1 - p_l, so a high value starts by keeping almost everything.
    skim_coefficient: weight of the keep-ratio term.
    target_keep_ratio: None for an L1 keep-ratio term; a number r for `(keep ratio - r)^2`.
    attention_distill_weight, hidden_distill_weight, prediction_distill_weight: weights of ApproxNet's
        distillation terms (per-head attention KL, hidden-state MSE, prediction KL).
    """

    skim_enabled: bool = True
    approx_factor: int = 4
    concrete_temperature: float | int = 0.1
    keep_logit_init: float | int = 3.0
    skim_coefficient: float | int = 0.5
    target_keep_ratio: float | int | None = None
    attention_distill_weight: float | int = 1.0
    hidden_distill_weight: float | int = 1.0
    prediction_distill_weight: float | int = 1.0


@strict
class STTABTBertConfig(BertConfig, STTABTFields):
    r"""BERT configuration plus STTABT's fields (see `STTABTFields`)."""

    model_type = "sttabt-bert"


@strict
class STTABTRobertaConfig(RobertaConfig, STTABTFields):
    r"""RoBERTa configuration plus STTABT's fields (see `STTABTFields`)."""

    model_type = "sttabt-roberta"


# ----------------------------------------------------------------------------------------------------
# Attention back-tracking and Concrete masks


def normalise(raw, real):
    """Importance `[B, S]` >= 0 -> (0, 1], divided by each row's maximum over real tokens (0 on padding)."""
    raw = raw * real
    return raw / raw.amax(-1, keepdim=True).clamp_min(1e-30)


def concrete_mask(keep_logit, score, temperature: float, hard: bool):
    """`sigmoid((logit p + logit s) / T)`, or its 0.5 threshold (bool) when `hard`. score `[...]` in [0, 1]."""
    z = keep_logit + torch.logit(score.clamp(EPS, 1 - EPS))
    return z > 0 if hard else torch.sigmoid(z / temperature)


def back_track(attention, real, keep_logits, temperature: float, hard: bool):
    """Every layer's keep set, from the CLS output down through ApproxNet's attention.

    attention: `[L, B, S, S]` head-averaged attention of each layer (query rows, key columns, zero on padding).
    real: `[B, S]` bool. keep_logits: `[L]` logit p_l. hard: bool masks (inference) or soft Concrete masks.

    For l = L-1 down to 1: `raw_j = sum_i w_i A_l[i, j]` with `w = importance * mask` of the tokens entering
    layer l + 1 (after the last layer only CLS, importance 1); `s_l = max(raw / max(raw), w)`;
    `mask_l = concrete(p_l, s_l)` or-ed with `mask_{l+1}` (a superset of the layer above; soft: max).
    Layer 0 keeps every real token.

    Returns masks `[L, B, S]` (bool if hard, else float32 in [0, 1]) and importance `[L, B, S]` float32
    (row 0: the real-token mask).
    """
    num_layers = attention.shape[0]
    realf = real.float()
    cls = F.one_hot(first_real(real), real.shape[1]).float()
    importance, mask = cls, cls  # after the last layer, only CLS is needed
    masks, scores = [None] * num_layers, [None] * num_layers
    for l in range(num_layers - 1, 0, -1):
        w = importance * mask.float()
        s = torch.maximum(normalise(torch.einsum("bi,bij->bj", w, attention[l].float()), realf), w)
        keep = concrete_mask(keep_logits[l].float(), s, temperature, hard)
        mask = (keep & real) | mask.bool() if hard else torch.maximum(keep * realf, mask)
        masks[l], scores[l], importance = mask, s, s
    masks[0] = real if hard else realf
    scores[0] = realf
    return torch.stack(masks), torch.stack(scores)


def masks_to_gates(masks, hard: bool):
    """Per-layer gates for the engine, which multiplies them cumulatively: `gate_l = M_l / M_{l-1}`, so its
    running product is exactly `M_l` (nested masks: `M_l <= M_{l-1}`). Hard masks are their own gates."""
    if hard:
        return masks
    prev = torch.cat([torch.ones_like(masks[:1]), masks[:-1]])
    return masks / prev.clamp_min(1e-12)


# ----------------------------------------------------------------------------------------------------
# Keep-ratio term


def keep_ratio(masks, real):
    """Mean over layers and examples of (kept real tokens / real tokens): masks `[L, B, S]` or a list."""
    realf = real.to(masks[0].dtype)
    return torch.stack([(m * realf).sum(1) / realf.sum(1) for m in masks]).mean()


# ----------------------------------------------------------------------------------------------------
# Selector


@dataclass
class DistillationInputs:
    """What `plan` saw in training, for the distillation terms of the same forward pass (its record)."""

    hidden: torch.Tensor
    real: torch.Tensor
    approx: ApproxNetOutput


class STTABTSelector(TokenSelector):
    """ApproxNet + attention back-tracking + Concrete masks, planned once per batch (`plan`).

    Reads its settings from the live config (`model.config.skim_enabled = False` takes effect at once).
    Parameters: `keep_logits` `[layers]` (logit p_l; entry 0 unused, layer 0 never prunes) and `approx`.
    """

    loss_weight = 1.0  # `loss()` and the distillation terms carry their own weights

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.approx = ApproxNet(config)
        self.keep_logits = nn.Parameter(torch.full((config.num_hidden_layers,), float(config.keep_logit_init)))

    def init_skim_weights(self, init):
        init.constant_(self.keep_logits, float(self.config.keep_logit_init))

    @property
    def enabled(self) -> bool:
        return bool(self.config.skim_enabled)

    def plan(self, hidden, real, hard):
        """`[L, B, S]` gates: bool keep masks (inference) or Concrete gates (training); None when disabled. In
        training the gates come with a `DistillationInputs` record for the distillation terms."""
        if not self.enabled:
            return None
        approx = self.approx(hidden, real, keep_all=self.training)
        masks, _ = back_track(approx.attention, real, self.keep_logits, float(self.config.concrete_temperature), hard)
        gates = masks_to_gates(masks, hard)
        return SelectorOutput(gates, DistillationInputs(hidden, real, approx)) if self.training else gates

    def loss(self, masks, real):
        """The keep-ratio term over the layers that can prune (1..L-1), real tokens only, weighted."""
        if not self.enabled or len(masks) < 2:
            return None
        ratio = keep_ratio(masks[1:], real)
        target = self.config.target_keep_ratio
        term = ratio if target is None else (ratio - float(target)) ** 2
        return float(self.config.skim_coefficient) * term

    @property
    def distills(self) -> bool:
        """Whether the distillation terms are computed: some weight > 0 and ApproxNet is trainable."""
        c = self.config
        weights = (c.attention_distill_weight, c.hidden_distill_weight, c.prediction_distill_weight)
        return any(float(w) > 0 for w in weights) and any(p.requires_grad for p in self.approx.parameters())

    def distillation_loss(self, batch: DistillationInputs, teacher_probs, teacher_states):
        """Weighted attention KL + hidden-state MSE of ApproxNet against the dense main model."""
        c, approx = self.config, batch.approx
        loss = float(c.attention_distill_weight) * attention_kl(teacher_probs, approx.head_probs, batch.real)
        projected = self.approx.hidden_proj(approx.hidden_states)  # [L, total, d]
        return loss + float(c.hidden_distill_weight) * hidden_mse(teacher_states.flatten(1, 2)[:, approx.rows], projected)

    def macs(self, kept_tokens, lengths):
        """MACs per example `[batch]` of what `plan` computes at inference: down-projection, ApproxNet's layers,
        head averaging and back-tracking. ApproxNet runs once over every real token, whatever the main encoder
        keeps."""
        if not self.enabled:
            return super().macs(kept_tokens, lengths)
        n = lengths.double()
        small, num_layers = self.approx.layer[0], len(self.approx.layer)
        d_a, f_a = small.intermediate.dense.in_features, small.intermediate.dense.out_features
        heads = small.attention.self.num_attention_heads
        layers = num_layers * layer_macs(n, n, d_a, f_a)
        return self.approx.down.in_features * d_a * n + layers + (num_layers * heads + num_layers - 1) * n * n


# ----------------------------------------------------------------------------------------------------
# Models


@dataclass
class STTABTModelOutput(SkimModelOutput):
    """`SkimModelOutput` plus, in training: `teacher_cls_state` `[B, d]` (each row's CLS in the dense main model's
    last layer, no gradient) and `approx_logits` `[B, labels]` (ApproxNet's prediction), for the prediction KL."""

    teacher_cls_state: torch.Tensor = None
    approx_logits: torch.Tensor = None


class STTABTModelMixin:
    """Adds ApproxNet's attention and hidden-state distillation to the base model's training loss."""

    @returns_tuple_unless_return_dict
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, return_dict=None, **kwargs) -> STTABTModelOutput:
        """As `SkimModel.forward`; in training the output also carries what the prediction KL needs."""
        out = STTABTModelOutput(**super().forward(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs,
        ))
        batch = next((r for r in out.records or () if isinstance(r, DistillationInputs)), None)
        if batch is None or not self.selector.distills:
            return out
        teacher_probs, teacher_states = dense_teacher(self.encoder.layer, batch.hidden.detach(), batch.real)
        distill = self.selector.distillation_loss(batch, teacher_probs, teacher_states)
        out.skim_loss = distill if out.skim_loss is None else out.skim_loss + distill
        rows = torch.arange(len(batch.real), device=batch.real.device)
        out.teacher_cls_state = teacher_states[-1][rows, first_real(batch.real)]
        out.approx_logits = self.selector.approx.logits(batch.approx.hidden_states, batch.real)
        return out


class STTABTForSequenceClassificationMixin:
    """Adds the prediction KL (dense main model -> ApproxNet's head) to the training loss."""

    @returns_tuple_unless_return_dict
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, return_dict=None, **kwargs) -> SkimSequenceClassifierOutput:
        out = self.skim_model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs,
        )
        logits = self.classify(out.cls_hidden_state, out.pooler_output)
        skim_loss = out.skim_loss
        weight = float(self.config.prediction_distill_weight)
        if out.approx_logits is not None and weight > 0:
            teacher = out.teacher_cls_state
            pooler = self.skim_model.pooler
            with torch.no_grad(), eval_mode(self):
                teacher_logits = self.classify(teacher, pooler(teacher[:, None]) if pooler is not None else None)
            skim_loss = skim_loss + weight * prediction_kl(teacher_logits, out.approx_logits)
        return SkimSequenceClassifierOutput(
            loss=self._total_loss(self.task_loss(logits, labels), skim_loss),
            logits=logits,
            skim_loss=skim_loss,
            kept_tokens=out.kept_tokens,
            ffn_tokens=out.ffn_tokens,
            token_layers=out.token_layers,
            token_ffn_layers=out.token_ffn_layers,
            exit_layer=out.exit_layer,
        )


class STTABTBertModel(STTABTModelMixin, SkimModel):
    config_class = STTABTBertConfig
    base_model_prefix = "bert"
    selector_class = STTABTSelector


class STTABTBertForSequenceClassification(STTABTForSequenceClassificationMixin, SkimForSequenceClassification):
    config_class = STTABTBertConfig
    base_model_prefix = "bert"
    base_model_class = STTABTBertModel


class STTABTRobertaModel(STTABTModelMixin, SkimModel):
    config_class = STTABTRobertaConfig
    base_model_prefix = "roberta"
    selector_class = STTABTSelector


class STTABTRobertaForSequenceClassification(STTABTForSequenceClassificationMixin, SkimForSequenceClassification):
    config_class = STTABTRobertaConfig
    base_model_prefix = "roberta"
    base_model_class = STTABTRobertaModel
