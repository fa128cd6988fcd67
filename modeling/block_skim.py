"""Block-Skim (Guan et al., AAAI 2022) for extractive question answering: at chosen layers a small CNN
reads the attention probabilities restricted to the diagonal blocks of 32 tokens and predicts which
context blocks can hold no answer; those blocks skip the rest of the encoder.

Per skim layer l, after its attention:
- the engine hands the selector the diagonal `size x size` blocks of each sequence's attention
  probabilities (`AttentionBlocks`, heads as channels; see `TokenSelector.attention_block_size`);
- `BlockPredictor`: Conv3x3 -> BN -> ReLU -> AvgPool2 -> Conv3x3 -> BN -> ReLU -> AvgPool2 -> Linear(., 2)
  gives logits (skip, keep) per block;
- training never skims (the paper's ablation: skimming during training loses ~1.5 F1); the loss is
  `QA loss + alpha * sum_l CE(logits_l, labels_l, class weights [1, beta])` over real blocks only;
- inference drops the blocks with P(keep) < tau: the engine removes their rows before the layer's
  feed-forward block, and the QA head gives their positions a start/end logit of the dtype's minimum,
  so a skipped position is never predicted.

Choices, where the paper or the reference code leaves room or does otherwise:
- a block's label is 1 when it holds at least one answer token. The reference requires two or more,
  which labels the block of a one-token answer ("Denver", "1998") as skippable;
- blocks holding a question token (the question segment includes CLS and its separators) are never
  skipped. The reference does not protect them; skipping the question would leave the QA head
  without the question;
- blocks tile the tokens still in a sequence from its first one, so after a block is dropped the next
  skim layer sees the same original blocks (drops are whole blocks). A sequence's last block may be
  shorter; it is scored like the others from its zero-padded map (zeros are what padding gives), and
  it is trained with its label, so a short final block is skipped when the CNN says so;
- the CE is a class-weighted mean over a layer's real blocks (PyTorch's `weight=` semantics), summed
  over skim layers; padding never makes a block, so padding changes neither labels nor loss;
- blocks are removed from batches of any size (the reference pads every example to the batch's largest
  kept count), and each sequence is skimmed the same way alone or in any batch (BatchNorm uses its
  running statistics at inference);
- dropped blocks leave after the skim layer's attention, before its feed-forward block; their final
  states are their inputs to that layer (the engine's forwarding), which the QA head then masks.

The predictor reads `config.skim_threshold` (tau) and `config.skim_enabled` live, so
`model.config.skim_threshold = 0.3` changes the trade-off without retraining.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import BertConfig, RobertaConfig

from .heads import SkimForQuestionAnswering, span_loss
from .models import SkimModel, SkimModelOutput, SkimQuestionAnsweringOutput, returns_tuple_unless_return_dict
from .selector import SelectorOutput, TokenSelector

SKIP, KEEP = 0, 1


@dataclass
class BlockSkimFields:
    r"""Block-Skim's configuration fields.

    skim_enabled: False runs the same engine with every token kept (no attention probabilities computed,
        no block loss).
    block_size: tokens per block (the paper: 32).
    skim_layers: 0-based layers after whose attention a predictor scores the blocks; None means every
        layer but the last.
    skim_threshold: tau; at inference a block is skipped when P(keep) < tau.
    balance_factor: beta, the class weight of answer blocks in the block loss (the paper: 20 for SQuAD).
    skim_coefficient: alpha of `loss = QA loss + alpha * block loss`.
    """

    skim_enabled: bool = True
    block_size: int = 32
    skim_layers: list[int] | None = None
    skim_threshold: float | int = 0.5
    balance_factor: float | int = 20.0
    skim_coefficient: float | int = 1.0


@strict
class BlockSkimBertConfig(BertConfig, BlockSkimFields):
    r"""BERT configuration plus Block-Skim's fields (see `BlockSkimFields`)."""

    model_type = "block-skim-bert"


