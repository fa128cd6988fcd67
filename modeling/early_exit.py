"""Early exit as a reusable part: an exit head after every layer but the last, an exit rule, and
self-distillation (FastBERT, Liu et al. 2020; patience rule from PABEE, Zhou et al. 2020).

At inference (`model.eval()`), after layer l the exit head of that layer reads each sequence's CLS state
and the rule decides which sequences stop; those leave the packed batch (the engine removes them, so the
others go on with a smaller batch) and keep the exit head's logits. Rules (`config.exit_criterion`):
- "entropy": stop when the normalized entropy u = H(p) / log N <= tau (`config.exit_threshold`);
- "patience": stop when the predicted class has not changed for `config.exit_patience` layers in a row.
Both read the live config, so `model.config.exit_threshold = 0.3` changes the speed/accuracy trade-off
without retraining. `outputs.exit_layer` `[batch]` says how many layers each sequence ran; see
`exit_counts`.

Training: with the backbone trainable, the loss is the task loss of the final classifier (the exit heads
are not used). With the backbone frozen (every parameter of the base model has `requires_grad=False`,
see `freeze_for_exit_training`), the loss is the self-distillation loss: the sum over exit heads of
KL(p_final || p_head), the final classifier's prediction as a detached teacher.

Differences from the references, on purpose:
- the KL runs from the teacher to each head (standard distillation; gradient p_head - p_final on the
  logits); FastBERT's paper writes the divergence with the student first;
- exited rows are removed from the batch at any batch size and decisions are per row, so a sequence's
  output does not depend on the rest of the batch (PABEE waited for the whole batch; DeeBERT needed batch 1);
- an exit head has the shape of the final BERT pooler + classifier (RoBERTa: classification head), so it can
  start as a copy of the fine-tuned final head (`init_exit_heads_from_classifier`) rather than at random.

Classification only: a regression task (num_labels == 1) has no entropy and no stable "same prediction",
so it raises an error.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import BertConfig, RobertaConfig

from .engine import (
    SkimForSequenceClassification,
    SkimModel,
    SkimSequenceClassifierOutput,
    TokenSelector,
    is_roberta,
    returns_tuple_unless_return_dict,
)

EXIT_CRITERIA = ("entropy", "patience")


@dataclass
class ExitFields:
    r"""Early-exit configuration fields, shared by every config whose model has exit heads.

    skim_enabled: False turns every decision off, exits included (and token pruning where the family has it):
        the same switch as every tokenskim config's.
    exit_enabled: False runs every sequence through every layer (the exit heads are not evaluated).
    exit_criterion: "entropy" (normalized entropy <= exit_threshold) or "patience" (PABEE).
    exit_threshold: tau in [0, 1]; larger exits earlier. May be changed at inference.
    exit_patience: layers in a row with the same prediction before a "patience" exit.
    """

    skim_enabled: bool = True
    exit_enabled: bool = True
    exit_criterion: str = "entropy"
    exit_threshold: float | int = 0.1
    exit_patience: int = 2


@strict
class EarlyExitBertConfig(BertConfig, ExitFields):
    r"""BERT configuration plus the early-exit fields (see `ExitFields`)."""

    model_type = "early-exit-bert"


@strict
class EarlyExitRobertaConfig(RobertaConfig, ExitFields):
    r"""RoBERTa configuration plus the early-exit fields (see `ExitFields`)."""

    model_type = "early-exit-roberta"


def check_classification(config):
    """Early exit needs class probabilities: regression and multi-label tasks are errors."""
    if config.num_labels < 2 or config.problem_type in ("regression", "multi_label_classification"):
        raise ValueError(
            f"early exit supports single-label classification only (num_labels >= 2); got num_labels="
            f"{config.num_labels}, problem_type={config.problem_type!r}. For regression tasks such as STS-B "
            "use a method without exits (e.g. LTP or Transkimmer)."
        )


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """u = H(p) / log N in [0, 1] from logits `[n, N]` -> `[n]` float32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1) / math.log(logits.shape[-1])


