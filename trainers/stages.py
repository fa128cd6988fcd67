"""Training stages: the steps a method's recipe (trainers/recipes.py) runs in order. A stage says which config
fields it sets, which parameters train (and how new ones start), and its default epochs and learning rates.

| stage | trains | config during the stage | used by |
|---|---|---|---|
| finetune | backbone + final head | skimming off, exits off | dense, ltp, early-exit, magic-pyramid, sttabt |
| skim | everything: backbone, head and token selector (own learning rate: `--selector-learning-rate`) | as loaded | transkimmer, block-skim |
| soft-pruning | backbone + head + LTP thresholds (own learning rate) | `pruning_stage="soft"` | ltp, magic-pyramid |
| hard-pruning | backbone + head, thresholds frozen | `pruning_stage="hard"` | ltp, magic-pyramid |
| exit-heads | exit heads only (self-distillation from the final head), pruning active | exits on | early-exit, magic-pyramid |
| approxnet | STTABT's ApproxNet only, by distillation from the dense model; every token kept | keep-ratio term off | sttabt |
| masking | backbone + head + keep probabilities (own learning rate), ApproxNet frozen | Concrete masks on | sttabt |
"""

import dataclasses
from collections.abc import Callable

import torch

from tokenskim.modeling import threshold_parameters

# STTABT's keep logits while ApproxNet learns: every token kept (sigmoid((10 + logit s) / T) ~ 1), so the task
# loss does not move ApproxNet through the masks.
KEEP_ALL_LOGIT = 10.0


def set_trainable(model, trainable: bool, parameters=None):
    """`requires_grad = trainable` on `parameters` (default: all of the model's)."""
    for p in model.parameters() if parameters is None else parameters:
        p.requires_grad = trainable


def everything(model, options):
    """Every parameter trains, except exit heads, which are unused before their own stage: they stay out of the
    optimizer."""
    set_trainable(model, True)
    if hasattr(model, "exit_heads"):
        set_trainable(model, False, model.exit_heads.parameters())


def thresholds_frozen(model, options):
    """As `everything`, with LTP's thresholds frozen (they train in the soft-pruning stage only)."""
    everything(model, options)
    set_trainable(model, False, threshold_parameters(model))


def exit_heads_only(model, options):
    """Only the exit heads train (self-distillation); `options["exit_head_init"] == "classifier"` starts them as
    copies of the final head (FastBERT's is "random")."""
    if options.get("exit_head_init", "classifier") == "classifier":
        model.init_exit_heads_from_classifier()
    model.freeze_for_exit_training()


@torch.no_grad()
def approxnet_only(model, options):
    """Only STTABT's ApproxNet trains; the keep logits are set to keep every token meanwhile."""
    selector = model.base_model.selector
    selector.keep_logits.fill_(KEEP_ALL_LOGIT)
    set_trainable(model, False)
    set_trainable(model, True, selector.approx.parameters())


@torch.no_grad()
def approxnet_frozen(model, options):
    """Everything but STTABT's ApproxNet trains; the keep logits restart from `config.keep_logit_init`."""
    selector = model.base_model.selector
    selector.keep_logits.fill_(float(model.config.keep_logit_init))
    set_trainable(model, True)
    set_trainable(model, False, selector.approx.parameters())


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage.

    name: its folder is `output-dir/stage-<index>-<name>` in a recipe of several stages.
    config: config fields set before the stage, where the model's config has them (they win over the flags).
    prepare: `prepare(model, options)` sets which parameters train and the start values the stage needs;
        options: the command's stage options (`exit_head_init`).
    epochs, learning_rate: the stage's defaults (None: `--num-train-epochs`, `--learning-rate`); `--stage-epochs`
        and `--stage-learning-rates` override them.
    tunes_selector: the token selector trains here, so `--selector-learning-rate` (default:
        `selector_learning_rate`, else the stage's learning rate) and `--skim-warmup-steps` apply.
    """

    name: str
    config: dict = dataclasses.field(default_factory=dict)
    prepare: Callable = everything
    epochs: float | None = None
    learning_rate: float | None = None
    tunes_selector: bool = False
    selector_learning_rate: float | None = None
    distills: bool = False


def prepare_stage(model, stage: Stage, options: dict | None = None):
    """Sets the stage's config fields and which parameters train. Returns the model."""
    for field, value in stage.config.items():
        if hasattr(model.config, field):
            setattr(model.config, field, value)
    stage.prepare(model, options or {})
    return model


# The stages of the Magic Pyramid paper (Appendix C and Table 4: epochs on AG News/Yelp), LTP's two-stage pruning
# and FastBERT's two steps.
FINETUNE = Stage("finetune", {"skim_enabled": False, "exit_enabled": False}, thresholds_frozen, epochs=3)
SOFT_PRUNING = Stage("soft-pruning", {"skim_enabled": True, "pruning_stage": "soft", "exit_enabled": False},
                     everything, epochs=1, tunes_selector=True, distills=True)
HARD_PRUNING = Stage("hard-pruning", {"skim_enabled": True, "pruning_stage": "hard", "exit_enabled": False},
                     thresholds_frozen, epochs=2, distills=True)
# skim_enabled switches exits too, and the finetune stage turned it off. The heads train alone at 5e-3: at 5e-4 for
# half an epoch the heads after layers 0-3 of an AG News Magic Pyramid stayed near uniform (normalized entropy 0.998)
# and no example left before the last layer; at 5e-3 for an epoch the heads after layers 2 and 3 agreed with the
# final classifier on 84% and 96% of examples (README, "Magic Pyramid with a budget on AG News").
EXIT_HEADS = Stage("exit-heads", {"skim_enabled": True, "exit_enabled": True}, exit_heads_only, epochs=2,
                   learning_rate=5e-3)

# One-stage methods: the command's --num-train-epochs and --learning-rate.
DENSE_FINETUNE = Stage("finetune")
SKIM = Stage("skim", tunes_selector=True, distills=True)

# STTABT (results/sttabt_sst2.py, SST-2 with MiniLM-L6 on 20,000 training rows): a dense fine-tune at 5e-5,
# ApproxNet's distillation at 1e-3 on half as many rows, then masked training at 3e-5 with the keep logits at 0.05.
STTABT_FINETUNE = dataclasses.replace(FINETUNE, epochs=1, learning_rate=5e-5)
APPROXNET = Stage("approxnet", {"skim_enabled": True, "skim_coefficient": 0.0}, approxnet_only, epochs=0.5,
                  learning_rate=1e-3)
MASKING = Stage("masking", {"skim_enabled": True}, approxnet_frozen, epochs=1, learning_rate=3e-5,
                tunes_selector=True, selector_learning_rate=0.05, distills=True)
