"""Task heads on `SkimModel`, parameter for parameter the stock `transformers` heads, so fine-tuned BERT/RoBERTa
checkpoints of each task load into any family."""

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers.models.roberta.modeling_roberta import RobertaClassificationHead

from .models import (
    SkimModel,
    SkimPreTrainedModel,
    SkimQuestionAnsweringOutput,
    SkimSequenceClassifierOutput,
    SkimTokenClassifierOutput,
    is_roberta,
    returns_tuple_unless_return_dict,
)


class SkimForSequenceClassification(SkimPreTrainedModel):
    """Sequence classification (or regression when `num_labels == 1`) on the CLS token.

    BERT: pooler -> dropout -> `classifier`; RoBERTa: `classifier.dense/out_proj` on CLS, as in
    `transformers`, so fine-tuned checkpoints of either load.
    """

    base_model_class = SkimModel

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        roberta = is_roberta(config)
        setattr(self, self.base_model_prefix, self.base_model_class(config, add_pooling_layer=not roberta))
        if roberta:
            self.classifier = RobertaClassificationHead(config)
        else:
            dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def classify(self, cls_hidden_state, pooled):
        """Logits `[batch, labels]` from each row's final CLS state `[batch, hidden]` (RoBERTa's head) or its
        pooled form `[batch, hidden]` (BERT). The CLS is each row's first real token, whatever the padding side."""
        if is_roberta(self.config):
            return self.classifier(cls_hidden_state[:, None])  # the stock head reads position 0 of its input
        return self.classifier(self.dropout(pooled))

    def task_loss(self, logits, labels):
        if labels is None:
            return None
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            return MSELoss()(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype)) if self.num_labels == 1 else MSELoss()(logits, labels)
        if self.config.problem_type == "single_label_classification":
            return CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
        return BCEWithLogitsLoss()(logits, labels.to(logits.dtype))

    @returns_tuple_unless_return_dict
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, return_dict=None, **kwargs) -> SkimSequenceClassifierOutput:
        out = self.skim_model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs,
        )
        logits = self.classify(out.cls_hidden_state, out.pooler_output)
        return SkimSequenceClassifierOutput(
            loss=self._total_loss(self.task_loss(logits, labels), out.skim_loss),
            logits=logits,
            skim_loss=out.skim_loss,
            kept_tokens=out.kept_tokens,
            ffn_tokens=out.ffn_tokens,
            token_layers=out.token_layers,
            token_ffn_layers=out.token_ffn_layers,
            exit_layer=out.exit_layer,
        )


def span_loss(start_logits, end_logits, start_positions, end_positions):
    """Stock `transformers` extractive-QA loss: mean of the start and end cross-entropies over `[batch, seq]` logits;
    positions outside the sequence are ignored. None without positions."""
    if start_positions is None or end_positions is None:
        return None
    seq = start_logits.shape[1]
    ce = CrossEntropyLoss(ignore_index=seq)
    return (ce(start_logits, start_positions.clamp(0, seq)) + ce(end_logits, end_positions.clamp(0, seq))) / 2


class SkimForQuestionAnswering(SkimPreTrainedModel):
    """Extractive QA: `qa_outputs` on every position's final state (forwarded for skimmed tokens)."""

    base_model_class = SkimModel

    def __init__(self, config):
        super().__init__(config)
        setattr(self, self.base_model_prefix, self.base_model_class(config, add_pooling_layer=False))
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)  # num_labels = 2, as in transformers
        self.post_init()

    @returns_tuple_unless_return_dict
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, start_positions=None, end_positions=None, return_dict=None,
                **kwargs) -> SkimQuestionAnsweringOutput:
        out = self.skim_model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs,
        )
        start_logits, end_logits = (x.squeeze(-1) for x in self.qa_outputs(out.last_hidden_state).split(1, dim=-1))
        loss = span_loss(start_logits, end_logits, start_positions, end_positions)
        return SkimQuestionAnsweringOutput(
            loss=self._total_loss(loss, out.skim_loss),
            start_logits=start_logits.contiguous(),
            end_logits=end_logits.contiguous(),
            skim_loss=out.skim_loss,
            kept_tokens=out.kept_tokens,
            ffn_tokens=out.ffn_tokens,
            token_layers=out.token_layers,
            token_ffn_layers=out.token_ffn_layers,
        )


class SkimForTokenClassification(SkimPreTrainedModel):
    """Token classification (NER, POS): `classifier` on every position's final state."""

    base_model_class = SkimModel

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        setattr(self, self.base_model_prefix, self.base_model_class(config, add_pooling_layer=False))
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @returns_tuple_unless_return_dict
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, return_dict=None, **kwargs) -> SkimTokenClassifierOutput:
        out = self.skim_model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs,
        )
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
        return SkimTokenClassifierOutput(
            loss=self._total_loss(loss, out.skim_loss),
            logits=logits,
            skim_loss=out.skim_loss,
            kept_tokens=out.kept_tokens,
            ffn_tokens=out.ffn_tokens,
            token_layers=out.token_layers,
            token_ffn_layers=out.token_ffn_layers,
        )