def patience_step(pred, prev_pred, streak):
    """PABEE's counter: layers in a row whose prediction equals the previous layer's.

    pred `[n]` long; prev_pred `[n]` long or None (first layer); streak `[n]` long or None -> new streak `[n]`.
    """
    if prev_pred is None:
        return torch.zeros_like(pred)
    return torch.where(pred == prev_pred, streak + 1, torch.zeros_like(streak))


def exit_counts(exit_layer: torch.Tensor, num_layers: int) -> torch.Tensor:
    """Sequences that ran exactly 1..L layers: `[batch]` -> `[layers]` (index l counts exits after layer l + 1)."""
    return torch.bincount(exit_layer - 1, minlength=num_layers)


class ExitHead(nn.Module):
    """dropout -> dense(d, d) -> tanh -> dropout -> out_proj(d, labels): logits from a CLS state.

    The shape of BERT's pooler + classifier and of RoBERTa's classification head, so a head can start
    as a copy of the fine-tuned final head. cls `[n, hidden]` -> logits `[n, labels]`.
    """

    def __init__(self, config):
        super().__init__()
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, cls):
        x = torch.tanh(self.dense(self.dropout(cls)))
        return self.out_proj(self.dropout(x))


class ExitHeads(nn.ModuleList):
    """One `ExitHead` after each layer but the last (the final classifier serves the last layer)."""

    def __init__(self, config):
        super().__init__([ExitHead(config) for _ in range(config.num_hidden_layers - 1)])

    def all_logits(self, layer_cls: torch.Tensor) -> torch.Tensor:
        """CLS states after every layer `[layers, batch, hidden]` -> logits of every head `[layers - 1, batch, labels]`."""
        return torch.stack([head(cls) for head, cls in zip(self, layer_cls)])


class ExitDecision:
    """The engine's `exit_fn` for one forward pass:
    `(layer_idx, cls [n, hidden], sequence [n]) -> (stop [n], logits [n, labels])`.

    `n` is the number of sequences still running and `sequence` their batch indices; the patience state is
    kept per batch index, so it needs no compaction (and no host read) when sequences leave.
    """

    def __init__(self, heads: ExitHeads, config):
        self.heads = heads
        self.criterion = config.exit_criterion
        if self.criterion not in EXIT_CRITERIA:
            raise ValueError(f"exit_criterion must be one of {EXIT_CRITERIA}, got {self.criterion!r}")
        self.tau = float(config.exit_threshold)
        self.patience = int(config.exit_patience)
        self.prev_pred = self.streak = None  # [batch], set at the first layer (every sequence running)

    def __call__(self, layer_idx, cls, sequence):
        logits = self.heads[layer_idx](cls)
        if self.criterion == "entropy":
            return normalized_entropy(logits) <= self.tau, logits
        pred = logits.argmax(-1)
        first = self.prev_pred is None
        streak = patience_step(pred, None if first else self.prev_pred[sequence], None if first else self.streak[sequence])
        if first:
            self.prev_pred, self.streak = pred.clone(), streak.clone()
        else:
            self.prev_pred[sequence], self.streak[sequence] = pred, streak
        return streak >= self.patience, logits


