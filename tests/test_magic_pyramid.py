"""Magic Pyramid = LTP pruning + early exit: both save FLOPs, tau at inference, the exit-head stage with hard
pruning, regression error. The invariants every family keeps (exactness with both off, batch invariance with
tokens pruned and rows exiting, rows processed, Hub round trip) are in test_invariants.py."""

import pytest
import torch
from conftest import MIXED_LENGTHS, mixed_batch, tiny_config

from tokenskim.modeling import (
    LTPSelector,
    MagicPyramidBert,
    MagicPyramidBertConfig,
    MagicPyramidBertForSequenceClassification,
    MagicPyramidRobertaForSequenceClassification,
    dense_flops,
    encoder_flops,
    flops_ratio,
)

SEQ_CLS = {"bert": MagicPyramidBertForSequenceClassification, "roberta": MagicPyramidRobertaForSequenceClassification}


def pyramid(backbone="bert", layers=3, **kwargs):
    """A random model (3 layers unless told) that both prunes tokens (theta_L = 0.1) and exits rows
    (tau = 0.6); the larger initializer_range makes the exit heads' confidence vary between sequences."""
    cls = SEQ_CLS[backbone]
    config = tiny_config(backbone, initializer_range=0.3, num_hidden_layers=layers).to_dict()
    kwargs = {"final_threshold": 0.1, "exit_threshold": 0.6, **kwargs}
    return cls(cls.config_class(**config, **kwargs)).eval()


def test_alias_and_selector():
    assert MagicPyramidBert is MagicPyramidBertForSequenceClassification
    assert isinstance(pyramid().bert.selector, LTPSelector)


def test_pruning_and_exits_both_save_flops():
    """The FLOPs ratio (from the counts, which test_invariants checks against the rows processed) beats pruning
    alone and exits alone on these weights."""
    model = pyramid()
    batch = mixed_batch(MIXED_LENGTHS, seq=40)
    with torch.no_grad():
        out = model(**batch)
    lengths = torch.tensor(MIXED_LENGTHS)
    dense = dense_flops(lengths, model.config)
    ratio = flops_ratio(dense, encoder_flops(out.kept_tokens, out.ffn_tokens, model.config))
    with torch.no_grad():
        model.config.exit_enabled = False
        pruned = model(**batch)
        model.config.exit_enabled, model.config.final_threshold = True, 0.0  # theta 0 prunes nothing
        exited_only = model(**batch)
    assert ratio > flops_ratio(dense, encoder_flops(pruned.kept_tokens, pruned.ffn_tokens, model.config)) > 1
    assert ratio > flops_ratio(dense, encoder_flops(exited_only.kept_tokens, exited_only.ffn_tokens, model.config)) > 1


def test_tau_changed_at_inference_moves_exits_monotonically():
    model = pyramid()
    batch = mixed_batch(MIXED_LENGTHS)
    layers = []
    with torch.no_grad():
        for tau in (0.0, 0.3, 0.6, 0.9, 1.0):
            model.config.exit_threshold = tau
            layers.append(model(**batch).exit_layer)
    for earlier, later in zip(layers, layers[1:]):
        assert torch.all(later <= earlier)
    assert layers[0].tolist() == [3] * 16 and layers[-1].tolist() == [1] * 16
    assert len({tuple(x.tolist()) for x in layers}) >= 3


def test_exit_head_stage_with_hard_pruning():
    """Stage 4 of the paper: backbone, thresholds and final classifier frozen; the exit heads learn by
    distillation while pruning (hard) is active (that only they learn, thresholds included: test_invariants)."""
    model = pyramid(pruning_stage="hard").train().freeze_for_exit_training()
    out = model(**mixed_batch(MIXED_LENGTHS, seed=3))
    assert out.skim_loss is None and out.loss.requires_grad
    assert out.ffn_tokens[:, -1].sum() < sum(MIXED_LENGTHS)  # pruning active during exit training


def test_soft_stage_trains_thresholds_and_backbone():
    model = pyramid(temperature=1e-2, exit_enabled=False).train()
    out = model(**mixed_batch([12, 8, 5, 10], seed=1), labels=torch.tensor([0, 1, 2, 1]))
    assert out.skim_loss is not None
    out.loss.backward()
    assert model.bert.selector.threshold_offsets.grad[1:].abs().sum() > 0
    assert model.classifier.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.exit_heads.parameters())  # exit heads wait for their stage


def test_regression_is_a_clear_error():
    with pytest.raises(ValueError, match="classification only"):
        MagicPyramidBertForSequenceClassification(MagicPyramidBertConfig(**tiny_config(num_labels=1).to_dict()))


