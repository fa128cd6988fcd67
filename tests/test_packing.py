"""The packing functions against a plain per-sequence reference."""

import pytest
import torch

from tokenskim.modeling.packing import SHORT_SEQUENCE, lengths_to_cu, padded_attention, pad, unpad, varlen_attention


def reference_attention(q, k, v, lengths):
    """Each sequence alone through the math of softmax attention."""
    outs = []
    for qi, ki, vi in zip(q.split(lengths), k.split(lengths), v.split(lengths)):
        scores = torch.einsum("qhd,khd->hqk", qi, ki) / qi.shape[-1] ** 0.5
        outs.append(torch.einsum("hqk,khd->qhd", scores.softmax(-1), vi))
    return torch.cat(outs)


# ragged and short (the padded path), ragged and just too long, equal lengths, long, a single sequence
@pytest.mark.parametrize("lengths", [[3, 1, 7, SHORT_SEQUENCE, 2], [3, 1, SHORT_SEQUENCE + 1, 2], [5, 5, 5], [40, 3, 17], [1]])
def test_varlen_attention_matches_each_sequence_alone(lengths):
    torch.manual_seed(0)
    q, k, v = (torch.randn(sum(lengths), 4, 8) for _ in range(3))
    cu = lengths_to_cu(torch.tensor(lengths))
    expected = reference_attention(q, k, v, lengths)
    torch.testing.assert_close(varlen_attention(q, k, v, cu, lengths), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded_attention(q, k, v, cu, lengths), expected, atol=1e-5, rtol=1e-5)


def test_unpad_pad_round_trip():
    hidden = torch.randn(3, 6, 4)
    real = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    packed, index, cu, lengths = unpad(hidden, real)
    assert packed.shape == (10, 4) and lengths == [3, 6, 1] and cu.tolist() == [0, 3, 9, 10]
    back = pad(packed, index, 3, 6)
    torch.testing.assert_close(back[real], hidden[real])
    assert bool((back[~real] == 0).all())
