"""Magic Pyramid (He et al., 2021): Learned Token Pruning within each sequence plus FastBERT-style early
exit of whole sequences. Nothing new is computed here: the base model prunes with `LTPSelector`
(ltp.py) and the classification model adds the exit heads and exit rule of `early_exit.py`.

Training follows the paper's four stages (`tokenskim train --method magic-pyramid`): fine-tune (pruning and exits
off), soft pruning (model and thresholds), hard pruning (thresholds frozen), exit heads (backbone frozen,
self-distillation from the final classifier, hard pruning active). At inference tokens leave after the
attention of the layer where they fall below the threshold and sequences leave after the layer where
their exit head is confident enough (`config.exit_threshold`, changeable without retraining).
"""

from huggingface_hub.dataclasses import strict
from transformers import BertConfig, RobertaConfig

from .early_exit import ExitFields, SkimForSequenceClassificationWithExits
from .models import SkimModel
from .ltp import LTPFields, LTPSelector


@strict
class MagicPyramidBertConfig(BertConfig, LTPFields, ExitFields):
    r"""BERT configuration plus LTP's pruning fields (`LTPFields`) and the early-exit fields (`ExitFields`)."""

    model_type = "magic-pyramid-bert"


@strict
class MagicPyramidRobertaConfig(RobertaConfig, LTPFields, ExitFields):
    r"""RoBERTa configuration plus LTP's pruning fields (`LTPFields`) and the early-exit fields (`ExitFields`)."""

    model_type = "magic-pyramid-roberta"


class MagicPyramidBertModel(SkimModel):
    config_class = MagicPyramidBertConfig
    base_model_prefix = "bert"
    selector_class = LTPSelector


class MagicPyramidBertForSequenceClassification(SkimForSequenceClassificationWithExits):
    config_class = MagicPyramidBertConfig
    base_model_prefix = "bert"
    base_model_class = MagicPyramidBertModel


class MagicPyramidRobertaModel(SkimModel):
    config_class = MagicPyramidRobertaConfig
    base_model_prefix = "roberta"
    selector_class = LTPSelector


class MagicPyramidRobertaForSequenceClassification(SkimForSequenceClassificationWithExits):
    config_class = MagicPyramidRobertaConfig
    base_model_prefix = "roberta"
    base_model_class = MagicPyramidRobertaModel


MagicPyramidBert = MagicPyramidBertForSequenceClassification
