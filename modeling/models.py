"""The generic tokenskim models every method family builds on: Hub plumbing and family registration
(`SkimPreTrainedModel`), the base model (`SkimModel`: embeddings + the skimming encoder + pooler) and the outputs.
The task heads are in `heads.py`."""

from dataclasses import dataclass
from functools import wraps

import torch
from transformers import PreTrainedModel, RobertaConfig
from transformers import initialization as init  # leaves weights loaded by from_pretrained alone
from transformers.modeling_outputs import ModelOutput
from transformers.models.bert.modeling_bert import BertEmbeddings, BertPooler
from transformers.models.roberta.modeling_roberta import RobertaEmbeddings

from .engine import SkimEncoder, first_real, is_tracing
from .selector import KEEP_ALL, TokenSelector


def returns_tuple_unless_return_dict(forward):
    """transformers' `return_dict` contract for a model's `forward`.

    `return_dict=False` (the argument, else `config.return_dict`) returns what the stock model returns: the
    non-None values of the output's `stock_fields`, e.g. `loss, logits = model(..., labels=y, return_dict=False)`.
    tokenskim's own fields (`kept_tokens`, ...) come with the `ModelOutput` only. The wrapper keeps the real
    signature visible (`inspect.signature` follows `__wrapped__`), which Trainer reads.
    """

    @wraps(forward)
    def wrapper(self, *args, return_dict=None, **kwargs):
        out = forward(self, *args, **kwargs)
        if return_dict is None:
            return_dict = self.config.return_dict
        if return_dict:
            return out
        return tuple(getattr(out, k) for k in out.stock_fields if getattr(out, k) is not None)

    return wrapper


@dataclass
class SkimModelOutput(ModelOutput):
    """Base model output. `last_hidden_state` is full length `[batch, seq, hidden]`; `cls_hidden_state`
    `[batch, hidden]` each row's first real token (its CLS, whatever the padding side) in the last layer;
    `kept_tokens` and `ffn_tokens` `[batch, layers]`; `skim_loss` a scalar in training mode (None otherwise);
    `token_layers`, `token_ffn_layers` and `records` as in `EncoderResult`."""

    stock_fields = ("last_hidden_state", "pooler_output")

    last_hidden_state: torch.Tensor = None
    pooler_output: torch.Tensor = None
    cls_hidden_state: torch.Tensor = None
    skim_loss: torch.Tensor = None
    kept_tokens: torch.Tensor = None
    ffn_tokens: torch.Tensor = None
    exit_layer: torch.Tensor = None
    exit_logits: torch.Tensor = None
    layer_cls: torch.Tensor = None
    token_layers: torch.Tensor = None
    token_ffn_layers: torch.Tensor = None
    records: list = None


@dataclass
class SkimSequenceClassifierOutput(ModelOutput):
    """`loss` = task loss + the method's weighted auxiliary loss; `logits` `[batch, labels]`; the token counts as in
    `SkimModelOutput`."""

    stock_fields = ("loss", "logits")

    loss: torch.Tensor = None
    logits: torch.Tensor = None
    skim_loss: torch.Tensor = None
    kept_tokens: torch.Tensor = None
    ffn_tokens: torch.Tensor = None
    exit_layer: torch.Tensor = None
    token_layers: torch.Tensor = None
    token_ffn_layers: torch.Tensor = None


@dataclass
class SkimQuestionAnsweringOutput(ModelOutput):
    stock_fields = ("loss", "start_logits", "end_logits")

    loss: torch.Tensor = None
    start_logits: torch.Tensor = None
    end_logits: torch.Tensor = None
    skim_loss: torch.Tensor = None
    kept_tokens: torch.Tensor = None
    ffn_tokens: torch.Tensor = None
    token_layers: torch.Tensor = None
    token_ffn_layers: torch.Tensor = None


@dataclass
class SkimTokenClassifierOutput(ModelOutput):
    stock_fields = ("loss", "logits")

    loss: torch.Tensor = None
    logits: torch.Tensor = None
    skim_loss: torch.Tensor = None
    kept_tokens: torch.Tensor = None
    ffn_tokens: torch.Tensor = None
    token_layers: torch.Tensor = None
    token_ffn_layers: torch.Tensor = None


def is_roberta(config) -> bool:
    return isinstance(config, RobertaConfig)


AUTO_CLASS_OF_HEAD = {
    "Model": "AutoModel",
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForQuestionAnswering": "AutoModelForQuestionAnswering",
    "ForTokenClassification": "AutoModelForTokenClassification",
}

FAMILIES: dict = {}  # config class -> {Auto class name: model class}, filled as the family classes are defined


