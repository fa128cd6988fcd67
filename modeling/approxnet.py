"""ApproxNet, STTABT's small encoder that predicts the main model's attention, and its distillation from the main
model (`sttabt.py` runs back-tracking on its attention). Attention here returns probabilities, which the main
encoder's kernels do not."""

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertLayer


# ----------------------------------------------------------------------------------------------------
# Attention with probabilities, and one stock layer run on rows


def padded_attention(q, k, v, real):
    """Softmax attention over a padded batch, padding keys excluded.

    q, k, v: `[B, S, heads, head_dim]`; real: `[B, S]` bool.
    Returns context `[B, S, heads, head_dim]` and probabilities `[B, heads, S, S]` (float32, zero on
    padding keys; rows of padding queries are never used).
    """
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    scores = ((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)).float()
    probs = torch.softmax(scores.masked_fill_(~real[:, None, None, :], float("-inf")), dim=-1)
    return (probs.to(v.dtype) @ v).transpose(1, 2), probs


def packed_rows_attention(q, k, v, rows, real):
    """`padded_attention` for packed rows: q, k, v `[total, heads, head_dim]` are the real tokens at flat
    positions `rows` `[total]` of the `[B, S]` batch `real`. They are padded for one batched softmax (a few
    large ops instead of a loop over sequences: ApproxNet's attention is small, the loop overhead is not).

    Returns context `[total, heads, head_dim]` and probabilities `[B, heads, S, S]`.
    """
    batch, seq = real.shape

    def pad(t):
        return t.new_zeros(batch * seq, *t.shape[1:]).index_copy_(0, rows, t).view(batch, seq, *t.shape[1:])

    ctx, probs = padded_attention(pad(q), pad(k), pad(v), real)
    return ctx.flatten(0, 1)[rows], probs


def run_layer(layer: BertLayer, x: torch.Tensor, attention):
    """One stock `BertLayer` on rows `x` `[..., d]`, mixing tokens with `attention(q, k, v) -> (ctx, probs)`.

    q, k, v and ctx are `[..., heads, head_dim]`. Returns the layer output `[..., d]` and the probabilities.
    """
    sa = layer.attention.self
    q, k, v = (proj(x).unflatten(-1, (sa.num_attention_heads, sa.attention_head_size)) for proj in (sa.query, sa.key, sa.value))
    ctx, probs = attention(q, k, v)
    attn = layer.attention.output(ctx.flatten(-2), x)
    return layer.output(layer.intermediate(attn), attn), probs


@contextmanager
def eval_mode(*modules):
    """Dropout off in `modules` for the duration (the teacher pass of a training step); every submodule's
    own mode is restored afterwards."""
    was = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for m, training in was:
            m.training = training


@torch.no_grad()
def dense_teacher(layers, hidden, real):
    """The main encoder layers run densely (every real token, no dropout) with per-head probabilities.

    layers: the main model's `BertLayer`s; hidden: `[B, S, d]` embeddings output; real: `[B, S]` bool.
    Returns probabilities `[L, B, heads, S, S]` and hidden states after each layer `[L, B, S, d]`.
    """
    probs, states = [], []
    x = hidden
    with eval_mode(*layers):
        for layer in layers:
            x, p = run_layer(layer, x, lambda q, k, v: padded_attention(q, k, v, real))
            probs.append(p)
            states.append(x)
    return torch.stack(probs), torch.stack(states)


# ----------------------------------------------------------------------------------------------------
# ApproxNet


