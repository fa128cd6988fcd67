"""tokenskim models: token skimming, learned token pruning and early exit for BERT/RoBERTa.

Every class here loads any BERT/RoBERTa checkpoint with `from_pretrained`, and checkpoints saved by
these classes load back with `AutoModel*.from_pretrained(path, trust_remote_code=True)`, also where
tokenskim is not installed.
"""

from transformers import AutoConfig

from .engine import EncoderResult, SkimEncoder
from .heads import SkimForQuestionAnswering, SkimForSequenceClassification, SkimForTokenClassification
from .models import FAMILIES, SkimModel, SkimModelOutput, SkimPreTrainedModel
from .selector import TokenSelector, keep_ratio_loss
from .block_skim import (
    BlockPredictor,
    BlockSkimBertConfig,
    BlockSkimBertForQuestionAnswering,
    BlockSkimBertModel,
    BlockSkimForQA,
    BlockSkimRobertaConfig,
    BlockSkimRobertaForQuestionAnswering,
    BlockSkimRobertaModel,
    BlockSkimSelector,
)
from .early_exit import (
    EarlyExitBertConfig,
    EarlyExitBertForSequenceClassification,
    EarlyExitBertModel,
    EarlyExitRobertaConfig,
    EarlyExitRobertaForSequenceClassification,
    EarlyExitRobertaModel,
    ExitDecision,
    ExitHead,
    ExitHeads,
    SkimForSequenceClassificationWithExits,
    exit_counts,
    normalized_entropy,
    self_distillation_loss,
)
from .flops import dense_flops, encoder_flops, exit_head_macs, flops_ratio, kept_token_ratio, model_macs
from .ltp import (
    LTPBertConfig,
    LTPBertForQuestionAnswering,
    LTPBertForSequenceClassification,
    LTPBertForTokenClassification,
    LTPBertModel,
    LTPRobertaConfig,
    LTPRobertaForQuestionAnswering,
    LTPRobertaForSequenceClassification,
    LTPRobertaForTokenClassification,
    LTPRobertaModel,
    LTPSelector,
    threshold_parameters,
)
from .magic_pyramid import (
    MagicPyramidBert,
    MagicPyramidBertConfig,
    MagicPyramidBertForSequenceClassification,
    MagicPyramidBertModel,
    MagicPyramidRobertaConfig,
    MagicPyramidRobertaForSequenceClassification,
    MagicPyramidRobertaModel,
)
from .sttabt import (
    ApproxNet,
    STTABTBertConfig,
    STTABTBertForSequenceClassification,
    STTABTBertModel,
    STTABTRobertaConfig,
    STTABTRobertaForSequenceClassification,
    STTABTRobertaModel,
    STTABTSelector,
    back_track,
)
from .transkimmer import (
    TranskimmerBertConfig,
    TranskimmerBertForQuestionAnswering,
    TranskimmerBertForSequenceClassification,
    TranskimmerBertForTokenClassification,
    TranskimmerBertModel,
    TranskimmerRobertaConfig,
    TranskimmerRobertaForQuestionAnswering,
    TranskimmerRobertaForSequenceClassification,
    TranskimmerRobertaForTokenClassification,
    TranskimmerRobertaModel,
    TranskimmerSelector,
)



def _register_locally():
    """With tokenskim installed, Auto classes work without trust_remote_code too."""
    import transformers

    for config_class, classes in FAMILIES.items():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        for auto, cls in classes.items():
            getattr(transformers, auto).register(config_class, cls, exist_ok=True)


_register_locally()
