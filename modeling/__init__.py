"""tokenskim models: token skimming, learned token pruning and early exit for BERT/RoBERTa.

Every class here loads any BERT/RoBERTa checkpoint with `from_pretrained`, and checkpoints saved by
these classes load back with `AutoModel*.from_pretrained(path, trust_remote_code=True)`, also where
tokenskim is not installed.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .engine import (
    EncoderResult,
    SkimEncoder,
    SkimForQuestionAnswering,
    SkimForSequenceClassification,
    SkimForTokenClassification,
    SkimModel,
    SkimModelOutput,
    SkimPreTrainedModel,
    TokenSelector,
    keep_ratio_loss,
)
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
    exit_head_macs,
    normalized_entropy,
    self_distillation_loss,
)
from .flops import dense_flops, encoder_flops, flops_ratio, kept_token_ratio
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

_AUTO = {
    "Model": AutoModel,
    "ForSequenceClassification": AutoModelForSequenceClassification,
    "ForQuestionAnswering": AutoModelForQuestionAnswering,
    "ForTokenClassification": AutoModelForTokenClassification,
}


def _register_locally(config_class, *model_classes):
    """With tokenskim installed, Auto classes work without trust_remote_code too."""
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    for cls in model_classes:
        auto = next(a for suffix, a in _AUTO.items() if cls.__name__.endswith(suffix))
        auto.register(config_class, cls, exist_ok=True)


_register_locally(
    TranskimmerBertConfig, TranskimmerBertModel, TranskimmerBertForSequenceClassification,
    TranskimmerBertForQuestionAnswering, TranskimmerBertForTokenClassification,
)
_register_locally(
    TranskimmerRobertaConfig, TranskimmerRobertaModel, TranskimmerRobertaForSequenceClassification,
    TranskimmerRobertaForQuestionAnswering, TranskimmerRobertaForTokenClassification,
)

# LTP, early exit and Magic Pyramid
_register_locally(
    LTPBertConfig, LTPBertModel, LTPBertForSequenceClassification, LTPBertForQuestionAnswering,
    LTPBertForTokenClassification,
)
_register_locally(
    LTPRobertaConfig, LTPRobertaModel, LTPRobertaForSequenceClassification, LTPRobertaForQuestionAnswering,
    LTPRobertaForTokenClassification,
)
_register_locally(EarlyExitBertConfig, EarlyExitBertModel, EarlyExitBertForSequenceClassification)
_register_locally(EarlyExitRobertaConfig, EarlyExitRobertaModel, EarlyExitRobertaForSequenceClassification)
_register_locally(MagicPyramidBertConfig, MagicPyramidBertModel, MagicPyramidBertForSequenceClassification)
_register_locally(MagicPyramidRobertaConfig, MagicPyramidRobertaModel, MagicPyramidRobertaForSequenceClassification)

# STTABT
_register_locally(STTABTBertConfig, STTABTBertModel, STTABTBertForSequenceClassification)
_register_locally(STTABTRobertaConfig, STTABTRobertaModel, STTABTRobertaForSequenceClassification)

# Block-Skim (extractive QA)
_register_locally(BlockSkimBertConfig, BlockSkimBertModel, BlockSkimBertForQuestionAnswering)
_register_locally(BlockSkimRobertaConfig, BlockSkimRobertaModel, BlockSkimRobertaForQuestionAnswering)
