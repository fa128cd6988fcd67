"""Packed-token tensors: every sequence of a batch keeps its own tokens, and nothing is padded.

A packed batch is one `[total_tokens, hidden]` matrix plus `cu_seqlens`, the int32 offsets of its
sequences (sequence i owns rows `cu_seqlens[i]:cu_seqlens[i+1]`). Rows of one sequence are contiguous
and in their original order, so the first row of each sequence is its CLS token.

These are small pure functions on tensors; the encoder loop in `engine.py` composes them with the attention
functions of `attention.py`.

On a GPU every value the host reads from a tensor (`.tolist()`, `.item()`, `bool(t)`, `nonzero`, a boolean
mask index) makes the CPU wait until the GPU is idle, so kernel launches stop overlapping with work. The
packed state (`Packed`) therefore lives on the device; `pack` and `compact` read one small vector each (the
new lengths, which the CPU attention loop and the variable-length kernel need on the host anyway) and
everything else is computed from it without further reads.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


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
