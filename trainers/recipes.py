"""The recipe table: for each method, its model classes, its training stages, the config fields the command line
may set and a description. `tokenskim train --method NAME` runs any recipe the same way (trainers/train.py).

| method | heads (BERT and RoBERTa flavours) | stages |
|---|---|---|
| dense | sequence classification, question answering (stock transformers) | finetune |
| transkimmer | sequence classification, question answering | skim |
| ltp | sequence classification, question answering | finetune, soft-pruning, hard-pruning |
| early-exit | sequence classification | finetune, exit-heads |
| magic-pyramid | sequence classification | finetune, soft-pruning, hard-pruning, exit-heads |
| block-skim | question answering | skim |
| sttabt | sequence classification | finetune, approxnet, masking |

What each stage trains: trainers/stages.py. To add a method: its classes, its stages (existing ones or new), an
entry in `RECIPES`, and its config fields in `HYPERPARAMETERS`.
"""

import dataclasses

from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoModelForSequenceClassification

from tokenskim.modeling import (
    BlockSkimBertForQuestionAnswering,
    BlockSkimRobertaForQuestionAnswering,
    EarlyExitBertForSequenceClassification,
    EarlyExitRobertaForSequenceClassification,
    LTPBertForQuestionAnswering,
    LTPBertForSequenceClassification,
    LTPRobertaForQuestionAnswering,
    LTPRobertaForSequenceClassification,
    MagicPyramidBertForSequenceClassification,
    MagicPyramidRobertaForSequenceClassification,
    STTABTBertForSequenceClassification,
    STTABTRobertaForSequenceClassification,
    TranskimmerBertForQuestionAnswering,
    TranskimmerBertForSequenceClassification,
    TranskimmerRobertaForQuestionAnswering,
    TranskimmerRobertaForSequenceClassification,
)

