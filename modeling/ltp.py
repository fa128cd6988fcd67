"""Learned Token Pruning (Kim et al., KDD 2022): after each layer's attention, a token whose received
attention falls below a learned per-layer threshold leaves the encoder.

Importance of token j at layer l is the attention it receives, `s_j = mean_h mean_i A[h, i, j]`, averaged
over heads and over the *real, still kept* query rows (the engine computes it; attention probabilities are
materialised only in layers that can prune). Layer l (0-based) prunes below

    theta_l = theta_L * l / L + offset_l

with `offset_l` a learnable scalar that starts at 0, so layer 0 never prunes (as in the reference code). With
`prune_first_layer`, layer 0 starts at half of layer 1's base, theta_L / (2L), and learns its offset like the
others: on a 6-layer model the paper's schedule runs the first two layers' attention on every token, which holds
the kept-token ratio above 1/3 whatever the thresholds (on AG News 0.41 for a budget of 0.25, which counts each
layer's tokens after its decision and was met).

`threshold_space` says what the threshold is compared with:
- "attention" (the paper's): s_j itself. Its scale is 1/n for n kept tokens, so one threshold prunes long
  inputs harder than short ones, and with the paper's T = 1e-3 the soft gate is nearly a step: once a
  threshold passes every token but the `min_kept_tokens` floor, every gate saturates at 0, no gradient
  reaches the threshold again and the budget cannot pull it back (measured: layers 3-5 end at the floor on
  SST-2 and AG News);
- "log-relative": log(n * s_j), the log of the token's share relative to the uniform share 1/n (mean 1 in
  every sequence, whatever its length), against log(theta_L * l / L) + offset_l. The offsets move in log
  units, and the gate's temperature (default 0.25 log units) keeps a gradient on tokens around the threshold.

Stages (`config.pruning_stage`, training mode only; inference is always hard):
- "soft": gate `sigmoid((s - theta_l) / T)`; the engine turns it into key weights and residual gating,
  and the loss adds `lambda * sum_l mean(M_l over real tokens)` so gradients reach the thresholds;
- "hard": binary gate `s >= theta_l`, thresholds frozen (no gradient reaches them), the encoder is
  fine-tuned under the pruning it will see at inference (`threshold_scale` included: set it after the soft
  stage, e.g. with `tokenskim calibrate`, and the hard stage adapts the encoder to it).

Differences from the public reference code, on purpose:
- received attention is averaged over real query rows, not over the padded length, so padding changes
  no decision and a sequence is pruned the same way alone or in any batch;
- masks are cumulative and act on the attention keys (masked softmax) and the residual stream, as in the
  engine, instead of multiplying only the layer output (reference soft stage) or adding -10000 to the
  attention mask (reference hard stage); a pruned token keeps its last state (forwarding);
- the hard stage passes no straight-through gradient: with T ~ 1e-3 a straight-through estimator would
  feed gradients scaled by 1/T into the attention scores; the reference also trains the hard stage without one;
- tokens are physically removed from batches of any size at inference, and the L1 term counts real tokens only.
"""

import math
from dataclasses import dataclass

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import BertConfig, RobertaConfig

from .heads import SkimForQuestionAnswering, SkimForSequenceClassification, SkimForTokenClassification
from .models import SkimModel
from .selector import TokenSelector, budget_loss, keep_ratio_loss

PRUNING_STAGES = ("soft", "hard")
# threshold_space -> (default final_threshold, default temperature)
THRESHOLD_SPACES = {"attention": (0.01, 1e-3), "log-relative": (1.0, 0.25)}


