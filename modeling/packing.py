"""Packed-token tensors: every sequence of a batch keeps its own tokens, and nothing is padded.

A packed batch is one `[total_tokens, hidden]` matrix plus `cu_seqlens`, the int32 offsets of its
sequences (sequence i owns rows `cu_seqlens[i]:cu_seqlens[i+1]`). Rows of one sequence are contiguous
and in their original order, so the first row of each sequence is its CLS token.

These are small pure functions on tensors; the encoder loop in `engine.py` composes them.

On a GPU every value the host reads from a tensor (`.tolist()`, `.item()`, `bool(t)`, `nonzero`, a boolean
mask index) makes the CPU wait until the GPU is idle, so kernel launches stop overlapping with work. The
packed state (`Packed`) therefore lives on the device; `pack` and `compact` read one small vector each (the
new lengths, which the CPU attention loop and the variable-length kernel need on the host anyway) and
everything else is computed from it without further reads.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree


def lengths_to_cu(lengths: torch.Tensor) -> torch.Tensor:
    """`[n]` sequence lengths -> `[n + 1]` int32 offsets."""
    return F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))


def row_to_sequence(lengths: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """`[n]` lengths -> `[total]` index of the sequence each packed row belongs to (pass `total` to avoid a
    host read on a GPU)."""
    return torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths, output_size=total)


@dataclass
class Packed:
    """Where the rows of a packed batch come from. Tensors are on the batch's device.

    index: `[total]` each row's flat position `b * seq + s` in the padded layout.
    cu_seqlens: `[n + 1]` int32 offsets of the n packed sequences.
    row_seq: `[total]` packed sequence (0..n-1) of each row.
    sequence: `[n]` batch index of each packed sequence.
    lengths: the n sequence lengths on the host (a list of int).
    """

    index: torch.Tensor
    cu_seqlens: torch.Tensor
    row_seq: torch.Tensor
    sequence: torch.Tensor
    lengths: list


def pack(real: torch.Tensor) -> Packed:
    """The packed layout of a padded batch's real tokens `[batch, seq]` bool, with one host read (the lengths).

    Raises ValueError when a row has no real token.
    """
    lens = real.sum(1)
    lengths = lens.tolist()  # the one host read
    if min(lengths) == 0:
        raise ValueError("every sequence needs at least one real token (a row of attention_mask is all zeros)")
    total = sum(lengths)
    return Packed(
        index=torch.nonzero_static(real.flatten(), size=total).squeeze(1),
        cu_seqlens=lengths_to_cu(lens),
        row_seq=row_to_sequence(lens, total),
        sequence=torch.arange(len(lengths), device=real.device),
        lengths=lengths,
    )


def compact(packed: Packed, keep: torch.Tensor | None = None, keep_sequence: torch.Tensor | None = None):
    """The rows that stay: where `keep` `[total]` is True, in sequences where `keep_sequence` `[n]` is True.

    One host read (the new lengths, and which sequences stay). Returns `(rows, Packed)` with rows `[kept]`
    the indices of the rows that stay, in order, or None when every row stays (nothing to copy). A sequence
    never loses all its rows through `keep` (the engine always keeps CLS); it leaves through `keep_sequence`.
    """
    n = len(packed.lengths)
    if keep_sequence is not None:
        row_keep = keep_sequence[packed.row_seq]
        keep = row_keep if keep is None else keep & row_keep
    seen = F.pad(keep.cumsum(0), (1, 0))
    cu = packed.cu_seqlens.long()
    lens = seen[cu[1:]] - seen[cu[:-1]]  # [n] rows each sequence keeps
    host = (lens if keep_sequence is None else torch.cat([lens, keep_sequence.long()])).tolist()  # the one read
    lengths, staying = host[:n], (host[n:] or [1] * n)
    total = sum(lengths)
    if total == len(packed.index) and all(staying):
        return None
    rows = torch.nonzero_static(keep, size=total).squeeze(1)
    sequence = packed.sequence
    if not all(staying):
        slots = torch.nonzero_static(keep_sequence, size=sum(staying)).squeeze(1)
        lens, sequence = lens[slots], sequence[slots]
        lengths = [length for length, stays in zip(lengths, staying) if stays]
    return rows, Packed(
        index=packed.index[rows],
        cu_seqlens=lengths_to_cu(lens),
        row_seq=row_to_sequence(lens, total),
        sequence=sequence,
        lengths=lengths,
    )


def first_rows(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Row index of each sequence's first (CLS) token."""
    return cu_seqlens[:-1].long()


