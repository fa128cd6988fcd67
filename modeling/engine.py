"""The shared encoder engine and the generic models every method family builds on.

One encoder loop runs the stock BERT/RoBERTa layers (same modules, same parameter names, so any
checkpoint loads) and asks a *token selector* which tokens stay and, optionally, an *exit function*
which sequences stop. Two execution modes share the layers:

- inference (`model.eval()`): decisions are hard and deterministic; the batch is packed into a
  `[total_tokens, hidden]` matrix, dropped tokens are physically removed, and attention runs per
  sequence. A dropped token's last hidden state is written to its original output position.
- training: the batch stays padded `[batch, seq, hidden]`; decisions are soft or straight-through
  masks that weight the attention keys (a masked softmax, renormalised) and gate the residual stream
  (`x = m * layer(x) + (1 - m) * x`), so gradients reach the selector.

A method family is a selector (`TokenSelector` subclass) plus its loss; see `transkimmer.py`.
"""

from dataclasses import dataclass
from functools import wraps

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers import PreTrainedModel, RobertaConfig
from transformers.modeling_outputs import ModelOutput
from transformers.models.bert.modeling_bert import BertEmbeddings, BertLayer, BertPooler
from transformers.models.roberta.modeling_roberta import RobertaClassificationHead, RobertaEmbeddings

from .packing import (
    AttentionBlocks,
    compact,
    first_rows,
    floor_mask,
    keep_decision,
    pack,
    padded_attention_blocks,
    varlen_attention,
    varlen_attention_with_blocks,
    varlen_attention_with_received,
)

from transformers import initialization as init  # leaves weights loaded by from_pretrained alone


def is_tracing() -> bool:
    """True inside `torch.export` or `torch.jit.trace`, which record one graph for every input: its shapes must not
    depend on tensor values. (`torch.compile` is not tracing here: it breaks the graph where the packed path reads
    values, and runs.)"""
    exporting = getattr(torch.compiler, "is_exporting", torch.compiler.is_compiling)  # torch < 2.7: no is_exporting
    return exporting() or torch.jit.is_tracing()


def first_real(real: torch.Tensor) -> torch.Tensor:
    """`[batch, seq]` bool -> `[batch]` position of each row's first real token (its CLS, whatever the padding side)."""
    return real.to(torch.int8).argmax(1)


@dataclass
class SelectorOutput:
    """A selector hook's answer when it has more to report than the keep score: `record` (anything the family's
    loss or head needs, e.g. Block-Skim's block logits, STTABT's ApproxNet outputs) travels to the model's output
    as one entry of `records`, in call order. Selectors keep no state between or within forward passes."""

    score: torch.Tensor | None
    record: object = None


def split_answer(answer):
    """A hook's answer -> `(score or None, record or None)`."""
    if isinstance(answer, SelectorOutput):
        return answer.score, answer.record
    return answer, None