from . import stages
from .data import QUESTION_ANSWERING, SEQUENCE_CLASSIFICATION
from .errors import UsageError


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One method.

    description: one line for help texts.
    classes: head kind -> `(class for BERT-style checkpoints, class for RoBERTa-style ones)`, each with
        `from_pretrained`.
    stages: the training stages in order (trainers/stages.py).
    hyperparameters: config fields the command line may set (keys of `HYPERPARAMETERS`).
    defaults: the recipe's values of config fields, used when the command line leaves them unset and the
        starting checkpoint does not have them.
    """

    description: str
    classes: dict
    stages: tuple
    hyperparameters: tuple = ()
    defaults: dict = dataclasses.field(default_factory=dict)


TRANSKIMMER_FIELDS = ("skim_coefficient", "target_keep_ratio", "min_kept_tokens", "keep_threshold", "gumbel_tau",
                      "gumbel_noise", "skim_enabled", "skim_bias_init", "skim_predictor_size",
                      "skim_first_layer")
LTP_FIELDS = ("threshold_space", "final_threshold", "temperature", "skim_coefficient", "target_keep_ratio",
              "min_kept_tokens", "threshold_scale", "prune_first_layer")
EXIT_FIELDS = ("exit_threshold", "exit_criterion", "exit_patience")

RECIPES = {
    "dense": Recipe(
        "stock transformers fine-tuning, every token through every layer",
        {SEQUENCE_CLASSIFICATION: (AutoModelForSequenceClassification, AutoModelForSequenceClassification),
         QUESTION_ANSWERING: (AutoModelForQuestionAnswering, AutoModelForQuestionAnswering)},
        (stages.DENSE_FINETUNE,),
    ),
    "transkimmer": Recipe(
        "a predictor before each layer skims tokens (Transkimmer, Guan et al., ACL 2022)",
        {SEQUENCE_CLASSIFICATION: (TranskimmerBertForSequenceClassification, TranskimmerRobertaForSequenceClassification),
         QUESTION_ANSWERING: (TranskimmerBertForQuestionAnswering, TranskimmerRobertaForQuestionAnswering)},
        (stages.SKIM,),
        TRANSKIMMER_FIELDS,
        # no predictor before layer 0 and 64-wide predictors: on full SST-2, 88.53 at 2.12x against 86.70 at 1.94x
        # for the paper's predictors (README, "Budget training on the full SST-2 training set")
        defaults={"skim_first_layer": False, "skim_predictor_size": 64},
    ),
    "ltp": Recipe(
        "tokens receiving little attention leave after a layer's attention (Learned Token Pruning, Kim et al., KDD 2022)",
        {SEQUENCE_CLASSIFICATION: (LTPBertForSequenceClassification, LTPRobertaForSequenceClassification),
         QUESTION_ANSWERING: (LTPBertForQuestionAnswering, LTPRobertaForQuestionAnswering)},
        (stages.FINETUNE, stages.SOFT_PRUNING, stages.HARD_PRUNING),
        LTP_FIELDS,
        defaults={"threshold_space": "log-relative"},
    ),
    "early-exit": Recipe(
        "confident sequences leave after any layer (FastBERT-style exit heads, self-distilled)",
        {SEQUENCE_CLASSIFICATION: (EarlyExitBertForSequenceClassification, EarlyExitRobertaForSequenceClassification)},
        (stages.FINETUNE, stages.EXIT_HEADS),
        EXIT_FIELDS,
    ),
    "magic-pyramid": Recipe(
        "Learned Token Pruning plus early exit (Magic Pyramid, He et al., 2021)",
        {SEQUENCE_CLASSIFICATION: (MagicPyramidBertForSequenceClassification, MagicPyramidRobertaForSequenceClassification)},
        (stages.FINETUNE, stages.SOFT_PRUNING, stages.HARD_PRUNING, stages.EXIT_HEADS),
        LTP_FIELDS + EXIT_FIELDS,
        defaults={"threshold_space": "log-relative"},
    ),
    "block-skim": Recipe(
        "extractive QA: a small CNN over attention skips 32-token context blocks (Block-Skim, Guan et al., AAAI 2022)",
        {QUESTION_ANSWERING: (BlockSkimBertForQuestionAnswering, BlockSkimRobertaForQuestionAnswering)},
        (stages.SKIM,),
        ("skim_coefficient", "skim_enabled", "skim_threshold", "balance_factor", "block_size", "skim_layers"),
    ),
    "sttabt": Recipe(
        "a small ApproxNet's attention, back-tracked from the output, picks every layer's tokens up front "
        "(STTABT, Lee et al., ICLR 2023)",
        {SEQUENCE_CLASSIFICATION: (STTABTBertForSequenceClassification, STTABTRobertaForSequenceClassification)},
        (stages.STTABT_FINETUNE, stages.APPROXNET, stages.MASKING),
        ("skim_coefficient", "target_keep_ratio", "skim_enabled", "approx_factor", "concrete_temperature",
         "keep_logit_init", "attention_distill_weight", "hidden_distill_weight", "prediction_distill_weight"),
        # results/sttabt_sst2.py (SST-2): a strong keep-ratio term toward 25% of the tokens, keep logits from 2
        defaults={"skim_coefficient": 5.0, "target_keep_ratio": 0.25, "keep_logit_init": 2.0},
    ),
}


def parse_bool(text: str) -> bool:
    return text.lower() in ("1", "true", "yes")


def parse_int_list(text: str) -> list:
    """`"0,2,4"` -> `[0, 2, 4]`."""
    return [int(v) for v in text.split(",") if v.strip()]


# config field -> (type, help). The flag is `--field-name`; unset flags keep the checkpoint's value (train.py adds
# which methods take each flag).
HYPERPARAMETERS = {
    "skim_coefficient": (float, "weight of the auxiliary loss: the kept-token term (Transkimmer's lambda, LTP, STTABT; "
                         "larger skims more) or Block-Skim's block loss (alpha)"),
    "target_keep_ratio": (float, "train to this kept-token ratio (a budget term around it); unset: the paper's loss, "
                          "which pushes without end"),
    "min_kept_tokens": (int, "every sequence keeps at least this many tokens per layer"),
    "keep_threshold": (float, "Transkimmer: keep a token where P(keep) >= this, at inference and in deterministic "
                              "training (default 0.5)"),
    "threshold_scale": (float, "LTP: inference and the hard-pruning stage prune below this times the learned "
                               "thresholds (default 1)"),
    "gumbel_tau": (float, "Transkimmer: Gumbel-softmax temperature in training"),
    "gumbel_noise": (parse_bool,
                     "Transkimmer: false trains on the deterministic decisions inference takes (straight-through)"),
    "skim_enabled": (parse_bool, "false runs the engine with every token kept"),
    "skim_bias_init": (float, "Transkimmer: new predictors start with keep/skip logits +/- this (default 5: keep all)"),
    "skim_first_layer": (parse_bool, "Transkimmer: false lets every token through layer 0, so the first decision reads "
                                     "layer 0's output (the default for models this command starts; the paper's: true)"),
    "skim_predictor_size": (int, "Transkimmer: width of new predictors' hidden layer (default for models this command "
                                 "starts: 64, a sixth of the paper's cost on MiniLM; 0: the hidden size, the paper's). A narrow "
                                 "predictor leaves the keep-biased init more slowly (README, IMDB)"),
    "threshold_space": (str, "LTP: what thresholds compare: attention (received attention, the paper's) or "
                             "log-relative (log of received attention times the sequence's kept tokens; the default "
                             "for models this command starts)"),
    "final_threshold": (float, "LTP: threshold theta_L of the last layer (layer l uses theta_L * l / L + a learned offset; "
                               "default 0.01 for attention, 1.0 for log-relative)"),
    "prune_first_layer": (parse_bool, "LTP: true lets layer 0 prune too (its threshold starts at theta_L / 2L; the "
                                      "paper's layer 0 never prunes)"),
    "temperature": (float, "LTP: temperature T of the soft-pruning gate sigmoid((s - theta) / T) "
                           "(default 1e-3 for attention, 0.25 for log-relative)"),
    "exit_threshold": (float, "early exit: tau, exit when normalized entropy <= tau (changeable at inference)"),
    "exit_criterion": (str, "early exit: entropy (default) or patience (PABEE)"),
    "exit_patience": (int, "early exit: layers in a row with the same prediction, for --exit-criterion patience"),
    "skim_threshold": (float, "Block-Skim: inference skips a block where P(keep) < this (default 0.5)"),
    "balance_factor": (float, "Block-Skim: class weight beta of answer blocks in the block loss (default 20)"),
    "block_size": (int, "Block-Skim: tokens per block (default 32)"),
    "skim_layers": (parse_int_list, "Block-Skim: 0-based layers whose attention scores the blocks, comma-separated "
                    "(default: every layer but the last)"),
    "approx_factor": (int, "STTABT: ApproxNet's hidden and FFN sizes are the model's divided by this (default 4)"),
    "concrete_temperature": (float, "STTABT: temperature T of the Concrete keep masks in training (default 0.1)"),
    "keep_logit_init": (float, "STTABT: every layer's keep logit p_l at the start of the masking stage (recipe: 2)"),
    "attention_distill_weight": (float, "STTABT: weight of ApproxNet's attention KL (default 1)"),
    "hidden_distill_weight": (float, "STTABT: weight of ApproxNet's hidden-state MSE (default 1)"),
    "prediction_distill_weight": (float, "STTABT: weight of ApproxNet's prediction KL (default 1)"),
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise UsageError(f"unknown method {name!r}; known methods: {', '.join(RECIPES)}")
    return RECIPES[name]


def methods_taking(field: str) -> list:
    """The methods whose command line sets config field `field`."""
    return [name for name, recipe in RECIPES.items() if field in recipe.hyperparameters]


def method_of_class(cls) -> str:
    """The method whose recipe lists `cls`; "dense" for any other class (a stock transformers model)."""
    for name, recipe in RECIPES.items():
        if name != "dense" and any(cls in pair for pair in recipe.classes.values()):
            return name
    return "dense"


def is_roberta_config(config) -> bool:
    """RoBERTa-style checkpoints (roberta, xlm-roberta, transkimmer-roberta, ...) have a different
    embedding and classification head layout from BERT."""
    return "roberta" in (config.model_type or "")


def model_classes(method: str, head: str = SEQUENCE_CLASSIFICATION) -> tuple:
    """`(BERT-style class, RoBERTa-style class)` of `method` for the task's head kind (`TaskSpec.head`); a clear
    error when the method has no such head."""
    recipe = get_recipe(method)
    if head not in recipe.classes:
        with_head = [name for name, r in RECIPES.items() if head in r.classes]
        raise UsageError(f"--method {method} has no {head} head (it has: {', '.join(recipe.classes)}); "
                         f"methods with one: {', '.join(with_head)}")
    return recipe.classes[head]


def model_class(method: str, config, head: str = SEQUENCE_CLASSIFICATION):
    """The class of `method` for a checkpoint with `config` and the task's head kind."""
    bert, roberta = model_classes(method, head)
    return roberta if is_roberta_config(config) else bert