@strict
class BlockSkimRobertaConfig(RobertaConfig, BlockSkimFields):
    r"""RoBERTa configuration plus Block-Skim's fields (see `BlockSkimFields`)."""

    model_type = "block-skim-roberta"


def skim_layer_indices(config) -> list:
    """The layers that predict, sorted; `config.skim_layers` None means every layer but the last."""
    layers = config.skim_layers
    if layers is None:
        layers = range(config.num_hidden_layers - 1)
    layers = sorted(set(int(l) for l in layers))
    bad = [l for l in layers if not 0 <= l < config.num_hidden_layers]
    if bad:
        raise ValueError(f"skim_layers {bad} out of range for {config.num_hidden_layers} layers")
    return layers


class BlockPredictor(nn.Module):
    """The block relevance CNN, heads as channels (channel counts as in the reference code):
    Conv3x3 -> BN -> ReLU -> AvgPool2 -> Conv3x3 -> BN -> ReLU -> AvgPool2 -> Linear(heads * (b/4)^2, 2).

    blocks `[n, heads, b, b]` -> logits `[n, 2]` float32 (index 0 skip, 1 keep).
    """

    def __init__(self, config):
        super().__init__()
        heads, size = config.num_attention_heads, config.block_size
        if size < 4:
            raise ValueError(f"block_size must be at least 4 (two 2x2 poolings), got {size}")
        self.block_size = size
        self.conv1 = nn.Conv2d(heads, heads, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(heads)
        self.conv2 = nn.Conv2d(heads, heads, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(heads)
        self.pool = nn.AvgPool2d(2)
        self.classifier = nn.Linear(heads * (size // 4) ** 2, 2)

    def forward(self, blocks):
        x = blocks.to(self.conv1.weight.dtype)
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        return self.classifier(x.flatten(1)).float()

    def macs_per_block(self) -> int:
        """Multiply-accumulates of one block (convolutions and the linear layer)."""
        heads, b = self.conv1.in_channels, self.block_size
        return heads * heads * 9 * (b * b + (b // 2) ** 2) + 2 * self.classifier.in_features


@dataclass
class BlockRecord:
    """One skim layer's block predictions in one forward pass.

    logits: `[blocks, 2]`; sequence, start, length: `[blocks]` (see `AttentionBlocks`);
    keep: `[blocks]` bool at inference (None in training, which never skims).
    """

    layer: int
    logits: torch.Tensor
    sequence: torch.Tensor
    start: torch.Tensor
    length: torch.Tensor
    keep: torch.Tensor = None


def block_labels(record: BlockRecord, answer_start: torch.Tensor, answer_end: torch.Tensor) -> torch.Tensor:
    """1 for blocks holding at least one answer token, else 0: `[blocks]` long.

    answer_start, answer_end: `[batch]` answer span (inclusive) as positions among the real tokens;
    a start <= 0 (CLS) means the example has no answer here, so all its blocks are 0.
    """
    s, e = answer_start[record.sequence], answer_end[record.sequence]
    has_answer = (s > 0) & (e >= s)
    overlaps = (record.start <= e) & (record.start + record.length - 1 >= s)
    return (has_answer & overlaps).long()


def block_skim_loss(records, answer_start, answer_end, balance_factor: float):
    """sum over skim layers of CE(block logits, block labels, class weights [1, beta]), each a weighted mean
    over that layer's real blocks. None without records."""
    if not records:
        return None
    weight = torch.tensor([1.0, float(balance_factor)], device=records[0].logits.device)
    losses = [F.cross_entropy(r.logits, block_labels(r, answer_start, answer_end), weight=weight) for r in records]
    return torch.stack(losses).sum()


def question_lengths(input_ids, token_type_ids, real, config) -> torch.Tensor:
    """Tokens at the start of each row that belong to the question segment (with CLS and separators).

    BERT pairs: the tokens before the first token of type 1. Otherwise (RoBERTa `<s> q </s></s> c </s>`):
    up to and including the first run of separators (`config.sep_token_id`, else `eos_token_id`). A row
    where neither finds a second segment is all question, so nothing of it is ever skipped.

    input_ids, token_type_ids: `[batch, seq]` or None; real: `[batch, seq]` bool. Returns `[batch]` long.
    """
    rank = real.long().cumsum(1) - 1
    whole = real.sum(1)
    big = torch.full_like(rank, real.shape[1])
    q_len = whole
    sep = getattr(config, "sep_token_id", None)
    sep = config.eos_token_id if sep is None else sep
    if input_ids is not None and sep is not None:
        is_sep = (input_ids == sep) & real
        first = torch.where(is_sep, rank, big).min(1).values
        double = (is_sep & (rank == first[:, None] + 1)).any(1)  # RoBERTa's `</s></s>`
        q_len = torch.where(is_sep.any(1), first + 1 + double.long(), q_len)
    if token_type_ids is not None:
        second = (token_type_ids == 1) & real
        q_len = torch.where(second.any(1), torch.where(second, rank, big).min(1).values, q_len)
    return q_len


def to_rank_space(positions: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Padded positions `[batch]` -> positions among the real tokens; out-of-range or padding -> -1."""
    seq = real.shape[1]
    rank = real.long().cumsum(1) - 1
    inside = (positions >= 0) & (positions < seq)
    pos = positions.clamp(0, seq - 1)[:, None]
    ok = inside & real.gather(1, pos).squeeze(1)
    return torch.where(ok, rank.gather(1, pos).squeeze(1), torch.full_like(positions, -1))


def skipped_positions(records, real, block_size: int) -> torch.Tensor:
    """Positions the block decisions of one forward skipped: `[batch, seq]` bool (all False in training).

    records: the forward's `BlockRecord`s; real: `[batch, seq]` bool. Index arithmetic only: no value is read
    back to the host.
    """
    batch, seq = real.shape
    skipped = torch.zeros(batch, seq + block_size, dtype=torch.bool, device=real.device)
    offsets = torch.arange(block_size, device=real.device)
    for r in records:
        if r.keep is None:
            continue
        rows = r.sequence[:, None].expand(-1, block_size).flatten()
        cols = (r.start[:, None] + offsets).flatten()
        dropped = ((offsets < r.length[:, None]) & ~r.keep[:, None]).flatten()
        skipped[rows, cols] = skipped[rows, cols] | dropped  # a block's positions belong to it alone
    rank = (real.long().cumsum(1) - 1).clamp_min(0)
    return skipped.gather(1, rank) & real  # rank space -> padded positions


class BlockSkimSelector(TokenSelector):
    """A `BlockPredictor` after the attention of each skim layer (see the module docstring).

    Each decision reports a `BlockRecord` (through `SelectorOutput`), which reaches the QA head in the model
    output's `records`: the block loss and the skipped positions come from there. Blocks holding a question
    token are protected by the model (`protected_len`), so the selector keeps no per-forward state.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.block_size = int(config.block_size)
        self.predictors = nn.ModuleDict({str(l): BlockPredictor(config) for l in skim_layer_indices(config)})

    @property
    def enabled(self) -> bool:
        return bool(self.config.skim_enabled)

    @property
    def loss_weight(self) -> float:
        return float(self.config.skim_coefficient)

    def attention_block_size(self, layer_idx):
        return self.block_size if self.enabled and str(layer_idx) in self.predictors else 0

    def keep_blocks(self, logits, blocks) -> torch.Tensor:
        """P(keep) >= tau, or the block holds a protected (question) token: `[blocks]` bool."""
        p_keep = torch.softmax(logits, dim=-1)[:, KEEP]
        return blocks.protected | (p_keep >= float(self.config.skim_threshold))

    def after_attention(self, layer_idx, blocks, hard, tokens=None):
        """blocks: `AttentionBlocks` -> keep `[...]` bool per token (inference) or None (training never skims),
        with this layer's `BlockRecord`."""
        logits = self.predictors[str(layer_idx)](blocks.probs)
        keep = self.keep_blocks(logits, blocks) if hard else None
        record = BlockRecord(layer_idx, logits, blocks.sequence, blocks.start, blocks.length, keep)
        return SelectorOutput(keep[blocks.token_block] if hard else None, record)

    def macs(self, kept_tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Exact CNN cost per example `[batch]` from the tokens in each layer's attention `[batch, layers]`:
        a skim layer scores ceil(kept / block_size) blocks of each sequence."""
        if not self.enabled or not len(self.predictors):
            return super().macs(kept_tokens, lengths)
        per_block = next(iter(self.predictors.values())).macs_per_block()
        layers = [int(l) for l in self.predictors]
        blocks = torch.div(kept_tokens[:, layers] + self.block_size - 1, self.block_size, rounding_mode="floor")
        return blocks.double().sum(-1) * per_block


class BlockSkimModelMixin:
    """Base-model forward: protects each row's question (blocks holding a question token are never skipped)."""

    @returns_tuple_unless_return_dict
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, return_dict=None, **kwargs) -> SkimModelOutput:
        real = self._real_tokens(input_ids, attention_mask, inputs_embeds)
        return super().forward(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True,
            protected_len=question_lengths(input_ids, token_type_ids, real, self.config), **kwargs,
        )


class BlockSkimQuestionAnsweringMixin:
    """QA head: skipped positions get the lowest logit; the loss adds alpha * the block loss."""

    @returns_tuple_unless_return_dict
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, start_positions=None, end_positions=None, return_dict=None,
                **kwargs) -> SkimQuestionAnsweringOutput:
        out = self.skim_model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs,
        )
        real = self.skim_model._real_tokens(input_ids, attention_mask, inputs_embeds)
        start_logits, end_logits = (x.squeeze(-1) for x in self.qa_outputs(out.last_hidden_state).split(1, dim=-1))
        skipped = skipped_positions(out.records, real, int(self.config.block_size))
        low = torch.finfo(start_logits.dtype).min
        start_logits, end_logits = start_logits.masked_fill(skipped, low), end_logits.masked_fill(skipped, low)
        loss, skim_loss = span_loss(start_logits, end_logits, start_positions, end_positions), None
        if loss is not None and self.skim_model.skim_enabled:
            s, e = to_rank_space(start_positions, real), to_rank_space(end_positions, real)
            skim_loss = block_skim_loss(out.records, s, e, float(self.config.balance_factor))
        return SkimQuestionAnsweringOutput(
            loss=self._total_loss(loss, skim_loss),
            start_logits=start_logits.contiguous(),
            end_logits=end_logits.contiguous(),
            skim_loss=skim_loss,
            kept_tokens=out.kept_tokens,
            ffn_tokens=out.ffn_tokens,
            token_layers=out.token_layers,
            token_ffn_layers=out.token_ffn_layers,
        )


class BlockSkimBertModel(BlockSkimModelMixin, SkimModel):
    config_class = BlockSkimBertConfig
    base_model_prefix = "bert"
    selector_class = BlockSkimSelector


class BlockSkimBertForQuestionAnswering(BlockSkimQuestionAnsweringMixin, SkimForQuestionAnswering):
    config_class = BlockSkimBertConfig
    base_model_prefix = "bert"
    base_model_class = BlockSkimBertModel


class BlockSkimRobertaModel(BlockSkimModelMixin, SkimModel):
    config_class = BlockSkimRobertaConfig
    base_model_prefix = "roberta"
    selector_class = BlockSkimSelector


class BlockSkimRobertaForQuestionAnswering(BlockSkimQuestionAnsweringMixin, SkimForQuestionAnswering):
    config_class = BlockSkimRobertaConfig
    base_model_prefix = "roberta"
    base_model_class = BlockSkimRobertaModel


BlockSkimForQA = BlockSkimBertForQuestionAnswering