def rank_in_sequence(score: torch.Tensor, row_seq: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Each row's rank by descending score within its own sequence (0 = its best row).

    Args:
        score: `[total]` float; row_seq: `[total]` sequence of each row; cu_seqlens: `[n + 1]` offsets.

    Returns:
        `[total]` long. Ties keep row order.
    """
    order = torch.argsort(score, descending=True, stable=True)
    order = order[torch.argsort(row_seq[order], stable=True)]  # grouped by sequence, best first
    # rows of a sequence are contiguous, so the p-th row of `order` belongs to sequence row_seq[p]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=score.device) - cu_seqlens.long()[row_seq]
    return rank


def keep_decision(score: torch.Tensor, row_seq: torch.Tensor, cu_seqlens: torch.Tensor, min_kept: int = 0,
                  protected: torch.Tensor | None = None):
    """Which rows of a packed batch stay: `score >= 0`, the protected rows (by default each sequence's first
    row, its CLS), and each sequence's `min_kept` best-scored rows (protected rows counted), so short inputs keep
    a few tokens.

    Args:
        score: `[total]` keep score (a logit: >= 0 keeps), or a bool decision taken as it is (protected rows added).
        row_seq: `[total]` sequence of each row; cu_seqlens: `[n + 1]` offsets.
        protected: `[total]` bool rows that always stay, or None for each sequence's first row.

    Returns:
        `[total]` bool.
    """
    if protected is None:
        protected = torch.zeros_like(row_seq, dtype=torch.bool).index_fill(0, first_rows(cu_seqlens), True)
    if score.dtype == torch.bool:
        return score | protected
    score = score.float().masked_fill(protected, float("inf"))
    keep = score >= 0
    if min_kept > 0:
        keep |= rank_in_sequence(score, row_seq, cu_seqlens) < min_kept
    return keep


def floor_mask(score: torch.Tensor, alive: torch.Tensor, first: torch.Tensor, min_kept: int) -> torch.Tensor:
    """The padded-layout twin of `keep_decision`'s floor: each row's `min_kept` best-scored alive tokens.

    Args:
        score: `[batch, seq]` float; alive: `[batch, seq]` bool, the tokens still in; first: `[batch, seq]`
        bool, each row's CLS (ranked first).

    Returns:
        `[batch, seq]` bool (no gradient).
    """
    s = score.detach().float().masked_fill(~alive, float("-inf")).masked_fill(first, float("inf"))
    rank = s.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
    return (rank < min_kept) & alive


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
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p).transpose(1, 2).flatten(0, 1)
    if max(lengths) <= SHORT_SEQUENCE and dropout_p == 0.0:
        return padded_attention(q, k, v, cu_seqlens, lengths)
    # One SDPA call per sequence: faster on CPU than block-diagonal masks or nested tensors. The inputs
    # must be 4-D: 3-D inputs fall back to the slow math kernel on CPU (about 8x slower).
    outs = [
        F.scaled_dot_product_attention(_bhsd(qi), _bhsd(ki), _bhsd(vi), dropout_p=dropout_p)[0]
        for qi, ki, vi in zip(q.split(lengths), k.split(lengths), v.split(lengths))
    ]
    return torch.cat(outs, dim=1).transpose(0, 1)


# Up to this many tokens per sequence, one padded batched attention is at least as fast as a kernel call per
# sequence on CPU: the padding costs less than the calls (heavily skimmed late layers keep a few tokens per
# sequence). Measured with results/short_attention/short_attention_bench.py: about 2.5x faster at 4, 1.7x at 8,
# even at 12.
SHORT_SEQUENCE = 12


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
    qp, kp, vp = (x[rows].transpose(1, 2) for x in (q, k, v))  # [n, heads, longest, head_dim]
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
    if q.is_cuda:  # one batched call, no loop over sequences
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
    scale = q.shape[-1] ** -0.5
    for qi, ki, vi in zip(q.split(lengths), k.split(lengths), v.split(lengths)):
        qi, ki, vi = qi.transpose(0, 1), ki.transpose(0, 1), vi.transpose(0, 1)
        probs = torch.softmax((qi @ ki.transpose(1, 2)).float() * scale, dim=-1)
        yield probs, probs.to(vi.dtype) @ vi


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
