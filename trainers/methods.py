"""Method name -> model class. A method is a function from a checkpoint's config to the class that
loads it (BERT or RoBERTa flavour), plus the config fields it lets the command line set. A method that has
an extractive-QA head names it in `qa_class` (a task whose head is question answering, `--task squad`, picks it).

To add a method: a `model_class` function, an entry in `METHODS`, and its flags in `HYPERPARAMETERS`.
"""

from dataclasses import dataclass

from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoModelForSequenceClassification

from tokenskim.modeling import TranskimmerBertForSequenceClassification, TranskimmerRobertaForSequenceClassification
from tokenskim.modeling import (
    BlockSkimBertForQuestionAnswering,
    BlockSkimRobertaForQuestionAnswering,
    EarlyExitBertForSequenceClassification,
    EarlyExitRobertaForSequenceClassification,
    LTPBertForSequenceClassification,
    LTPRobertaForSequenceClassification,
    MagicPyramidBertForSequenceClassification,
    MagicPyramidRobertaForSequenceClassification,
    TranskimmerBertForQuestionAnswering,
    TranskimmerRobertaForQuestionAnswering,
)

from .data import QUESTION_ANSWERING, SEQUENCE_CLASSIFICATION


def is_roberta_config(config) -> bool:
    """RoBERTa-style checkpoints (roberta, xlm-roberta, transkimmer-roberta, ...) have a different
    embedding and classification head layout from BERT."""
    return "roberta" in (config.model_type or "")


def dense_class(config):
    """The stock transformers model, the baseline users would otherwise run."""
    return AutoModelForSequenceClassification


def transkimmer_class(config):
    return TranskimmerRobertaForSequenceClassification if is_roberta_config(config) else TranskimmerBertForSequenceClassification


# The multi-stage methods; `tokenskim train` runs their stages through trainers/schedules.py
def ltp_class(config):
    return LTPRobertaForSequenceClassification if is_roberta_config(config) else LTPBertForSequenceClassification


def early_exit_class(config):
    return EarlyExitRobertaForSequenceClassification if is_roberta_config(config) else EarlyExitBertForSequenceClassification


def magic_pyramid_class(config):
    return MagicPyramidRobertaForSequenceClassification if is_roberta_config(config) else MagicPyramidBertForSequenceClassification


# Extractive question answering heads
def dense_qa_class(config):
    return AutoModelForQuestionAnswering


def transkimmer_qa_class(config):
    return TranskimmerRobertaForQuestionAnswering if is_roberta_config(config) else TranskimmerBertForQuestionAnswering


def block_skim_class(config):
    return BlockSkimRobertaForQuestionAnswering if is_roberta_config(config) else BlockSkimBertForQuestionAnswering


@dataclass(frozen=True)
class Method:
    model_class: object  # config -> class with `from_pretrained`; None: the method has no classification head
    hyperparameters: tuple = ()  # config fields settable from the command line (keys of HYPERPARAMETERS)
    description: str = ""
    qa_class: object = None  # config -> its extractive-QA class; None: the method has no QA head


METHODS = {
    "dense": Method(dense_class, (), "stock transformers fine-tuning, every token through every layer", dense_qa_class),
    "transkimmer": Method(
        transkimmer_class,
        ("skim_coefficient", "target_keep_ratio", "min_kept_tokens", "keep_threshold", "gumbel_tau", "gumbel_noise",
         "skim_enabled", "skim_bias_init"),
        "Transkimmer: a predictor before each layer skims tokens (Guan et al., ACL 2022)",
        transkimmer_qa_class,
    ),
    "block-skim": Method(
        None, ("skim_coefficient", "skim_enabled", "block_size", "skim_layers", "skim_threshold", "balance_factor"),
        "Block-Skim: a CNN on attention blocks skips context blocks that hold no answer (Guan et al., AAAI 2022); QA only",
        block_skim_class,
    ),
    # multi-stage methods (stages: trainers/schedules.py)
    "ltp": Method(
        ltp_class,
        ("final_threshold", "temperature", "skim_coefficient", "target_keep_ratio", "min_kept_tokens", "threshold_scale"),
        "Learned Token Pruning: tokens receiving little attention leave after a layer's attention (Kim et al., KDD 2022)",
    ),
    "early-exit": Method(
        early_exit_class, ("exit_threshold", "exit_criterion", "exit_patience"),
        "early exit: confident sequences leave after any layer (FastBERT-style exit heads, self-distilled)",
    ),
    "magic-pyramid": Method(
        magic_pyramid_class,
        ("final_threshold", "temperature", "skim_coefficient", "target_keep_ratio", "min_kept_tokens", "threshold_scale",
         "exit_threshold", "exit_criterion", "exit_patience"),
        "Magic Pyramid: Learned Token Pruning plus early exit (He et al., 2021)",
    ),
}