def starting_hyperparameters(method: str, given: dict, model_name_or_path: str) -> dict:
    """The config fields every stage loads with: the flags given (None: unset), then the recipe's defaults for
    fields the starting checkpoint does not have (a checkpoint that has one keeps its value). A checkpoint of the
    method's own model type keeps its architecture: a field it lacks (saved before the field existed) takes the
    config class's default, the paper's, not the recipe's."""
    recipe = get_recipe(method)
    values = {k: v for k, v in given.items() if v is not None}
    defaults = {k: v for k, v in recipe.defaults.items() if k not in values}
    if defaults:
        config = AutoConfig.from_pretrained(model_name_or_path).to_dict()
        own_types = {cls.config_class.model_type for pair in recipe.classes.values() for cls in pair}
        if config.get("model_type") not in own_types:
            values.update({k: config.get(k, v) for k, v in defaults.items()})
    return values


def load_model(method: str, model_name_or_path: str, hyperparameters: dict | None = None,
               head: str = SEQUENCE_CLASSIFICATION, **config_kwargs):
    """Loads `model_name_or_path` into the method's class for `head`.

    hyperparameters: method config fields (None values are ignored, so unset flags keep the checkpoint's
    values); config_kwargs: task fields such as `num_labels`, `id2label`, `label2id`, `problem_type`.
    """
    recipe = get_recipe(method)
    hyperparameters = {k: v for k, v in (hyperparameters or {}).items() if v is not None}
    unknown = set(hyperparameters) - set(recipe.hyperparameters)
    if unknown:
        raise ValueError(f"method {method!r} takes no {sorted(unknown)}; it takes {list(recipe.hyperparameters)}")
    cls = model_class(method, AutoConfig.from_pretrained(model_name_or_path), head)
    return cls.from_pretrained(model_name_or_path, **config_kwargs, **hyperparameters)
