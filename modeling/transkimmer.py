"""Transkimmer (Guan et al., ACL 2022): before every layer, a small predictor decides which tokens skip
the rest of the encoder.

Differences from the public reference code, on purpose:
- skim attention is a masked softmax (keys of skimmed tokens removed, then renormalised), not the
  reference's multiplication of probabilities after softmax;
- the skim loss counts real tokens only, so dropping padding earns nothing;
- inference is deterministic (keep where P(keep) >= `keep_threshold`, no Gumbel noise) and skimmed
  tokens are physically removed from batches of any size;
- training can drive the model to a budget (`target_keep_ratio`) instead of a plain lambda, and each
  sequence keeps at least `min_kept_tokens` tokens, in training and at inference.

Why the plain-lambda recipe collapses to CLS (measured on SST-2 with MiniLM-L6, see the README): the skim
loss pushes every predictor in the same direction at every step, while the task gradient is noisy. Adam
normalises each parameter's step, so a consistent push moves the predictor's last Linear (on LayerNorm-ed
features) by about `lr` per weight per step, i.e. the keep logit by up to `lr * hidden` per step: at
`lr = 1e-3` and hidden 384 that crosses the +/-5 init margin in a few dozen steps, and the push never
stops, so every token is skipped after layer 0. A budget (`engine.budget_loss`, |kept ratio - target| per
sequence) has a bounded push that stops at the target, and the floor keeps short inputs answerable.
"""

import math

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import BertConfig, RobertaConfig
from transformers.activations import ACT2FN

from .heads import SkimForQuestionAnswering, SkimForSequenceClassification, SkimForTokenClassification
from .models import SkimModel
from .selector import TokenSelector, budget_loss, keep_ratio_loss


@strict
class TranskimmerBertConfig(BertConfig):
    r"""BERT configuration plus Transkimmer's fields.

    skim_enabled: False runs the same engine with every token kept.
    skim_coefficient: the harmony coefficient lambda of `loss = task_loss + lambda * skim_loss`.
    target_keep_ratio: None for the paper's skim loss (the mean kept ratio, pushed down without end); a
        number r in (0, 1] for the budget `max(0, kept ratio - r)`, which stops pushing at r.
    min_kept_tokens: every sequence keeps at least this many tokens (CLS included) in every layer.
    keep_threshold: inference keeps a token where the predictor's P(keep) >= this (0.5: the argmax); training
        with `gumbel_noise=False` takes the same decisions.
        Raise it to skim more, lower it to skim less, without retraining (`tokenskim calibrate` picks it).
    gumbel_tau: temperature of the Gumbel-softmax used in training.
    gumbel_noise: False trains with the deterministic decision `score >= 0` (the one inference takes) and
        the gradient of `sigmoid(score / tau)`, so the kept ratio in training is the one at inference.
    skim_bias_init: unbalanced init of the predictor's last bias, keep ~ +mu0 and skip ~ -mu0, so a
        fresh model starts by keeping every token.
    skim_predictor_size: width of the predictor's hidden layer; None (or 0) is `hidden_size` (the paper's, about 8%
        of a MiniLM layer's FLOPs per scored token); a narrower predictor costs proportionally less. Its keep logit
        moves at most `lr * width` per Adam step, so it leaves the +`skim_bias_init` start more slowly (README,
        IMDB: a short run may want a higher `--selector-learning-rate`, at a cost in accuracy).
    skim_first_layer: True (the paper's) puts a predictor before layer 0 too, deciding on the embeddings alone;
        False lets every token through layer 0, so the first decision reads contextual states (as LTP's layer 0).
    """

    model_type = "transkimmer-bert"
    skim_enabled: bool = True
    skim_coefficient: float | int = 0.5
    target_keep_ratio: float | int | None = None
    min_kept_tokens: int = 4
    keep_threshold: float | int = 0.5
    gumbel_tau: float | int = 1.0
    gumbel_noise: bool = True
    skim_bias_init: float | int = 5.0
    skim_predictor_size: int | None = None
    skim_first_layer: bool = True


@strict
class TranskimmerRobertaConfig(RobertaConfig):
    r"""RoBERTa configuration plus Transkimmer's fields (see `TranskimmerBertConfig`)."""

    model_type = "transkimmer-roberta"
    skim_enabled: bool = True
    skim_coefficient: float | int = 0.5
    target_keep_ratio: float | int | None = None
    min_kept_tokens: int = 4
    keep_threshold: float | int = 0.5
    gumbel_tau: float | int = 1.0
    gumbel_noise: bool = True
    skim_bias_init: float | int = 5.0
    skim_predictor_size: int | None = None
    skim_first_layer: bool = True


SKIP, KEEP = 0, 1


def predictor_size(config) -> int:
    return int(config.skim_predictor_size or config.hidden_size)