class TokenSelector(nn.Module):
    """Decides which tokens stay. The default keeps every token.

    `before_layer` and `after_attention` return a *keep score* per token, a logit: the token stays where
    `score >= 0` (a bool decision is also accepted and taken as it is), or a `SelectorOutput` holding the score
    and a record for the model's output. In training the engine turns the score into a differentiable gate in
    [0, 1] with `gate` (straight-through or soft). The engine always keeps each row's protected tokens (CLS, or a
    longer prefix the model names, e.g. a QA question) and each sequence's `min_kept_tokens` best-scored tokens,
    never scores padding, and makes decisions cumulative: a dropped token never comes back. `loss_weight` scales
    `loss()` in the model's total loss.
    """

    loss_weight = 0.0
    min_kept_tokens = 0

    def gate(self, layer_idx: int, score: torch.Tensor) -> torch.Tensor:
        """Training: the gate in [0, 1] for a keep score `[...]`. The default is the hard decision, no gradient."""
        return (score >= 0).to(score.dtype)

    def plan(self, hidden: torch.Tensor, real: torch.Tensor, hard: bool):
        """Optional: every layer's decision at once, from the whole batch before layer 0, or None.

        hidden: `[batch, seq, hidden]` embeddings output; real: `[batch, seq]` bool. Returns `[layers, batch, seq]`
        in the padded layout, bool keep masks (`hard`) or final gates in [0, 1] (training), possibly inside a
        `SelectorOutput`; the engine then uses `plan[l]` in place of `before_layer(l, ...)`, as it is (no `gate`, no
        `min_kept_tokens` floor; protected tokens still stay).
        """
        return None

    def before_layer(self, layer_idx: int, hidden: torch.Tensor, hard: bool):
        """Keep score of the tokens about to enter layer `layer_idx`. hidden: `[..., hidden]` -> `[...]`, or None."""
        return None

    def needs_received_attention(self, layer_idx: int) -> bool:
        """Whether `after_attention` of this layer needs the attention each token receives."""
        return False

    def attention_block_size(self, layer_idx: int) -> int:
        """Block size b > 0 if `after_attention` of this layer needs the diagonal b x b blocks of each
        sequence's attention probabilities (`AttentionBlocks`, Block-Skim's signal), else 0."""
        return 0

    def after_attention(self, layer_idx: int, received, hard: bool):
        """Keep score after the attention of layer `layer_idx`, or None, from what the selector asked for: the
        attention each token receives `[...]` or the `AttentionBlocks` (their `token_block` has the score's shape)."""
        return None

    def loss(self, masks: list, real: torch.Tensor):
        """Auxiliary loss from the per-layer keep masks (training mode), or None."""
        return None

    def macs(self, kept_tokens: torch.Tensor) -> torch.Tensor:
        """The selector's own work per example `[batch]` (MACs, float64) from the tokens that entered each layer's
        attention `kept_tokens` `[batch, layers]`; `flops.model_macs` adds it to the encoder's."""
        return torch.zeros(kept_tokens.shape[0], dtype=torch.float64, device=kept_tokens.device)


KEEP_ALL = TokenSelector()  # what the engine runs with `skim_enabled=False`: no decision at all


@dataclass
class EncoderResult(ModelOutput):
    """What the encoder loop returns.

    last_hidden_state: `[batch, seq, hidden]`, each token's state from the last layer it took part in.
    kept_tokens: `[batch, layers]` real tokens that entered each layer's attention.
    ffn_tokens: `[batch, layers]` real tokens that went through each layer's feed-forward block.
    exit_layer: `[batch]` number of layers each sequence ran (all of them without early exit).
    exit_logits: `[batch, labels]` logits of the sequences that exited early (other rows undefined).
    token_layers: `[batch, seq]` layers whose attention each token entered (0 for padding).
    token_ffn_layers: `[batch, seq]` layers whose feed-forward block each token went through.
    records: what the selector reported beside its scores (`SelectorOutput.record`), in call order.
    masks: training mode only, per layer `[batch, seq]` cumulative keep masks (after the layer's decisions).
    layer_cls: training mode with `return_layer_cls`, `[layers, batch, hidden]` CLS state after each layer.
    """

    last_hidden_state: torch.Tensor = None
    kept_tokens: torch.Tensor = None
    ffn_tokens: torch.Tensor = None
    exit_layer: torch.Tensor = None
    exit_logits: torch.Tensor = None
    token_layers: torch.Tensor = None
    token_ffn_layers: torch.Tensor = None
    records: list = None
    masks: list = None
    layer_cls: torch.Tensor = None


def protected_tokens(real: torch.Tensor, protected_len: torch.Tensor | None) -> torch.Tensor:
    """`[batch, seq]` bool: the first `protected_len[b]` real tokens of each row (default 1: its CLS), which no
    decision drops."""
    rank = real.long().cumsum(1) - 1
    limit = 1 if protected_len is None else protected_len.clamp_min(1)[:, None]
    return (rank < limit) & real


