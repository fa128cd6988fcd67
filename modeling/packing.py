"""Packed-token tensors: every sequence of a batch keeps its own tokens, and nothing is padded.

A packed batch is one `[total_tokens, hidden]` matrix plus `cu_seqlens`, the int32 offsets of its
sequences (sequence i owns rows `cu_seqlens[i]:cu_seqlens[i+1]`). Rows of one sequence are contiguous
and in their original order, so the first row of each sequence is its CLS token.

These are small pure functions on tensors; the encoder loop in `engine.py` composes them.
"""

import torch
import torch.nn.functional as F


def unpad(hidden: torch.Tensor, real: torch.Tensor):
    """Packs the real tokens of a padded batch.

    Args:
        hidden: `[batch, seq, hidden]`.
        real: `[batch, seq]` bool, True for real tokens.

    Returns:
        packed `[total, hidden]`, index `[total]` (each row's flat position `b * seq + s` in the padded
        layout), cu_seqlens `[batch + 1]` int32, lengths (list of int, one per sequence).
    """
    index = real.flatten().nonzero().squeeze(1)
    lengths = real.sum(1, dtype=torch.int32)
    packed = hidden.flatten(0, 1).index_select(0, index)
    return packed, index, lengths_to_cu(lengths), lengths.tolist()


def pad(packed: torch.Tensor, index: torch.Tensor, batch: int, seq: int) -> torch.Tensor:
    """Inverse of `unpad`: `[total, hidden]` rows back to `[batch, seq, hidden]`, zeros elsewhere."""
    out = packed.new_zeros(batch * seq, packed.shape[-1])
    out.index_copy_(0, index, packed)
    return out.view(batch, seq, -1)


def lengths_to_cu(lengths: torch.Tensor) -> torch.Tensor:
    """`[n]` sequence lengths -> `[n + 1]` int32 offsets."""
    return F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))


def row_to_sequence(lengths: torch.Tensor) -> torch.Tensor:
    """`[n]` lengths -> `[total]` index of the sequence each packed row belongs to."""
    return torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)


def keep_rows(keep: torch.Tensor, row_seq: torch.Tensor, num_seqs: int):
    """Selects the rows where `keep` is True, and the new per-sequence lengths.

    Args:
        keep: `[total]` bool.
        row_seq: `[total]` sequence index of each row (see `row_to_sequence`).
        num_seqs: number of sequences (a sequence may end up with length 0).

    Returns:
        rows `[kept]` (indices into the old rows, in order) and lengths `[num_seqs]` int32.
    """
    rows = keep.nonzero().squeeze(1)
    lengths = torch.bincount(row_seq[rows], minlength=num_seqs).to(torch.int32)
    return rows, lengths


def first_rows(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Row index of each sequence's first (CLS) token."""
    return cu_seqlens[:-1].long()


def varlen_attention(q, k, v, cu_seqlens, lengths, dropout_p: float = 0.0):
    """Softmax attention inside each sequence of a packed batch.

    Args:
        q, k, v: `[total, heads, head_dim]`.
        cu_seqlens: `[n + 1]` int32 offsets; lengths: the same as a list of int.

    Returns:
        `[total, heads, head_dim]`.
    """
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and dropout_p == 0.0 and _HAS_VARLEN:
        max_len = max(lengths)
        return _varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len)
    if min(lengths) == max(lengths):  # no ragged edges: one batched call
        n, heads = len(lengths), q.shape[1]
        q, k, v = (x.view(n, lengths[0], heads, -1).transpose(1, 2) for x in (q, k, v))
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p).transpose(1, 2).flatten(0, 1)
    # One SDPA call per sequence: faster on CPU than block-diagonal masks or nested tensors. The inputs
    # must be 4-D: 3-D inputs fall back to the slow math kernel on CPU (about 8x slower).
    outs = [
        F.scaled_dot_product_attention(_bhsd(qi), _bhsd(ki), _bhsd(vi), dropout_p=dropout_p)[0]
        for qi, ki, vi in zip(q.split(lengths), k.split(lengths), v.split(lengths))
    ]
    return torch.cat(outs, dim=1).transpose(0, 1)


def _bhsd(x):
    """`[seq, heads, dim]` -> `[1, heads, seq, dim]` (a view)."""
    return x.unsqueeze(0).transpose(1, 2)


def varlen_attention_with_received(q, k, v, lengths):
    """Like `varlen_attention`, and also the attention each token receives.

    The received score of token j is `mean_h mean_i A[h, i, j]`: attention probability averaged over
    heads and over the (real) query rows of its own sequence, as Learned Token Pruning scores tokens.

    Returns:
        context `[total, heads, head_dim]`, received `[total]` float32.
    """
    ctx, received = [], []
    scale = q.shape[-1] ** -0.5
    for qi, ki, vi in zip(q.split(lengths), k.split(lengths), v.split(lengths)):
        qi, ki, vi = qi.transpose(0, 1), ki.transpose(0, 1), vi.transpose(0, 1)
        probs = torch.softmax((qi @ ki.transpose(1, 2)).float() * scale, dim=-1)
        ctx.append(probs.to(vi.dtype) @ vi)
        received.append(probs.mean(dim=(0, 1)))
    return torch.cat(ctx, dim=1).transpose(0, 1), torch.cat(received)


try:  # torch >= 2.9 ships a variable-length flash-attention entry point for CUDA
    from torch.nn.attention.varlen import varlen_attn as _varlen_attn

    _HAS_VARLEN = True
except ImportError:  # pragma: no cover - older torch
    _varlen_attn = None
    _HAS_VARLEN = False