def parse_bool(text: str) -> bool:
    return text.lower() in ("1", "true", "yes")


# config field -> (type, help). The flag is `--field-name`; unset flags keep the checkpoint's value.
def parse_layers(text: str) -> list:
    """`"2,3,4"` -> `[2, 3, 4]`."""
    return [int(v) for v in str(text).split(",") if v.strip()]


HYPERPARAMETERS = {
    "skim_coefficient": (float, "Transkimmer: weight lambda of the skim loss (kept-token ratio); larger skims more; "
                         "Block-Skim: weight alpha of the block loss"),
    "target_keep_ratio": (float, "Transkimmer/LTP/Magic Pyramid: train to this kept-token ratio (budget |ratio - r|); "
                          "unset: the paper's loss, which pushes without end"),
    "min_kept_tokens": (int, "Transkimmer/LTP/Magic Pyramid: every sequence keeps at least this many tokens per layer"),
    "keep_threshold": (float, "Transkimmer: inference keeps a token where P(keep) >= this (default 0.5)"),
    "threshold_scale": (float, "LTP/Magic Pyramid: inference prunes below this times the learned thresholds (default 1)"),
    "gumbel_tau": (float, "Transkimmer: Gumbel-softmax temperature in training"),
    "gumbel_noise": (parse_bool,
                     "Transkimmer: false trains on the deterministic decisions inference takes (straight-through)"),
    "skim_enabled": (parse_bool, "Transkimmer/Block-Skim: false runs the engine with every token kept"),
    "skim_bias_init": (float, "Transkimmer: new predictors start with keep/skip logits +/- this (default 5: keep all)"),
    # LTP, early exit, Magic Pyramid
    "final_threshold": (float, "LTP/Magic Pyramid: threshold theta_L of the last layer (layer l uses theta_L * l / L + a learned offset)"),
    "temperature": (float, "LTP/Magic Pyramid: temperature T of the soft-pruning gate sigmoid((s - theta) / T)"),
    "exit_threshold": (float, "early exit/Magic Pyramid: tau, exit when normalized entropy <= tau (changeable at inference)"),
    "exit_criterion": (str, "early exit/Magic Pyramid: entropy (default) or patience (PABEE)"),
    "exit_patience": (int, "early exit/Magic Pyramid: layers in a row with the same prediction, for --exit-criterion patience"),
    # Block-Skim
    "block_size": (int, "Block-Skim: tokens per block (default 32)"),
    "skim_layers": (parse_layers, "Block-Skim: comma-separated 0-based layers whose attention scores the blocks "
                    "(default: every layer but the last)"),
    "skim_threshold": (float, "Block-Skim: tau, inference skips a block where P(keep) < tau (default 0.5)"),
    "balance_factor": (float, "Block-Skim: beta, the weight of answer blocks in the block loss (default 20)"),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        from .errors import UsageError  # bad user input: the command line reports it in one line

        raise UsageError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
    return METHODS[name]


def model_class_of(method: str, head: str = SEQUENCE_CLASSIFICATION):
    """The method's function config -> class for the task's head; a clear error when it has none."""
    pick = (lambda m: m.qa_class) if head == QUESTION_ANSWERING else (lambda m: m.model_class)
    if pick(get_method(method)) is None:
        from .errors import UsageError

        has = [name for name, m in METHODS.items() if pick(m) is not None]
        raise UsageError(f"--method {method} has no {head} head; methods with one: {', '.join(has)}")
    return pick(get_method(method))


def load_model(method: str, model_name_or_path: str, hyperparameters: dict | None = None,
               head: str = SEQUENCE_CLASSIFICATION, **config_kwargs):
    """Loads `model_name_or_path` into the method's class for the task's head (`data.SEQUENCE_CLASSIFICATION` or
    `data.QUESTION_ANSWERING`).

    hyperparameters: method config fields (None values are ignored, so unset flags keep the checkpoint's
    values); config_kwargs: task fields such as `num_labels`, `id2label`, `label2id`, `problem_type`.
    """
    spec = get_method(method)
    hyperparameters = {k: v for k, v in (hyperparameters or {}).items() if v is not None}
    unknown = set(hyperparameters) - set(spec.hyperparameters)
    if unknown:
        raise ValueError(f"method {method!r} takes no {sorted(unknown)}; it takes {list(spec.hyperparameters)}")
    class_of = model_class_of(method, head)
    config = AutoConfig.from_pretrained(model_name_or_path)
    cls = class_of(config)
    return cls.from_pretrained(model_name_or_path, **config_kwargs, **hyperparameters)


def method_of(model) -> str:
    """The method a loaded model belongs to, from its class (for model cards and reports)."""
    name = type(model).__name__
    for method in METHODS:
        if method != "dense" and name.lower().startswith(method.replace("-", "").lower()):
            return method
    return "dense"