@dataclass
class LTPFields:
    r"""LTP's configuration fields, shared by every config that prunes with `LTPSelector`.

    skim_enabled: False runs the same engine with every token kept (no attention probabilities computed).
    threshold_space: "attention" (thresholds on received attention, the paper's) or "log-relative"
        (thresholds on the log of received attention times the sequence's kept tokens); module docstring.
        The field's default is the paper's, so older configs without it read as they were trained;
        `tokenskim train` gives new models "log-relative" (its recipe default).
    final_threshold: theta_L, the threshold of the last layer; layer l (0-based) uses theta_L * l / L
        plus its learned offset. None: 0.01 for "attention" (the paper searches 0.01..0.08), 1.0 for
        "log-relative" (the last layer starts by pruning tokens that receive less than the average).
    temperature: T of the soft-stage gate sigmoid((score - theta) / T). None: 1e-3 for "attention" (the
        paper's), 0.25 for "log-relative".
    skim_coefficient: lambda of `loss = task_loss + lambda * sum_l mean(M_l)` (soft stage).
    target_keep_ratio: None for that L1 term (pushed down without end); a number r in (0, 1] for the budget
        `lambda * L * mean over sequences |kept ratio - r|` (`engine.budget_loss`), which holds the ratio at r.
    min_kept_tokens: every sequence keeps at least this many tokens (CLS included) after every layer.
    threshold_scale: inference (and the hard-pruning stage, which trains under inference's decisions) prunes
        below `threshold_scale * theta_l`; raise it to prune more, lower it to prune less, without retraining
        (`tokenskim calibrate` picks it).
    pruning_stage: "soft" or "hard"; which gate training uses. Inference is always hard.
    prune_first_layer: False (the paper's): layer 0's threshold is 0 and it never prunes; True: it starts at
        theta_L / (2L) and is learned like the others (module docstring).
    """

    skim_enabled: bool = True
    threshold_space: str = "attention"
    final_threshold: float | int | None = None
    temperature: float | int | None = None
    skim_coefficient: float | int = 0.1
    target_keep_ratio: float | int | None = None
    min_kept_tokens: int = 4
    threshold_scale: float | int = 1.0
    pruning_stage: str = "soft"
    prune_first_layer: bool = False


@strict
class LTPBertConfig(BertConfig, LTPFields):
    r"""BERT configuration plus Learned Token Pruning's fields (see `LTPFields`)."""

    model_type = "ltp-bert"


@strict
class LTPRobertaConfig(RobertaConfig, LTPFields):
    r"""RoBERTa configuration plus Learned Token Pruning's fields (see `LTPFields`)."""

    model_type = "ltp-roberta"


def base_thresholds(final_threshold: float, num_layers: int, prune_first_layer: bool = False,
                    device=None) -> torch.Tensor:
    """theta_L * l / L for l = 0..L-1: `[layers]` float32 on `device`; the first layer's is 0, or theta_L / (2L) when
    `prune_first_layer`."""
    layer = torch.arange(num_layers, dtype=torch.float32, device=device)
    if prune_first_layer:
        layer[0] = 0.5
    return final_threshold * layer / num_layers