def mark_protected_blocks(received, protected_len):
    """Sets `AttentionBlocks.protected` (blocks holding a protected token); other signals pass through."""
    if isinstance(received, AttentionBlocks):
        limit = 1 if protected_len is None else protected_len.clamp_min(1)[received.sequence]
        received.protected = received.start < limit  # protected tokens are a prefix and never leave
    return received


def _split_heads(x, sa):
    return x.view(*x.shape[:-1], sa.num_attention_heads, sa.attention_head_size)


class SkimEncoder(nn.Module):
    """The stock encoder layers (`encoder.layer.N`) run by a loop that can drop tokens and sequences."""

    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(config, layer_idx=i) for i in range(config.num_hidden_layers)])

    def forward(self, hidden, real, selector, exit_fn=None, return_layer_cls=False, protected_len=None):
        """hidden `[B, S, H]` embeddings output; real `[B, S]` bool; protected_len `[B]` or None (see
        `protected_tokens`)."""
        if self.training:
            return self.forward_masked(hidden, real, selector, return_layer_cls, protected_len)
        if (is_tracing() or torch.compiler.is_compiling()) and selector is KEEP_ALL and exit_fn is None:
            return self.forward_dense(hidden, real)
        return self.forward_packed(hidden, real, selector, exit_fn, protected_len)

    def forward_dense(self, hidden, real):
        """Inference without decisions on the padded batch, as stock `transformers` runs it (SDPA with a padding
        mask). Used while tracing or compiling: unlike the packed path, its shapes do not depend on the mask's values,
        so `torch.export` records one graph and `torch.compile` compiles it without graph breaks.
        hidden `[B, S, H]`, real `[B, S]` bool; padding positions of the output are zeros, as in the packed path.
        """
        x = hidden
        for layer in self.layer:
            sa = layer.attention.self
            q, k, v = (_split_heads(proj(x), sa).transpose(1, 2) for proj in (sa.query, sa.key, sa.value))
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=real[:, None, None, :])
            attn = layer.attention.output(ctx.transpose(1, 2).flatten(2), x)
            x = layer.output(layer.intermediate(attn), attn)
        tokens = real.sum(1, keepdim=True).expand(-1, len(self.layer))
        depth = real.long() * len(self.layer)
        return EncoderResult(
            last_hidden_state=x.masked_fill(~real[..., None], 0),
            kept_tokens=tokens,
            ffn_tokens=tokens,
            exit_layer=torch.full_like(tokens[:, 0], len(self.layer)),
            token_layers=depth,
            token_ffn_layers=depth,
            records=[],
        )

    def run_layer_part(self, layer, part, *args):
        """`part(*args)`, under activation checkpointing when `model.gradient_checkpointing_enable()` set it on
        this layer (transformers sets `gradient_checkpointing` and `_gradient_checkpointing_func` on each
        `BertLayer`, every n-th one with `every_n_layers`). The training loop calls the stock layer's parts itself,
        so it checkpoints them here; selectors stay outside, so a recompute never repeats a decision."""
        if not (layer.gradient_checkpointing and self.training and torch.is_grad_enabled()):
            return part(*args)
        # reentrant checkpointing (`use_reentrant=True`) passes gradients through tensor outputs only: hand it the
        # result's tensors (e.g. the fields of `AttentionBlocks`) and rebuild the result around them
        spec = []

        def tensors_only(*part_args):
            leaves, tree = pytree.tree_flatten(part(*part_args))
            spec[:] = [tree]
            return tuple(leaves)

        return pytree.tree_unflatten(list(layer._gradient_checkpointing_func(tensors_only, *args)), spec[0])

    def forward_packed(self, hidden, real, selector, exit_fn=None, protected_len=None):
        """Inference: hard decisions, physical removal. hidden `[B, S, H]`, real `[B, S]` bool.

        Host reads (each one a GPU synchronisation): one to pack the batch, then one per decision that may
        drop rows (a selector's scores, an exit check), none in layers without decisions.
        """
        batch, seq, _ = hidden.shape
        num_layers = len(self.layer)
        state = pack(real)
        x = hidden.flatten(0, 1).index_select(0, state.index)
        rank = (real.long().cumsum(1) - 1).flatten()  # position among the real tokens, for attention blocks
        protected = protected_tokens(real, protected_len).flatten()
        out = hidden.new_zeros(batch * seq, hidden.shape[-1])
        kept = torch.zeros(batch, num_layers, dtype=torch.long, device=hidden.device)
        ffn = torch.zeros_like(kept)
        token_layers = torch.zeros(batch * seq, dtype=torch.long, device=hidden.device)
        token_ffn_layers = torch.zeros_like(token_layers)
        exit_layer = torch.full((batch,), num_layers, dtype=torch.long, device=hidden.device)
        exit_logits = None
        records = []

        def answer(hook_output):
            score, record = split_answer(hook_output)
            if record is not None:
                records.append(record)
            return score

        plan = answer(selector.plan(hidden, real, hard=True))

        def counts():
            cu = state.cu_seqlens
            return (cu[1:] - cu[:-1]).long()

        def drop(x, keep=None, keep_sequence=None, extra=None):
            """Packs the rows that stay; the others keep their current state in the output."""
            nonlocal state
            change = compact(state, keep, keep_sequence)
            if change is None:  # nothing dropped: no copies (common at batch 1 and in early layers)
                return x, extra
            out.index_copy_(0, state.index, x)  # rows that stay are overwritten by a later state
            rows, state = change
            return x.index_select(0, rows), (extra.index_select(0, rows) if extra is not None else None)

        def decide(score):
            return keep_decision(score, state.row_seq, state.cu_seqlens, selector.min_kept_tokens,
                                 protected.index_select(0, state.index))

        for i, layer in enumerate(self.layer):
            score = answer(selector.before_layer(i, x, hard=True)) if plan is None else plan[i].flatten()[state.index]
            if score is not None:
                x, _ = drop(x, decide(score))
            kept[state.sequence, i] = counts()
            token_layers.index_fill_(0, state.index, i + 1)

            sa = layer.attention.self
            q, k, v = (_split_heads(proj(x), sa) for proj in (sa.query, sa.key, sa.value))
            if selector.needs_received_attention(i):
                ctx, received = varlen_attention_with_received(q, k, v, state.cu_seqlens, state.lengths)
            elif selector.attention_block_size(i):
                size = selector.attention_block_size(i)
                ctx, received = varlen_attention_with_blocks(q, k, v, state.lengths, size, rank[state.index],
                                                             state.sequence)
            else:
                ctx, received = varlen_attention(q, k, v, state.cu_seqlens, state.lengths), None
            attn = layer.attention.output(ctx.flatten(1), x)

            received = mark_protected_blocks(received, protected_len)
            score = answer(selector.after_attention(i, received, hard=True)) if received is not None else None
            if score is not None:
                x, attn = drop(x, decide(score), extra=attn)  # a token pruned here forwards its input state
            ffn[state.sequence, i] = counts()
            token_ffn_layers.index_fill_(0, state.index, i + 1)
            x = layer.output(layer.intermediate(attn), attn)

            if exit_fn is not None and i < num_layers - 1:
                stop, logits = exit_fn(i, x[first_rows(state.cu_seqlens)], state.sequence)
                if exit_logits is None:
                    exit_logits = logits.new_zeros(batch, logits.shape[-1])
                seqs = state.sequence
                exit_logits[seqs] = torch.where(stop[:, None], logits.to(exit_logits.dtype), exit_logits[seqs])
                exit_layer[seqs] = torch.where(stop, i + 1, exit_layer[seqs])
                x, _ = drop(x, keep_sequence=~stop)
                if not state.lengths:
                    break

        out.index_copy_(0, state.index, x)
        return EncoderResult(
            last_hidden_state=out.view(batch, seq, -1),
            kept_tokens=kept,
            ffn_tokens=ffn,
            exit_layer=exit_layer,
            exit_logits=exit_logits,
            token_layers=token_layers.view(batch, seq),
            token_ffn_layers=token_ffn_layers.view(batch, seq),
            records=records,
        )

    def forward_masked(self, hidden, real, selector, return_layer_cls=False, protected_len=None):
        """Training: soft/straight-through decisions as masks on a padded batch."""
        batch, seq, _ = hidden.shape
        x = hidden
        realf = real.to(hidden.dtype)
        protected = protected_tokens(real, protected_len)
        m = realf  # cumulative keep mask, [B, S]
        masks, kept, ffn, layer_cls, records = [], [], [], [], []
        token_layers = token_ffn_layers = torch.zeros_like(real, dtype=torch.long)

        def answer(hook_output):
            score, record = split_answer(hook_output)
            if record is not None:
                records.append(record)
            return score

        plan = answer(selector.plan(hidden, real, hard=False))

        def gate(m, i, score):
            """m times the gate of a keep score; protected tokens and the `min_kept_tokens` best-scored tokens stay
            (gate 1). A bool decision is taken as it is, as in the packed path."""
            if score is None:
                return m
            if score.dtype == torch.bool:
                return m * (score | protected).to(m.dtype)
            g = selector.gate(i, score).to(m.dtype)
            stay = protected
            if selector.min_kept_tokens > 0:
                stay = stay | floor_mask(score, (m > 0.5) & real, protected, selector.min_kept_tokens)
            return m * g.masked_fill(stay, 1.0)

        def gate_planned(m, g):
            return m * torch.maximum(g.to(m.dtype), protected.to(m.dtype))  # protected tokens always stay

        for i, layer in enumerate(self.layer):
            m = gate(m, i, answer(selector.before_layer(i, x, hard=False))) if plan is None else gate_planned(m, plan[i])
            kept.append((m > 0.5).sum(1))
            token_layers = token_layers + ((m > 0.5) & real)

            attn, received = self.run_layer_part(
                layer, _masked_attention_block, x, m, layer, real,
                selector.needs_received_attention(i), selector.attention_block_size(i),
            )

            received = mark_protected_blocks(received, protected_len)
            m = gate(m, i, answer(selector.after_attention(i, received, hard=False)) if received is not None else None)
            ffn.append((m > 0.5).sum(1))
            token_ffn_layers = token_ffn_layers + ((m > 0.5) & real)
            y = self.run_layer_part(layer, _feed_forward, attn, layer)
            w = m.unsqueeze(-1)
            x = y if m is realf else w * y + (1 - w) * x  # dropped tokens keep their last state
            masks.append(m)
            if return_layer_cls:
                layer_cls.append(x[torch.arange(batch, device=x.device), first_real(real)])

        return EncoderResult(
            last_hidden_state=x,
            kept_tokens=torch.stack(kept, 1),
            ffn_tokens=torch.stack(ffn, 1),
            exit_layer=torch.full((batch,), len(self.layer), dtype=torch.long, device=x.device),
            token_layers=token_layers,
            token_ffn_layers=token_ffn_layers,
            records=records,
            masks=masks,
            layer_cls=torch.stack(layer_cls) if return_layer_cls else None,
        )


