"""The packing functions against a plain per-sequence reference."""

import pytest
import torch

from tokenskim.modeling.attention import MATMUL_ATTENTION_MAX, SHORT_SEQUENCE, padded_attention, varlen_attention
from tokenskim.modeling.packing import floor_mask, keep_decision, lengths_to_cu, pack, row_to_sequence


def reference_attention(q, k, v, lengths):
    """Each sequence alone through the math of softmax attention."""
    outs = []
    for qi, ki, vi in zip(q.split(lengths), k.split(lengths), v.split(lengths)):
        scores = torch.einsum("qhd,khd->hqk", qi, ki) / qi.shape[-1] ** 0.5
        outs.append(torch.einsum("hqk,khd->qhd", scores.softmax(-1), vi))
    return torch.cat(outs)


# ragged and short (the padded path), ragged and just too long, equal lengths, long, a single sequence, both sides
# of the matmul/SDPA kernel switch
@pytest.mark.parametrize("lengths", [[3, 1, 7, SHORT_SEQUENCE, 2], [3, 1, SHORT_SEQUENCE + 1, 2], [5, 5, 5], [40, 3, 17], [1],
                                     [MATMUL_ATTENTION_MAX, 3, MATMUL_ATTENTION_MAX + 1], [MATMUL_ATTENTION_MAX + 1] * 2])
def test_varlen_attention_matches_each_sequence_alone(lengths):
    torch.manual_seed(0)
    q, k, v = (torch.randn(sum(lengths), 4, 8) for _ in range(3))
    cu = lengths_to_cu(torch.tensor(lengths))
    expected = reference_attention(q, k, v, lengths)
    torch.testing.assert_close(varlen_attention(q, k, v, cu, lengths), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded_attention(q, k, v, cu, lengths), expected, atol=1e-5, rtol=1e-5)


def test_pack_round_trip():
    hidden = torch.randn(3, 6, 4)
    real = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    state = pack(real)
    assert state.lengths == [3, 6, 1] and state.cu_seqlens.tolist() == [0, 3, 9, 10]
    assert state.row_seq.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 2] and state.sequence.tolist() == [0, 1, 2]
    packed = hidden.flatten(0, 1).index_select(0, state.index)
    back = hidden.new_zeros(18, 4).index_copy_(0, state.index, packed).view(3, 6, 4)
    torch.testing.assert_close(back[real], hidden[real])
    assert bool((back[~real] == 0).all())
    with pytest.raises(ValueError, match="all zeros"):
        pack(torch.tensor([[True, False], [False, False]]))


def reference_keep(score, lengths, min_kept):
    """Each sequence alone: score >= 0, CLS, and its min_kept best rows (CLS first)."""
    keeps = []
    for s in score.split(lengths):
        s = s.clone()
        s[0] = float("inf")
        keep = s >= 0
        keep[s.argsort(descending=True, stable=True)[:min_kept]] = True
        keeps.append(keep)
    return torch.cat(keeps)


@pytest.mark.parametrize("min_kept", [0, 1, 3, 50])
def test_keep_decision_matches_each_sequence_alone(min_kept):
    lengths = [1, 5, 2, 9, 4]
    score = torch.randn(sum(lengths), generator=torch.Generator().manual_seed(min_kept)) - 1.0
    cu = lengths_to_cu(torch.tensor(lengths))
    keep = keep_decision(score, row_to_sequence(torch.tensor(lengths)), cu, min_kept)
    assert keep.tolist() == reference_keep(score, lengths, min_kept).tolist()
    if min_kept == 50:
        assert bool(keep.all())
    counts = [int(k.sum()) for k in keep.split(lengths)]
    assert all(c >= min(min_kept, n) and c >= 1 for c, n in zip(counts, lengths))


def test_floor_mask_matches_keep_decision_on_the_alive_tokens():
    """The padded twin: the floor among the tokens still in equals the packed floor on those tokens alone."""
    lengths, seq, min_kept = [6, 3, 8], 10, 3
    g = torch.Generator().manual_seed(0)
    score = torch.randn(len(lengths), seq, generator=g) - 5.0  # every score below 0: only the floor keeps
    real = torch.arange(seq) < torch.tensor(lengths)[:, None]
    alive = real & (torch.rand(len(lengths), seq, generator=g) > 0.3)
    alive[:, 0] = True
    first = torch.zeros_like(real)
    first[:, 0] = True
    floor = floor_mask(score, alive, first, min_kept)
    alive_lengths = alive.sum(1).tolist()
    packed = keep_decision(score[alive], row_to_sequence(torch.tensor(alive_lengths)),
                           lengths_to_cu(torch.tensor(alive_lengths)), min_kept)
    assert floor[alive].tolist() == packed.tolist()
    assert not bool(floor[~alive].any())


def test_padded_attention_received_matches_the_per_sequence_path():
    """The batched path GPUs take for LTP's received attention equals the CPU per-sequence loop."""
    from tokenskim.modeling.attention import varlen_attention_with_received

    lengths = [5, 1, 9, 3]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(sum(lengths), 2, 8, generator=g) for _ in range(3))
    cu = lengths_to_cu(torch.tensor(lengths))
    ctx, received = padded_attention(q, k, v, cu, lengths, need_received=True)
    want_ctx, want_received = varlen_attention_with_received(q, k, v, cu, lengths)
    torch.testing.assert_close(ctx, want_ctx, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(received, want_received, atol=1e-6, rtol=1e-5)


def test_attention_blocks_batched_path_equals_the_per_sequence_loop(monkeypatch):
    """The CUDA path (one padded batched call) gives the per-sequence loop's context and blocks; run here on CPU by
    making the tensors claim to be on CUDA for the dispatch only."""
    from tokenskim.modeling import attention

    torch.manual_seed(0)
    lengths = [9, 3, 12, 1, 8]
    total, heads, dim, size = sum(lengths), 4, 8, 4
    q, k, v = (torch.randn(total, heads, dim) for _ in range(3))
    rank = torch.arange(total) * 2  # any original ranks
    sequence = torch.tensor([4, 0, 2, 1, 3])
    loop_ctx, loop = attention.varlen_attention_with_blocks(q, k, v, lengths, size, rank, sequence)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    ctx, batched = attention.varlen_attention_with_blocks(q, k, v, lengths, size, rank, sequence)
    monkeypatch.undo()
    torch.testing.assert_close(ctx, loop_ctx, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.probs, loop.probs, atol=1e-6, rtol=0)
    for field in ("token_block", "sequence", "start", "length"):
        assert torch.equal(getattr(batched, field), getattr(loop, field))