class LTPSelector(TokenSelector):
    """Threshold pruning on the attention each token receives (see the module docstring).

    Reads its settings from the live config, so `model.config.final_threshold = ...`,
    `model.config.pruning_stage = "hard"` or `model.config.skim_enabled = False` take effect at once.
    Parameters: `threshold_offsets` `[layers]`, one learnable offset per layer.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.num_layers = config.num_hidden_layers
        self.threshold_offsets = nn.Parameter(torch.zeros(config.num_hidden_layers))

    def init_skim_weights(self, init):
        init.zeros_(self.threshold_offsets)

    @property
    def enabled(self) -> bool:
        return bool(self.config.skim_enabled)

    @property
    def stage(self) -> str:
        stage = self.config.pruning_stage
        if stage not in PRUNING_STAGES:
            raise ValueError(f"pruning_stage must be one of {PRUNING_STAGES}, got {stage!r}")
        return stage

    @property
    def loss_weight(self) -> float:
        return float(self.config.skim_coefficient)

    @property
    def space(self) -> str:
        space = self.config.threshold_space
        if space not in THRESHOLD_SPACES:
            raise ValueError(f"threshold_space must be one of {tuple(THRESHOLD_SPACES)}, got {space!r}")
        return space

    @property
    def default_learning_rate(self):
        """1e-2 for offsets in log units (log-relative: SST-2 and AG News runs in the README); in the attention
        space None (the model's learning rate), whose scale is 1/n."""
        return 1e-2 if self.space == "log-relative" else None

    @property
    def final_threshold(self) -> float:
        value = self.config.final_threshold
        return THRESHOLD_SPACES[self.space][0] if value is None else float(value)

    @property
    def temperature(self) -> float:
        value = self.config.temperature
        return THRESHOLD_SPACES[self.space][1] if value is None else float(value)

    def thresholds(self) -> torch.Tensor:
        """theta_l for every layer, `[layers]` float32 (carries gradients to `threshold_offsets`); in the
        log-relative space the log of the relative threshold (-inf for a layer 0 that never prunes)."""
        # built on the offsets' device: a host tensor here would be one more copy to the GPU in every pruning layer
        base = base_thresholds(self.final_threshold, self.num_layers, self.prune_first_layer,
                               self.threshold_offsets.device)
        if self.space == "log-relative":
            base = base.log()
        return base + self.threshold_offsets.float()

    @property
    def prune_first_layer(self) -> bool:
        return bool(self.config.prune_first_layer)

    @property
    def min_kept_tokens(self) -> int:
        return int(self.config.min_kept_tokens)

    def inference_threshold(self, layer_idx) -> torch.Tensor:
        """`threshold_scale * theta_l` (its log in the log-relative space), the threshold hard decisions use at
        inference (no gradient)."""
        theta = self.thresholds()[layer_idx].detach()
        scale = float(self.config.threshold_scale)
        if self.space == "log-relative":
            return theta + math.log(scale) if scale > 0 else theta.new_tensor(float("-inf"))
        return scale * theta

    def needs_received_attention(self, layer_idx):
        # from the config alone: reading the learned offsets would make a GPU wait. Layer 0 (unless
        # `prune_first_layer`) and theta_L <= 0 never prune, so no attention probabilities are needed there.
        scale = float(self.config.threshold_scale) if not self.training else 1.0
        return self.enabled and self.final_threshold * scale > 0 and (layer_idx > 0 or self.prune_first_layer)

    def signal(self, received, tokens):
        """What the thresholds compare: received attention `[...]`, or log(tokens * received) `[...]` where
        tokens `[...]` is the number of (soft-)kept tokens of each token's sequence."""
        if self.space == "attention":
            return received
        if tokens is None:
            raise ValueError("the log-relative threshold space needs each sequence's kept tokens")
        return torch.log((received * tokens).clamp_min(1e-9))  # clamp: a gated-out token (0) has no log

    def after_attention(self, layer_idx, received, hard, tokens=None):
        """received `[...]` float32 (and tokens `[...]`, see `signal`) -> keep score `signal - theta` `[...]`
        (>= 0 keeps)."""
        signal = self.signal(received, tokens)
        if hard or self.stage == "hard":  # the hard stage trains under inference's thresholds, frozen
            return signal - self.inference_threshold(layer_idx)
        return signal - self.thresholds()[layer_idx]

    def gate(self, layer_idx, score):
        """Soft stage: sigmoid(score / T); hard stage: the binary decision, no gradient."""
        if self.stage == "soft":
            return torch.sigmoid(score / self.temperature)
        return (score >= 0).to(score.dtype)

    def loss(self, masks, real):
        """Soft stage: sum over layers of the mean keep mask over real tokens (LTP's L1 term), or with
        `target_keep_ratio` the budget (`budget_loss`) times the number of layers; else None."""
        if not self.enabled or self.stage != "soft":
            return None
        target = self.config.target_keep_ratio
        if target is None:
            term = keep_ratio_loss(masks, real)
        else:
            term = budget_loss(masks, real, float(target), self.min_kept_tokens)
        return term * len(masks)  # keep_ratio_loss is the mean over layers; LTP's term is their sum


def threshold_parameters(model: nn.Module) -> list:
    """The learnable threshold offsets of every `LTPSelector` in `model`."""
    return [m.threshold_offsets for m in model.modules() if isinstance(m, LTPSelector)]


class LTPBertModel(SkimModel):
    config_class = LTPBertConfig
    base_model_prefix = "bert"
    selector_class = LTPSelector


class LTPBertForSequenceClassification(SkimForSequenceClassification):
    config_class = LTPBertConfig
    base_model_prefix = "bert"
    base_model_class = LTPBertModel


class LTPBertForQuestionAnswering(SkimForQuestionAnswering):
    config_class = LTPBertConfig
    base_model_prefix = "bert"
    base_model_class = LTPBertModel


class LTPBertForTokenClassification(SkimForTokenClassification):
    config_class = LTPBertConfig
    base_model_prefix = "bert"
    base_model_class = LTPBertModel


class LTPRobertaModel(SkimModel):
    config_class = LTPRobertaConfig
    base_model_prefix = "roberta"
    selector_class = LTPSelector


class LTPRobertaForSequenceClassification(SkimForSequenceClassification):
    config_class = LTPRobertaConfig
    base_model_prefix = "roberta"
    base_model_class = LTPRobertaModel


class LTPRobertaForQuestionAnswering(SkimForQuestionAnswering):
    config_class = LTPRobertaConfig
    base_model_prefix = "roberta"
    base_model_class = LTPRobertaModel


class LTPRobertaForTokenClassification(SkimForTokenClassification):
    config_class = LTPRobertaConfig
    base_model_prefix = "roberta"
    base_model_class = LTPRobertaModel
