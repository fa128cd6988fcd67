"""Attention on packed batches: softmax attention inside each sequence of a `[total_tokens, ...]` matrix (`packing.py`),
and the two variants that also return what a selector reads from the attention probabilities (LTP's received
attention, Block-Skim's diagonal blocks). The fastest path differs by device and dtype; each function picks it.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree

from .packing import lengths_to_cu, row_to_sequence


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
    if q.is_cuda and dropout_p == 0.0:  # no loop of kernel launches on a GPU: one padded batched call
        return padded_attention(q, k, v, cu_seqlens, lengths)
    if min(lengths) == max(lengths):  # no ragged edges: one batched call
        n, heads = len(lengths), q.shape[1]
        q, k, v = (x.view(n, lengths[0], heads, -1).transpose(1, 2) for x in (q, k, v))
        return _attend(q, k, v, dropout_p).transpose(1, 2).flatten(0, 1)
    if max(lengths) <= SHORT_SEQUENCE and dropout_p == 0.0:
        return padded_attention(q, k, v, cu_seqlens, lengths)
    # One call per sequence: faster on CPU than block-diagonal masks, nested tensors, padding to the longest or
    # padding sequences of similar lengths together (results/short_attention).
    if q.dtype == torch.float32 and dropout_p == 0.0 and max(lengths) <= MATMUL_ATTENTION_MAX:
        return torch.cat([c for _, c in _sequence_attention(q, k, v, lengths)], dim=1).transpose(0, 1)
    outs = [_attend(_bhsd(qi), _bhsd(ki), _bhsd(vi), dropout_p)[0]
            for qi, ki, vi in zip(q.split(lengths), k.split(lengths), v.split(lengths))]
    return torch.cat(outs, dim=1).transpose(0, 1)


# Up to this many tokens, plain matmuls and softmax beat SDPA's CPU kernel in float32 (about 1.4x-1.7x at 8-64
# tokens, even at 256, 3-4x slower at 512: results/short_attention/attention_bench.py).
MATMUL_ATTENTION_MAX = 128


def _attend(q, k, v, dropout_p: float = 0.0):
    """Softmax attention `[batch, heads, seq, head_dim]` in and out, by the kernel fastest for its size on CPU (CUDA
    reaches it only with dropout, which takes SDPA). The inputs must be 4-D: 3-D inputs send SDPA to its slow math
    kernel on CPU (about 8x slower)."""
    if q.shape[-2] <= MATMUL_ATTENTION_MAX and q.dtype == torch.float32 and dropout_p == 0.0:
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)
        return torch.matmul(scores.softmax(-1), v)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


# Up to this many tokens per sequence, one padded batched attention is at least as fast as a kernel call per
# sequence on CPU: the padding costs less than the calls (heavily skimmed late layers keep a few tokens per
# sequence). results/short_attention/attention_bench.py: about 2x faster at 4-8 tokens and at 16, slower at 64.
SHORT_SEQUENCE = 16


def padded_attention(q, k, v, cu_seqlens, lengths, need_received: bool = False):
    """Attention of ragged sequences as one padded batch: `[total, heads, head_dim]` in and out.

    Sequences are padded to the longest (padded keys masked out, padded queries dropped from the output);
    no value is read back to the host. With `need_received`, also the attention each token receives
    `[total]` float32, as `varlen_attention_with_received` computes it.
    float32 runs plain matmuls and softmax (the fastest here). Half precision runs SDPA with a key mask instead:
    the matmul path rounds scores and probabilities to 16 bits, so a sequence's result would depend on whether it
    ran here or in a per-sequence SDPA call, i.e. on the rest of the batch (bf16 logits moved by up to 2.7e-2).
    SDPA is the per-sequence path's kernel, and its masked keys add exact zeros: batch and alone agree exactly
    (tests/test_transformers_compat.py), and it still beats one call per sequence below `SHORT_SEQUENCE`.
    """
    ctx, probs, layout = _padded(q, k, v, cu_seqlens, lengths, need_probs=need_received)
    if not need_received:
        return ctx
    real, lens, slot = layout
    queries = real[:, None, :, None].to(probs.dtype)  # padded query rows do not count
    received = (probs * queries).sum((1, 2)) / (lens[:, None] * probs.shape[1])  # [n, longest]
    return ctx, received.flatten().index_select(0, slot)


def _padded(q, k, v, cu_seqlens, lengths, need_probs: bool):
    """The padded batch computation behind `padded_attention`: context `[total, heads, head_dim]`, probabilities
    `[n, heads, longest, longest]` float32 (None unless float32 or `need_probs`; zero on padded keys) and the
    layout `(real [n, longest] bool, lens [n], slot [total] each row's padded slot)`."""
    longest, total = max(lengths), q.shape[0]
    cu = cu_seqlens.long()
    lens = cu[1:] - cu[:-1]
    pos = torch.arange(longest, device=q.device)
    real = pos < lens[:, None]  # [n, longest]
    rows = (cu[:-1, None] + pos).clamp(max=total - 1)  # padded slots read any real row
    # [n, heads, longest, head_dim]; index_select is ~10x faster than x[rows] on CPU, and batched matmuls of
    # contiguous operands up to 10x faster than of transposed views
    qp, kp, vp = (x.index_select(0, rows.flatten()).unflatten(0, rows.shape).transpose(1, 2).contiguous()
                  for x in (q, k, v))
    probs = None
    if q.dtype != torch.float32 and not need_probs:
        out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=real[:, None, None, :])
    else:
        scores = torch.matmul(qp, kp.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
        probs = scores.masked_fill(~real[:, None, None, :], float("-inf")).softmax(-1)
        out = torch.matmul(probs.to(vp.dtype), vp)
    out = out.transpose(1, 2).flatten(0, 1)  # [n * longest, heads, head_dim]
    row_seq = row_to_sequence(lens, total)
    slot = row_seq * longest + torch.arange(total, device=q.device) - cu[row_seq]  # each row's padded slot
    return out.index_select(0, slot), probs, (real, lens, slot)


def _bhsd(x):
    """`[seq, heads, dim]` -> `[1, heads, seq, dim]` (a view)."""
    return x.unsqueeze(0).transpose(1, 2)


def varlen_attention_with_received(q, k, v, cu_seqlens, lengths):
    """Like `varlen_attention`, and also the attention each token receives.

    The received score of token j is `mean_h mean_i A[h, i, j]`: attention probability averaged over
    heads and over the (real) query rows of its own sequence, as Learned Token Pruning scores tokens.

    Returns:
        context `[total, heads, head_dim]`, received `[total]` float32.
    """
    # one batched call, no loop over sequences: on CUDA, and for short float32 sequences on CPU (half precision
    # keeps the per-sequence matmuls, whose rounding does not depend on the rest of the batch)
    if q.is_cuda or (max(lengths) <= SHORT_SEQUENCE and q.dtype == torch.float32):
        return padded_attention(q, k, v, cu_seqlens, lengths, need_received=True)
    ctx, received = [], []
    for probs, c in _sequence_attention(q, k, v, lengths):
        ctx.append(c)
        received.append(probs.mean(dim=(0, 1)))
    return torch.cat(ctx, dim=1).transpose(0, 1), torch.cat(received)


@dataclass
class AttentionBlocks:
    """The diagonal `size x size` blocks of each sequence's attention probabilities (Block-Skim's signal).

    Blocks tile each sequence's current tokens in order, from its first one: block k holds the tokens of
    ranks `k*size .. k*size+size-1` among the tokens still in the sequence. A sequence's last block may be
    shorter; its missing rows and columns are zeros (as padding would give).

    probs: `[blocks, heads, size, size]` float32, real blocks only (no block is all padding).
    token_block: `[...]` the block of each token, shaped like the decision `after_attention` returns
        (`[total]` packed rows at inference, `[batch, seq]` in training). Padding and dropped tokens
        point to some valid block; the engine ignores decisions on them.
    sequence: `[blocks]` batch index of each block's sequence.
    start: `[blocks]` position of each block's first token among its sequence's real tokens (the
        original position for right-padded input, whatever was dropped before).
    length: `[blocks]` tokens in each block, `size` but for a sequence's last block.
    protected: `[blocks]` bool, blocks holding a token no decision may drop (set by the engine).
    """

    probs: torch.Tensor
    token_block: torch.Tensor
    sequence: torch.Tensor
    start: torch.Tensor
    length: torch.Tensor
    protected: torch.Tensor = None


# a pytree node, so (reentrant) activation checkpointing sees its tensors
pytree.register_dataclass(AttentionBlocks)


def diagonal_blocks(probs: torch.Tensor, size: int) -> torch.Tensor:
    """The `size x size` blocks on the diagonal of attention probabilities, zero-padded at the end.

    Args:
        probs: `[..., heads, n, n]`.

    Returns:
        `[..., ceil(n / size), heads, size, size]`.
    """
    n = probs.shape[-1]
    num_blocks = -(-n // size)
    extra = num_blocks * size - n
    probs = F.pad(probs, (0, extra, 0, extra))
    grid = probs.unflatten(-1, (num_blocks, size)).unflatten(-3, (num_blocks, size))  # [..., h, nb, s, nb, s]
    return grid.diagonal(dim1=-4, dim2=-2).movedim(-1, -4)  # [..., nb, h, s, s]


def block_layout(lengths: torch.Tensor, size: int, host_lengths: list | None = None):
    """Blocks of `size` rows tiling each sequence of a packed batch from its first row.

    Args:
        lengths: `[n]` sequence lengths (int tensor); host_lengths: the same as a list, if the caller has it
            (then no value is read back from the device).

    Returns:
        row_block `[total]` (block of each row), block_row `[blocks]` (first row of each block),
        block_length `[blocks]`, block_sequence `[blocks]` (index of each block's sequence); all long.
    """
    lengths = lengths.long()
    per_seq = (lengths + size - 1) // size
    total = sum(host_lengths) if host_lengths is not None else None
    num_blocks = sum(-(-n // size) for n in host_lengths) if host_lengths is not None else None
    block_sequence = row_to_sequence(per_seq, num_blocks)
    first_block = per_seq.cumsum(0) - per_seq
    first_row = lengths.cumsum(0) - lengths
    local = torch.arange(len(block_sequence), device=lengths.device) - first_block[block_sequence]
    block_row = first_row[block_sequence] + local * size
    block_length = (lengths[block_sequence] - local * size).clamp(max=size)
    row_sequence = row_to_sequence(lengths, total)
    row_local = torch.arange(len(row_sequence), device=lengths.device) - first_row[row_sequence]
    row_block = first_block[row_sequence] + torch.div(row_local, size, rounding_mode="floor")
    return row_block, block_row, block_length, block_sequence


def _sequence_attention(q, k, v, lengths):
    """Yields `(probs [heads, n, n] float32, context [heads, n, head_dim])` for each packed sequence."""
    # slices of [heads, total, head_dim] views (keys as [heads, head_dim, total]), and in float32 the queries scaled
    # once: few ops per sequence, which is what short sequences cost on CPU (about 25% less than 4-D `_attend`
    # calls at 24-64 tokens). Half precision scales the float32 scores, as the padded path does.
    half = q.dtype != torch.float32
    scale = q.shape[-1] ** -0.5
    qt = (q if half else q * scale).transpose(0, 1)
    kt, vt = k.permute(1, 2, 0), v.transpose(0, 1)
    start = 0
    for n in lengths:
        end = start + n
        scores = torch.bmm(qt[:, start:end], kt[:, :, start:end])
        probs = (scores.float().mul_(scale) if half else scores).softmax(-1)
        yield probs, torch.bmm(probs.to(vt.dtype) if half else probs, vt[:, start:end])
        start = end


def varlen_attention_with_blocks(q, k, v, lengths, size, rank, sequence_ids):
    """Like `varlen_attention`, and also the diagonal blocks of each sequence's attention probabilities.

    Args:
        q, k, v: `[total, heads, head_dim]`; lengths: list of int.
        size: block size.
        rank: `[total]` each row's position among its sequence's real tokens.
        sequence_ids: `[n]` batch index of each packed sequence.

    Returns:
        context `[total, heads, head_dim]`, `AttentionBlocks` (blocks in packed order).
    """
    cu_seqlens = lengths_to_cu(torch.as_tensor(lengths, device=q.device))
    if q.is_cuda:  # one padded batched call, no loop over sequences
        ctx, probs, (real, _, _) = _padded(q, k, v, cu_seqlens, lengths, need_probs=True)
        probs = probs * real[:, None, :, None]  # padded query rows: zeros, as a short last block's missing rows
        grid = diagonal_blocks(probs, size)  # [n, blocks of the longest, heads, size, size]
        is_block = torch.arange(grid.shape[1], device=q.device) < (real.sum(1, keepdim=True) + size - 1) // size
        num_blocks = sum(-(-n // size) for n in lengths)  # known on the host: no read back
        blocks = grid.flatten(0, 1)[torch.nonzero_static(is_block.flatten(), size=num_blocks).squeeze(1)]
    else:  # one call per sequence: faster on CPU
        ctx, blocks = [], []
        for probs, c in _sequence_attention(q, k, v, lengths):
            ctx.append(c)
            blocks.append(diagonal_blocks(probs, size))
        ctx, blocks = torch.cat(ctx, dim=1).transpose(0, 1), torch.cat(blocks)
    row_block, block_row, block_length, block_sequence = block_layout(
        torch.as_tensor(lengths, device=q.device), size, lengths
    )
    return ctx, AttentionBlocks(
        probs=blocks,
        token_block=row_block,
        sequence=sequence_ids[block_sequence],
        start=rank[block_row],
        length=block_length,
    )


def padded_attention_blocks(probs: torch.Tensor, real: torch.Tensor, kept: torch.Tensor, size: int) -> AttentionBlocks:
    """`AttentionBlocks` of a padded batch, tiled over each row's kept tokens as the packed path tiles them.

    Args:
        probs: `[batch, heads, seq, seq]` attention probabilities (zero on padding and dropped keys).
        real: `[batch, seq]` bool; kept: `[batch, seq]` bool, the tokens still in (a subset of real).
        size: block size.
    """
    batch, seq = real.shape
    rank = real.long().cumsum(1) - 1
    # where each kept token sits once the others are gone (others: the slot of the kept token before them)
    token_slot = (kept.long().cumsum(1) - 1).clamp_min(0)
    if not bool((kept[:, 1:] <= kept[:, :-1]).all()):  # kept tokens are not a prefix: move them to the front
        order = torch.sort((~kept).to(torch.int8), dim=1, stable=True).indices
        probs = probs.take_along_dim(order[:, None, :, None], 2).take_along_dim(order[:, None, None, :], 3)
        rank = rank.gather(1, order)
    counts = kept.sum(1)
    sorted_kept = torch.arange(seq, device=real.device) < counts[:, None]
    probs = probs * sorted_kept[:, None, :, None].to(probs.dtype)  # dropped or padding query rows
    grid = diagonal_blocks(probs, size)  # [batch, nb, heads, size, size]
    num_blocks = grid.shape[1]
    local = torch.arange(num_blocks, device=real.device)
    length = (counts[:, None] - local * size).clamp(0, size)  # [batch, nb]
    is_real = length > 0
    number = is_real.flatten().long().cumsum(0).view(batch, num_blocks) - 1  # index among real blocks
    token_block = number.gather(1, torch.div(token_slot, size, rounding_mode="floor"))
    return AttentionBlocks(
        probs=grid[is_real],
        token_block=token_block,
        sequence=torch.arange(batch, device=real.device)[:, None].expand(batch, num_blocks)[is_real],
        start=rank.gather(1, (local * size).clamp(max=seq - 1)[None].expand(batch, -1))[is_real],
        length=length[is_real],
    )


try:  # torch >= 2.9 ships a variable-length flash-attention entry point for CUDA
    from torch.nn.attention.varlen import varlen_attn as _varlen_attn

    _HAS_VARLEN = True
except ImportError:  # pragma: no cover - older torch
    _varlen_attn = None
    _HAS_VARLEN = False