def approx_config(config) -> BertConfig:
    """ApproxNet's config: the main one with hidden and FFN sizes divided by `approx_factor`.

    Depth and head count stay, so each ApproxNet head distils one main head.
    """
    k = int(config.approx_factor)
    d, f, heads = config.hidden_size, config.intermediate_size, config.num_attention_heads
    if k < 1 or d % k or f % k or (d // k) % heads:
        raise ValueError(
            f"approx_factor {k} must divide hidden_size ({d}) and intermediate_size ({f}), and hidden_size / "
            f"approx_factor must be a multiple of num_attention_heads ({heads})"
        )
    return BertConfig(
        hidden_size=d // k, intermediate_size=f // k, num_attention_heads=heads,
        num_hidden_layers=config.num_hidden_layers, hidden_act=config.hidden_act, layer_norm_eps=config.layer_norm_eps,
        hidden_dropout_prob=config.hidden_dropout_prob, attention_probs_dropout_prob=0.0,
        initializer_range=config.initializer_range,
    )


@dataclass
class ApproxNetOutput:
    """attention: `[L, B, S, S]` head-averaged probabilities of each layer (zero on padding keys).
    rows: `[total]` flat positions `b * S + s` of the real tokens, in packed order.
    With `keep_all` only: head_probs `[L, B, heads, S, S]` and hidden_states `[L, total, d / k]` (packed rows)."""

    attention: torch.Tensor
    rows: torch.Tensor
    head_probs: torch.Tensor = None
    hidden_states: torch.Tensor = None


class ApproxNet(nn.Module):
    """The main encoder shrunk by `approx_factor`, reading the main embeddings through `down`.

    Linear layers run on the real tokens only (`[total, d / k]`), attention on the padded batch in one
    call per layer. `hidden_proj`, `pooler` and `classifier` serve distillation only (hidden-state MSE and
    prediction KL) and are not run at inference.
    """

    def __init__(self, config):
        super().__init__()
        small = approx_config(config)
        self.down = nn.Linear(config.hidden_size, small.hidden_size)
        self.down_norm = nn.LayerNorm(small.hidden_size, eps=config.layer_norm_eps)
        self.layer = nn.ModuleList([BertLayer(small, layer_idx=i) for i in range(small.num_hidden_layers)])
        self.hidden_proj = nn.Linear(small.hidden_size, config.hidden_size)
        self.pooler = nn.Linear(small.hidden_size, small.hidden_size)
        self.classifier = nn.Linear(small.hidden_size, config.num_labels)

    def forward(self, hidden, real, keep_all: bool = False) -> ApproxNetOutput:
        """hidden: `[B, S, d]` main embeddings output (detached here); real: `[B, S]` bool.
        keep_all: also return what distillation needs (per-head probabilities, hidden states)."""
        rows = real.flatten().nonzero().squeeze(1)
        x = self.down_norm(self.down(hidden.detach().flatten(0, 1)[rows]))
        maps, probs, states = [], [], []
        for layer in self.layer:
            x, p = run_layer(layer, x, lambda q, k, v: packed_rows_attention(q, k, v, rows, real))
            maps.append(p.mean(1))
            if keep_all:
                probs.append(p)
                states.append(x)
        if not keep_all:
            return ApproxNetOutput(attention=torch.stack(maps), rows=rows)
        return ApproxNetOutput(torch.stack(maps), rows, torch.stack(probs), torch.stack(states))

    def logits(self, hidden_states, real):
        """ApproxNet's own prediction from its final CLS state: hidden_states `[L, total, d/k]` -> `[B, labels]`."""
        first = F.pad(real.sum(1).cumsum(0), (1, 0))[:-1]  # packed row of each sequence's first real token
        return self.classifier(torch.tanh(self.pooler(hidden_states[-1][first])))


# ----------------------------------------------------------------------------------------------------
# Distillation losses


def attention_kl(teacher, student, real):
    """Mean over layers, heads and real query rows of KL(teacher row || student row).

    teacher, student: `[L, B, heads, S, S]` probabilities (zero on padding keys); real: `[B, S]` bool.
    """
    t, s = teacher.float(), student.float()
    kl = (t * (t.clamp_min(1e-12).log() - s.clamp_min(1e-12).log())).sum(-1)  # [L, B, heads, S]
    rows = real.float()[None, :, None, :]
    return (kl * rows).sum() / (rows.sum() * kl.shape[0] * kl.shape[2])


def hidden_mse(teacher, student):
    """Mean squared error over layers, tokens and features: teacher, student `[L, tokens, d]` (real tokens only)."""
    return F.mse_loss(student.float(), teacher.float())


def prediction_kl(teacher_logits, student_logits):
    """KL(softmax(teacher) || softmax(student)) per example, averaged; MSE for a single (regression) output."""
    if teacher_logits.shape[-1] == 1:
        return F.mse_loss(student_logits.float(), teacher_logits.float())
    return F.kl_div(
        F.log_softmax(student_logits.float(), -1), F.log_softmax(teacher_logits.float(), -1),
        log_target=True, reduction="batchmean",
    )
