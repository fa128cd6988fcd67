"""Method name -> model class. A method is a function from a checkpoint's config to the class that
loads it (BERT or RoBERTa flavour), plus the config fields it lets the command line set.

To add a method: a `model_class` function, an entry in `METHODS`, and its flags in `HYPERPARAMETERS`.
"""

from dataclasses import dataclass

from transformers import AutoConfig, AutoModelForSequenceClassification

from tokenskim.modeling import TranskimmerBertForSequenceClassification, TranskimmerRobertaForSequenceClassification
from tokenskim.modeling import (
    EarlyExitBertForSequenceClassification,
    EarlyExitRobertaForSequenceClassification,
    LTPBertForSequenceClassification,
    LTPRobertaForSequenceClassification,
    MagicPyramidBertForSequenceClassification,
    MagicPyramidRobertaForSequenceClassification,
)


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


@dataclass(frozen=True)
class Method:
    model_class: object  # config -> class with `from_pretrained`
    hyperparameters: tuple = ()  # config fields settable from the command line (keys of HYPERPARAMETERS)
    description: str = ""


METHODS = {
    "dense": Method(dense_class, (), "stock transformers fine-tuning, every token through every layer"),
    "transkimmer": Method(
        transkimmer_class,
        ("skim_coefficient", "target_keep_ratio", "min_kept_tokens", "keep_threshold", "gumbel_tau", "gumbel_noise",
         "skim_enabled", "skim_bias_init"),
        "Transkimmer: a predictor before each layer skims tokens (Guan et al., ACL 2022)",
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
HYPERPARAMETERS = {
    "skim_coefficient": (float, "Transkimmer: weight lambda of the skim loss (kept-token ratio); larger skims more"),
    "target_keep_ratio": (float, "Transkimmer/LTP/Magic Pyramid: train to this kept-token ratio (budget |ratio - r|); "
                          "unset: the paper's loss, which pushes without end"),
    "min_kept_tokens": (int, "Transkimmer/LTP/Magic Pyramid: every sequence keeps at least this many tokens per layer"),
    "keep_threshold": (float, "Transkimmer: inference keeps a token where P(keep) >= this (default 0.5)"),
    "threshold_scale": (float, "LTP/Magic Pyramid: inference prunes below this times the learned thresholds (default 1)"),
    "gumbel_tau": (float, "Transkimmer: Gumbel-softmax temperature in training"),
    "gumbel_noise": (parse_bool,
                     "Transkimmer: false trains on the deterministic decisions inference takes (straight-through)"),
    "skim_enabled": (parse_bool, "Transkimmer: false runs the engine with every token kept"),
    "skim_bias_init": (float, "Transkimmer: new predictors start with keep/skip logits +/- this (default 5: keep all)"),
    # LTP, early exit, Magic Pyramid
    "final_threshold": (float, "LTP/Magic Pyramid: threshold theta_L of the last layer (layer l uses theta_L * l / L + a learned offset)"),
    "temperature": (float, "LTP/Magic Pyramid: temperature T of the soft-pruning gate sigmoid((s - theta) / T)"),
    "exit_threshold": (float, "early exit/Magic Pyramid: tau, exit when normalized entropy <= tau (changeable at inference)"),
    "exit_criterion": (str, "early exit/Magic Pyramid: entropy (default) or patience (PABEE)"),
    "exit_patience": (int, "early exit/Magic Pyramid: layers in a row with the same prediction, for --exit-criterion patience"),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        from .errors import UsageError  # bad user input: the command line reports it in one line

        raise UsageError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
    return METHODS[name]


def load_model(method: str, model_name_or_path: str, hyperparameters: dict | None = None, **config_kwargs):
    """Loads `model_name_or_path` into the method's class.

    hyperparameters: method config fields (None values are ignored, so unset flags keep the checkpoint's
    values); config_kwargs: task fields such as `num_labels`, `id2label`, `label2id`, `problem_type`.
    """
    spec = get_method(method)
    hyperparameters = {k: v for k, v in (hyperparameters or {}).items() if v is not None}
    unknown = set(hyperparameters) - set(spec.hyperparameters)
    if unknown:
        raise ValueError(f"method {method!r} takes no {sorted(unknown)}; it takes {list(spec.hyperparameters)}")
    config = AutoConfig.from_pretrained(model_name_or_path)
    cls = spec.model_class(config)
    return cls.from_pretrained(model_name_or_path, **config_kwargs, **hyperparameters)


def method_of(model) -> str:
    """The method a loaded model belongs to, from its class (for model cards and reports)."""
    name = type(model).__name__
    for method in METHODS:
        if method != "dense" and name.lower().startswith(method.replace("-", "").lower()):
            return method
    return "dense"