def self_distillation_loss(head_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Sum over exit heads of KL(p_teacher || p_head), averaged over the batch.

    head_logits `[heads, batch, labels]`; teacher_logits `[batch, labels]` (detached here).
    """
    teacher = torch.log_softmax(teacher_logits.detach().float(), -1).expand(head_logits.shape)
    student = torch.log_softmax(head_logits.float(), -1)
    kl = F.kl_div(student.flatten(0, 1), teacher.flatten(0, 1), log_target=True, reduction="sum")
    return kl / head_logits.shape[1]


class SkimForSequenceClassificationWithExits(SkimForSequenceClassification):
    """Sequence classification with an exit head after every layer; any token selector underneath.

    A family sets `config_class`, `base_model_prefix` and `base_model_class` (whose selector prunes
    tokens, or keeps all of them), as for `SkimForSequenceClassification`. Parameters: those of the base
    class plus `exit_heads.{0..L-2}.dense/out_proj`.
    """

    def __init__(self, config):
        check_classification(config)
        super().__init__(config)
        self.exit_heads = ExitHeads(config)
        self.post_init()

    def backbone_frozen(self) -> bool:
        """True when no parameter of the base model trains: the exit heads are trained by self-distillation."""
        return not any(p.requires_grad for p in self.skim_model.parameters())

    def freeze_for_exit_training(self):
        """Freezes everything but the exit heads (backbone, pruning thresholds and final classifier)."""
        for name, p in self.named_parameters():
            p.requires_grad = name.startswith("exit_heads.")
        return self

    @torch.no_grad()
    def init_exit_heads_from_classifier(self):
        """Copies the final head (BERT: pooler.dense + classifier; RoBERTa: classifier.dense/out_proj) into every exit head."""
        if is_roberta(self.config):
            dense, out = self.classifier.dense, self.classifier.out_proj
        else:
            dense, out = self.skim_model.pooler.dense, self.classifier
        for head in self.exit_heads:
            head.dense.load_state_dict(dense.state_dict())
            head.out_proj.load_state_dict(out.state_dict())
        return self

    @returns_tuple_unless_return_dict
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, return_dict=None, **kwargs) -> SkimSequenceClassifierOutput:
        """Logits `[batch, labels]`: the exit head's for sequences that exited, the final classifier's otherwise.

        `exit_layer` `[batch]` in the output: layers each sequence ran (`num_hidden_layers` if it did not exit).
        """
        check_classification(self.config)
        distill = self.training and self.backbone_frozen()
        exit_fn = ExitDecision(self.exit_heads, self.config) if not self.training and self.config.exit_enabled else None
        out = self.skim_model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, exit_fn=exit_fn, return_layer_cls=distill,
            return_dict=True, **kwargs,
        )
        logits = self.classify(out.cls_hidden_state, out.pooler_output)
        if out.exit_logits is not None:
            exited = (out.exit_layer < self.config.num_hidden_layers).unsqueeze(-1)
            logits = torch.where(exited, out.exit_logits.to(logits.dtype), logits)
        if distill:
            loss = self_distillation_loss(self.exit_heads.all_logits(out.layer_cls[:-1]), logits)
        else:
            loss = self._total_loss(self.task_loss(logits, labels), out.skim_loss)
        return SkimSequenceClassifierOutput(
            loss=loss, logits=logits, skim_loss=out.skim_loss, kept_tokens=out.kept_tokens,
            ffn_tokens=out.ffn_tokens, exit_layer=out.exit_layer, token_layers=out.token_layers,
            token_ffn_layers=out.token_ffn_layers,
        )


class KeepAllSelector(TokenSelector):
    """Keeps every token: early exit alone shortens depth, not width."""

    def __init__(self, config=None):
        super().__init__()


class EarlyExitBertModel(SkimModel):
    """The base model of the early-exit family: every token kept, exits decided by the classification model."""

    config_class = EarlyExitBertConfig
    base_model_prefix = "bert"
    selector_class = KeepAllSelector


class EarlyExitBertForSequenceClassification(SkimForSequenceClassificationWithExits):
    config_class = EarlyExitBertConfig
    base_model_prefix = "bert"
    base_model_class = EarlyExitBertModel


class EarlyExitRobertaModel(SkimModel):
    config_class = EarlyExitRobertaConfig
    base_model_prefix = "roberta"
    selector_class = KeepAllSelector


class EarlyExitRobertaForSequenceClassification(SkimForSequenceClassificationWithExits):
    config_class = EarlyExitRobertaConfig
    base_model_prefix = "roberta"
    base_model_class = EarlyExitRobertaModel