class SkimLogits(nn.Linear):
    """The predictor's last layer, Linear(p, 2) with Transkimmer's unbalanced bias init:
    skip ~ N(-mu0, std), keep ~ N(+mu0, std), so a fresh predictor keeps every token."""

    def __init__(self, config):
        super().__init__(predictor_size(config), 2)
        self.bias_init = config.skim_bias_init
        self.init_std = config.initializer_range

    def init_skim_weights(self, init):
        init.normal_(self.weight, mean=0.0, std=self.init_std)
        bias = torch.tensor([-self.bias_init, self.bias_init]) + torch.randn(2) * self.init_std
        init.copy_(self.bias, bias.to(self.bias.dtype))


class SkimPredictor(nn.Sequential):
    """LayerNorm -> Linear(d, p) -> LayerNorm -> GELU -> Linear(p, 2): logits [skip, keep] per token
    (p = `skim_predictor_size`, d by default)."""

    def __init__(self, config):
        d, p = config.hidden_size, predictor_size(config)
        super().__init__(
            nn.LayerNorm(d, eps=config.layer_norm_eps),
            nn.Linear(d, p),
            nn.LayerNorm(p, eps=config.layer_norm_eps),
            ACT2FN["gelu"],
            SkimLogits(config),
        )


class TranskimmerSelector(TokenSelector):
    """One `SkimPredictor` before every layer; Gumbel straight-through in training, a threshold on P(keep)
    at inference. The keep score is the predictor's logit difference `keep - skip`.

    Reads its settings from the live config, so `model.config.skim_enabled = False` takes effect at once.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        # a layer without decisions holds no parameters (an Identity), so every parameter gets a gradient
        self.predictors = nn.ModuleList([
            SkimPredictor(config) if i > 0 or config.skim_first_layer else nn.Identity()
            for i in range(config.num_hidden_layers)
        ])

    @property
    def enabled(self) -> bool:
        return bool(self.config.skim_enabled)

    @property
    def loss_weight(self) -> float:
        return float(self.config.skim_coefficient)

    @property
    def min_kept_tokens(self) -> int:
        return int(self.config.min_kept_tokens)

    @property
    def default_learning_rate(self):
        """With a budget, 1e-3: the rate of the README's Transkimmer budget recipe (a keep logit moves by up to
        `lr x width` per Adam step; scaling the rate by hidden / width, 6e-3 at 64, cost 1.7 points in one SST-2 run).
        Without one, None (the model's rate, as the paper trains): the paper's loss never stops pushing, and a
        faster selector collapses to CLS (module docstring)."""
        return None if self.config.target_keep_ratio is None else 1e-3

    def before_layer(self, layer_idx, hidden, hard):
        """hidden `[..., hidden]` -> keep score `[...]` float32 (>= 0 keeps)."""
        if not self.enabled or isinstance(self.predictors[layer_idx], nn.Identity):
            return None
        logits = self.predictors[layer_idx](hidden).float()
        # P(keep) >= p  <=>  keep - skip >= logit(p); training shifts by the same amount, so deterministic
        # decisions (gumbel_noise=False) are inference's at any keep_threshold
        p = min(max(float(self.config.keep_threshold), 1e-6), 1 - 1e-6)
        return logits[..., KEEP] - logits[..., SKIP] - math.log(p / (1 - p))

    def gate(self, layer_idx, score):
        """Gumbel-softmax straight-through over (skip, keep): the forward is a hard 0/1 sample, the
        backward the gradient of `sigmoid((score + logistic noise) / tau)` (the two-class Gumbel-softmax)."""
        if self.config.gumbel_noise:
            u = torch.rand_like(score).clamp(1e-6, 1 - 1e-6)
            score = score + torch.log(u) - torch.log1p(-u)
        soft = torch.sigmoid(score / float(self.config.gumbel_tau))
        return (soft >= 0.5).to(soft.dtype) + soft - soft.detach()

    def loss(self, masks, real):
        if not self.enabled:
            return None
        target = self.config.target_keep_ratio
        if target is None:
            return keep_ratio_loss(masks, real)
        return budget_loss(masks, real, float(target), self.min_kept_tokens)

    def macs(self, kept_tokens, lengths):
        """The predictors' two Linear layers (d*p + 2p MACs a token), charged on the tokens each predictor scored:
        layer 0's scores every real token (if it has a predictor), layer i's the tokens layer i-1 kept."""
        if not self.enabled:
            return super().macs(kept_tokens, lengths)
        d, p = self.config.hidden_size, predictor_size(self.config)
        scored = kept_tokens[:, :-1].double().sum(-1) + (lengths.double() if self.config.skim_first_layer else 0)
        return (d * p + 2 * p) * scored


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
