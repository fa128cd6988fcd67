"""Transkimmer (Guan et al., ACL 2022): before every layer, a small predictor decides which tokens skip
the rest of the encoder.

Differences from the public reference code, on purpose:
- skim attention is a masked softmax (keys of skimmed tokens removed, then renormalised), not the
  reference's multiplication of probabilities after softmax;
- the skim loss counts real tokens only, so dropping padding earns nothing;
- inference is deterministic (argmax of the predictor, no Gumbel noise) and skimmed tokens are
  physically removed from batches of any size.
"""

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import BertConfig, RobertaConfig
from transformers.activations import ACT2FN

from .engine import (
    SkimForQuestionAnswering,
    SkimForSequenceClassification,
    SkimForTokenClassification,
    SkimModel,
    TokenSelector,
    keep_ratio_loss,
    register_family,
)


@strict
class TranskimmerBertConfig(BertConfig):
    r"""BERT configuration plus Transkimmer's fields.

    skim_enabled: False runs the same engine with every token kept.
    skim_coefficient: the harmony coefficient lambda of `loss = task_loss + lambda * skim_loss`.
    gumbel_tau: temperature of the Gumbel-softmax used in training.
    skim_bias_init: unbalanced init of the predictor's last bias, keep ~ +mu0 and skip ~ -mu0, so a
        fresh model starts by keeping every token.
    """

    model_type = "transkimmer-bert"
    skim_enabled: bool = True
    skim_coefficient: float | int = 0.5
    gumbel_tau: float | int = 1.0
    skim_bias_init: float | int = 5.0


@strict
class TranskimmerRobertaConfig(RobertaConfig):
    r"""RoBERTa configuration plus Transkimmer's fields (see `TranskimmerBertConfig`)."""

    model_type = "transkimmer-roberta"
    skim_enabled: bool = True
    skim_coefficient: float | int = 0.5
    gumbel_tau: float | int = 1.0
    skim_bias_init: float | int = 5.0


SKIP, KEEP = 0, 1


class SkimLogits(nn.Linear):
    """The predictor's last layer, Linear(d, 2) with Transkimmer's unbalanced bias init:
    skip ~ N(-mu0, std), keep ~ N(+mu0, std), so a fresh predictor keeps every token."""

    def __init__(self, config):
        super().__init__(config.hidden_size, 2)
        self.bias_init = config.skim_bias_init
        self.init_std = config.initializer_range

    def init_skim_weights(self, init):
        init.normal_(self.weight, mean=0.0, std=self.init_std)
        bias = torch.tensor([-self.bias_init, self.bias_init]) + torch.randn(2) * self.init_std
        init.copy_(self.bias, bias.to(self.bias.dtype))


class SkimPredictor(nn.Sequential):
    """LayerNorm -> Linear(d, d) -> LayerNorm -> GELU -> Linear(d, 2): logits [skip, keep] per token."""

    def __init__(self, config):
        d = config.hidden_size
        super().__init__(
            nn.LayerNorm(d, eps=config.layer_norm_eps),
            nn.Linear(d, d),
            nn.LayerNorm(d, eps=config.layer_norm_eps),
            ACT2FN["gelu"],
            SkimLogits(config),
        )


class TranskimmerSelector(TokenSelector):
    """One `SkimPredictor` before every layer; Gumbel straight-through in training, argmax at inference.

    Reads its settings from the live config, so `model.config.skim_enabled = False` takes effect at once.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.predictors = nn.ModuleList([SkimPredictor(config) for _ in range(config.num_hidden_layers)])

    @property
    def enabled(self) -> bool:
        return bool(self.config.skim_enabled)

    @property
    def loss_weight(self) -> float:
        return float(self.config.skim_coefficient)

    def before_layer(self, layer_idx, hidden, hard):
        if not self.enabled:
            return None
        logits = self.predictors[layer_idx](hidden).float()
        if hard:
            return logits[..., KEEP] > logits[..., SKIP]
        return F.gumbel_softmax(logits, tau=float(self.config.gumbel_tau), hard=True)[..., KEEP]

    def loss(self, masks, real):
        return keep_ratio_loss(masks, real) if self.enabled else None

    def macs_per_token(self):
        if not self.enabled:
            return 0
        d = self.config.hidden_size
        return d * d + 2 * d  # the two Linear layers of the predictor


class TranskimmerBertModel(SkimModel):
    config_class = TranskimmerBertConfig
    base_model_prefix = "bert"
    selector_class = TranskimmerSelector


class TranskimmerBertForSequenceClassification(SkimForSequenceClassification):
    config_class = TranskimmerBertConfig
    base_model_prefix = "bert"
    base_model_class = TranskimmerBertModel


class TranskimmerBertForQuestionAnswering(SkimForQuestionAnswering):
    config_class = TranskimmerBertConfig
    base_model_prefix = "bert"
    base_model_class = TranskimmerBertModel


class TranskimmerBertForTokenClassification(SkimForTokenClassification):
    config_class = TranskimmerBertConfig
    base_model_prefix = "bert"
    base_model_class = TranskimmerBertModel


class TranskimmerRobertaModel(SkimModel):
    config_class = TranskimmerRobertaConfig
    base_model_prefix = "roberta"
    selector_class = TranskimmerSelector


class TranskimmerRobertaForSequenceClassification(SkimForSequenceClassification):
    config_class = TranskimmerRobertaConfig
    base_model_prefix = "roberta"
    base_model_class = TranskimmerRobertaModel


class TranskimmerRobertaForQuestionAnswering(SkimForQuestionAnswering):
    config_class = TranskimmerRobertaConfig
    base_model_prefix = "roberta"
    base_model_class = TranskimmerRobertaModel


class TranskimmerRobertaForTokenClassification(SkimForTokenClassification):
    config_class = TranskimmerRobertaConfig
    base_model_prefix = "roberta"
    base_model_class = TranskimmerRobertaModel


register_family(
    TranskimmerBertConfig,
    [TranskimmerBertModel, TranskimmerBertForSequenceClassification, TranskimmerBertForQuestionAnswering,
     TranskimmerBertForTokenClassification],
)
register_family(
    TranskimmerRobertaConfig,
    [TranskimmerRobertaModel, TranskimmerRobertaForSequenceClassification, TranskimmerRobertaForQuestionAnswering,
     TranskimmerRobertaForTokenClassification],
)