def family_auto_map(config_class) -> dict:
    """The `auto_map` a family's checkpoints carry: AutoConfig and every Auto class of the family's heads, so a
    saved folder loads back with `trust_remote_code=True`."""
    name = lambda c: f"{c.__module__.split('.')[-1]}.{c.__name__}"  # noqa: E731  (module file.class in the folder)
    return {"AutoConfig": name(config_class), **{auto: name(c) for auto, c in FAMILIES.get(config_class, {}).items()}}


class SkimPreTrainedModel(PreTrainedModel):
    """Weight init, Hub plumbing and the selector factory shared by every tokenskim model.

    A family class sets `config_class`, `base_model_prefix` ("bert" or "roberta") and `selector_class` (or
    `base_model_class` for a head); defining it registers it for the Auto class its name ends with
    (`...Model`, `...ForSequenceClassification`, ...; see `AUTO_CLASS_OF_HEAD`), once, here.
    """

    selector_class = TokenSelector
    supports_gradient_checkpointing = True  # the training loop checkpoints each layer's parts (SkimEncoder)
    accepts_loss_kwargs = False  # our loss is a mean; Trainer must not rescale it

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        config_class = cls.__dict__.get("config_class")
        auto = next((a for suffix, a in AUTO_CLASS_OF_HEAD.items() if cls.__name__.endswith(suffix)), None)
        # family classes are the ones this package defines with their own config class (not the shared bases, not
        # a user's subclass elsewhere, which keeps its parent's registration)
        if config_class is None or auto is None or cls.__module__.rpartition(".")[0] != __name__.rpartition(".")[0]:
            return
        config_class.register_for_auto_class("AutoConfig")
        cls.register_for_auto_class(auto)
        FAMILIES.setdefault(config_class, {})[auto] = cls

    def __init__(self, config, *args, **kwargs):
        if config.hidden_size % config.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({config.hidden_size}) is not a multiple of num_attention_heads "
                f"({config.num_attention_heads})"
            )
        config.model_type = type(config).model_type  # a plain BERT config loaded into our class
        config.auto_map = family_auto_map(type(self).config_class)
        super().__init__(config, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, (BertEmbeddings, RobertaEmbeddings)):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            init.zeros_(module.token_type_ids)
        # the hook sits on the module that owns the parameters: custom-code init skips param-less modules
        if hasattr(module, "init_skim_weights"):
            module.init_skim_weights(init)

    @property
    def skim_model(self):
        return getattr(self, self.base_model_prefix)

    def _total_loss(self, task_loss, skim_loss):
        if task_loss is None or skim_loss is None:
            return task_loss
        return task_loss + self.skim_model.selector.loss_weight * skim_loss


