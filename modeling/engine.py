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

A method family is a selector (`selector.TokenSelector` subclass) plus its loss; see `transkimmer.py`. The models
built on this loop (embeddings, heads, Hub plumbing) are in `models.py` and `heads.py`.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch import nn
from transformers.modeling_outputs import ModelOutput
from transformers.models.bert.modeling_bert import BertLayer

from .attention import (
    AttentionBlocks,
    padded_attention_blocks,
    varlen_attention,
    varlen_attention_with_blocks,
    varlen_attention_with_received,
)
from .packing import compact, first_rows, floor_mask, keep_decision, pack
from .selector import KEEP_ALL, take_score


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
        """`part(*args)`, under activation checkpointing when `model.activation_checkpointing_enable()` (before
        transformers 5.25: `gradient_checkpointing_enable()`) set it on this layer (transformers sets
        `gradient_checkpointing` and `_gradient_checkpointing_func` on each `BertLayer`, every n-th one with
        `every_n_layers`). The training loop calls the stock layer's parts itself,
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

        plan = take_score(selector.plan(hidden, real, hard=True), records)

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
            if plan is None:
                score = take_score(selector.before_layer(i, x, hard=True), records)
            else:
                score = plan[i].flatten()[state.index]
            if score is not None:
                x, _ = drop(x, decide(score))
            kept[state.sequence, i] = counts()
            token_layers.index_fill_(0, state.index, i + 1)

            sa = layer.attention.self
            q, k, v = (_split_heads(proj(x), sa) for proj in (sa.query, sa.key, sa.value))
            tokens = None
            if selector.needs_received_attention(i):
                ctx, received = varlen_attention_with_received(q, k, v, state.cu_seqlens, state.lengths)
                tokens = counts().index_select(0, state.row_seq).float()
            elif selector.attention_block_size(i):
                size = selector.attention_block_size(i)
                ctx, received = varlen_attention_with_blocks(q, k, v, state.lengths, size, rank[state.index],
                                                             state.sequence)
            else:
                ctx, received = varlen_attention(q, k, v, state.cu_seqlens, state.lengths), None
            attn = layer.attention.output(ctx.flatten(1), x)

            received = mark_protected_blocks(received, protected_len)
            score = (take_score(selector.after_attention(i, received, hard=True, tokens=tokens), records)
                     if received is not None else None)
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

        plan = take_score(selector.plan(hidden, real, hard=False), records)

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
            if plan is None:
                m = gate(m, i, take_score(selector.before_layer(i, x, hard=False), records))
            else:
                m = gate_planned(m, plan[i])
            kept.append((m > 0.5).sum(1))
            token_layers = token_layers + ((m > 0.5) & real)

            attn, received = self.run_layer_part(
                layer, _masked_attention_block, x, m, layer, real,
                selector.needs_received_attention(i), selector.attention_block_size(i),
            )

            received = mark_protected_blocks(received, protected_len)
            tokens = m.float().sum(1, keepdim=True).expand_as(received) if torch.is_tensor(received) else None
            m = gate(m, i, take_score(selector.after_attention(i, received, hard=False, tokens=tokens), records)
                     if received is not None else None)
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


KEPT_MASS_FLOOR = 0.05


def renormalise_kept(weighted: torch.Tensor, floor: float = KEPT_MASS_FLOOR) -> torch.Tensor:
    """Attention probabilities times the keep mask, `[..., keys]`, renormalised over the kept keys.

    The value is exact. The gradient is that of dividing by `max(kept mass, floor)`: the exact gradient with
    respect to a key's keep weight is `p_j (v_j - out) / kept mass`, which explodes when a query's kept keys hold
    little of its attention (2e11 for 2 kept keys of 256, `results/squad_qa/mask_gradient.py`), drowns every
    other gradient under clipping and drove long-input skimming to collapse. Rows holding at least `floor` of
    their attention get the exact gradient; the others a gradient at most `1 / floor` times the probabilities.
    """
    mass = weighted.sum(-1, keepdim=True)
    exact = weighted / mass.clamp_min(1e-9)
    if not weighted.requires_grad:
        return exact
    bounded = weighted / mass.clamp_min(floor)
    return exact.detach() + (bounded - bounded.detach())


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
    probs = renormalise_kept(probs)
    received = None
    if need_received:
        rows = m.float()[:, None, :, None]  # kept query rows count, dropped and padding rows do not
        received = (probs * rows).sum((1, 2)) / (rows.sum((1, 2)) * probs.shape[1]).clamp_min(1e-9)
    elif block_size:
        received = padded_attention_blocks(probs, real, m > 0.5, block_size)
    probs = F.dropout(probs, dropout_p, training=dropout_p > 0).to(v.dtype)
    return probs @ v, received