def _masked_attention_block(x, m, layer, real, need_received, block_size):
    """A stock layer's attention block (self-attention + output projection, residual, LayerNorm) on a padded
    batch whose keys are weighted by the keep mask m `[B, S]`: x `[B, S, H]` -> (`[B, S, H]`, received or None)."""
    sa = layer.attention.self
    q, k, v = (_split_heads(proj(x), sa).transpose(1, 2) for proj in (sa.query, sa.key, sa.value))
    dropout_p = sa.dropout.p if layer.training else 0.0
    ctx, received = _masked_attention(q, k, v, real, m, dropout_p, need_received=need_received, block_size=block_size)
    return layer.attention.output(ctx.transpose(1, 2).flatten(2), x), received


def _feed_forward(attn, layer):
    """A stock layer's feed-forward block (with its residual and LayerNorm): `[..., H]` -> `[..., H]`."""
    return layer.output(layer.intermediate(attn), attn)


def _masked_attention(q, k, v, real, m, dropout_p, need_received=False, block_size=0):
    """Attention over a padded batch whose keys are weighted by the keep mask m `[B, S]`.

    Padding is excluded with -inf; kept/dropped tokens by renormalising `p_j * m_j`, which is a masked
    softmax that stays differentiable in m (the reference Transkimmer code multiplied after softmax
    without renormalising). q, k, v: `[B, heads, S, d]`. Returns context `[B, heads, S, d]` and, if
    asked, the attention each token receives, averaged over heads and kept query rows, `[B, S]`, or
    with `block_size > 0` the `AttentionBlocks` of the kept tokens (pre-dropout probabilities).
    """
    pad = ~real[:, None, None, :]
    if not need_received and not block_size and not m.requires_grad and torch.equal(m, real.to(m.dtype)):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=~pad, dropout_p=dropout_p), None
    scores = (q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
    probs = torch.softmax(scores.masked_fill(pad, float("-inf")), dim=-1) * m[:, None, None, :].float()
    probs = probs / probs.sum(-1, keepdim=True).clamp_min(1e-9)
    received = None
    if need_received:
        rows = m.float()[:, None, :, None]  # kept query rows count, dropped and padding rows do not
        received = (probs * rows).sum((1, 2)) / (rows.sum((1, 2)) * probs.shape[1]).clamp_min(1e-9)
    elif block_size:
        received = padded_attention_blocks(probs, real, m > 0.5, block_size)
    probs = F.dropout(probs, dropout_p, training=dropout_p > 0).to(v.dtype)
    return probs @ v, received


def keep_ratio_loss(masks, real):
    """Mean over layers and examples of (kept real tokens / real tokens). Padding never counts.

    masks: list of `[B, S]` keep masks (one per layer); real: `[B, S]` bool.
    """
    realf = real.to(masks[0].dtype)
    per_layer = torch.stack([(m * realf).sum(1) for m in masks]) / realf.sum(1)  # [L, B]
    return per_layer.mean()


def budget_loss(masks, real, target: float, min_kept: int = 0):
    """Mean over examples of `|kept ratio - target|`: drives each sequence's share of (token, layer) pairs kept
    to `target` and holds it there. Its push is bounded (a constant slope), unlike the paper's loss it stops at
    the target, and it pulls back up when a sequence keeps too few tokens: a one-sided hinge let tokens the task
    barely uses drift away below the target (measured on the synthetic task of tests/test_budget.py: 0.21 kept
    at a target of 0.3).

    Per sequence, not pooled over the batch, and a sequence's target is never below what the `min_kept` floor
    keeps (`min(n, min_kept) / n` for n real tokens): pooled over a batch of short training rows, the floor
    alone used up most of the budget, so the only way to meet it was to drop every other token, and the
    model learnt to skim long inputs far below the target (SST-2 phrases in training, sentences at test: 0.42
    kept in training, 0.31 on the dev set, for a target of 0.4).

    masks: list of `[B, S]` keep masks (one per layer); real: `[B, S]` bool.
    """
    realf = real.to(masks[0].dtype)
    lengths = realf.sum(1)
    ratio = torch.stack([(m * realf).sum(1) for m in masks]).mean(0) / lengths  # [B]
    floor = lengths.clamp(max=min_kept) / lengths
    return (ratio - torch.clamp(floor, min=target)).abs().mean()


# ----------------------------------------------------------------------------------------------------
# Models


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
        loss = None
        if start_positions is not None and end_positions is not None:
            seq = start_logits.shape[1]
            ce = CrossEntropyLoss(ignore_index=seq)
            loss = (ce(start_logits, start_positions.clamp(0, seq)) + ce(end_logits, end_positions.clamp(0, seq))) / 2
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