class SkimModel(SkimPreTrainedModel):
    """Embeddings + the skimming encoder (+ pooler): the base model of every family.

    Input validation, shared by every family, happens here (`check_inputs`). `attention_mask=None` means every
    token is real, as in `transformers`. Padding may sit on either side: positions count from each row's first
    real token and the pooler reads that token (its CLS), so a left-padded row gives what it gives alone.
    `config.skim_enabled = False` turns every decision off, token drops and early exits alike.
    """

    def __init__(self, config, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = (RobertaEmbeddings if is_roberta(config) else BertEmbeddings)(config)
        self.encoder = SkimEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.selector = self.selector_class(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    @property
    def skim_enabled(self) -> bool:
        """The one switch of every decision (read live from the config); families without it always decide."""
        return bool(getattr(self.config, "skim_enabled", True))

    def check_inputs(self, input_ids, attention_mask, inputs_embeds):
        """Raises a `ValueError` naming the argument for inputs tokenskim cannot run.

        Shape checks always run. The checks that read tensor values (padding without a mask, a row without
        real tokens) are skipped while tracing (`torch.export`, `torch.jit.trace`): they would make the traced
        graph depend on the example inputs.
        """
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("You cannot specify both input_ids and inputs_embeds at the same time")
        if input_ids is None and inputs_embeds is None:
            raise ValueError("You have to specify either input_ids or inputs_embeds")
        name, ref, dims = ("input_ids", input_ids, 2) if input_ids is not None else ("inputs_embeds", inputs_embeds, 3)
        if ref.dim() != dims:
            raise ValueError(f"{name} must have {dims} dimensions, got shape {tuple(ref.shape)}")
        batch, seq = ref.shape[:2]
        if batch == 0 or seq == 0:
            raise ValueError(f"empty batch: {name} of shape {tuple(ref.shape)}")
        limit = self.config.max_position_embeddings - (self.config.pad_token_id + 1 if is_roberta(self.config) else 0)
        if seq > limit:
            raise ValueError(f"sequence length {seq} exceeds this model's maximum of {limit} positions; truncate the input")
        if attention_mask is not None:
            if attention_mask.dim() != 2:
                raise ValueError(
                    f"attention_mask of shape {tuple(attention_mask.shape)}: tokenskim models take only 2-D "
                    "[batch, seq] attention masks (1 for real tokens, 0 for padding), not 3-D or 4-D masks"
                )
            if tuple(attention_mask.shape) != (batch, seq):
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)} but {name} has [batch, seq] = "
                    f"{(batch, seq)}; they must match"
                )
        if is_tracing():
            return
        if attention_mask is None:
            pad_id = self.config.pad_token_id
            if input_ids is not None and pad_id is not None and bool((input_ids[:, 1:] == pad_id).any()):
                raise ValueError(
                    "input_ids contain padding tokens but no attention_mask was given; pass the tokenizer's attention_mask"
                )
        # inference checks this in `pack`, from the lengths it reads anyway (no extra GPU synchronisation)
        elif self.training and not bool(attention_mask.bool().any(1).all()):
            raise ValueError("every sequence needs at least one real token (a row of attention_mask is all zeros)")

    def _real_tokens(self, input_ids, attention_mask, inputs_embeds):
        """Checks the inputs; returns `[batch, seq]` bool, True for real tokens."""
        self.check_inputs(input_ids, attention_mask, inputs_embeds)
        if attention_mask is None:
            ref = input_ids if input_ids is not None else inputs_embeds
            return torch.ones(ref.shape[:2], dtype=torch.bool, device=ref.device)
        return attention_mask.bool()

    def _position_ids(self, input_ids, first, seq):
        """Positions counted from each row's first real token `first` `[batch]`, so left padding shifts nothing:
        `[batch, seq]`. With right padding (`first == 0`) these are the stock positions. RoBERTa computes them
        from the padding tokens of input_ids itself (None here), as in `transformers`.
        """
        if is_roberta(self.config) and input_ids is not None:
            return None
        positions = (torch.arange(seq, device=first.device) - first[:, None]).clamp_min(0)
        return positions + self.config.pad_token_id + 1 if is_roberta(self.config) else positions

    @returns_tuple_unless_return_dict
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        exit_fn=None,
        return_layer_cls=False,
        protected_len=None,
        output_attentions=False,
        output_hidden_states=False,
        return_dict=None,
        **kwargs,
    ) -> SkimModelOutput:
        r"""
        input_ids: `[batch, seq]`, or inputs_embeds `[batch, seq, hidden]` (not both).
        attention_mask: `[batch, seq]`, 1 for real tokens, 0 for padding (either side); None: all real.
        exit_fn: the early-exit rule of the heads that have one (see `SkimEncoder.forward_packed`).
        return_layer_cls: training mode, also return each layer's CLS states (self-distillation).
        protected_len: `[batch]` the first `protected_len[b]` real tokens of row b are never dropped (a QA question);
            None: CLS only.
        """
        if output_attentions or output_hidden_states:
            raise ValueError("tokenskim models do not return per-layer attentions or hidden states")
        real = self._real_tokens(input_ids, attention_mask, inputs_embeds)
        first = first_real(real)
        if position_ids is None and attention_mask is not None:
            position_ids = self._position_ids(input_ids, first, real.shape[1])
        hidden = self.embeddings(
            input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds
        )
        selector = self.selector if self.skim_enabled else KEEP_ALL
        exit_fn = exit_fn if self.skim_enabled else None
        if is_tracing() and not self.training and (selector is not KEEP_ALL or exit_fn is not None):
            raise NotImplementedError(
                "tracing (torch.export, torch.jit.trace) supports tokenskim's pruning-off path only: "
                "token drops and exits change shapes with the data. Set config.skim_enabled = False first."
            )
        enc = self.encoder(hidden, real, selector, exit_fn=exit_fn, return_layer_cls=return_layer_cls,
                           protected_len=protected_len)
        cls = enc.last_hidden_state[torch.arange(len(first), device=first.device), first]
        return SkimModelOutput(
            last_hidden_state=enc.last_hidden_state,
            pooler_output=self.pooler(cls[:, None]) if self.pooler is not None else None,
            cls_hidden_state=cls,
            skim_loss=selector.loss(enc.masks, real) if enc.masks is not None else None,
            kept_tokens=enc.kept_tokens,
            ffn_tokens=enc.ffn_tokens,
            exit_layer=enc.exit_layer,
            exit_logits=enc.exit_logits,
            layer_cls=enc.layer_cls,
            token_layers=enc.token_layers,
            token_ffn_layers=enc.token_ffn_layers,
            records=enc.records,
        )
