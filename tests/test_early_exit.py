"""Early exit as a reusable part: exits on but never taken, exited rows, the entropy and patience rules, tau
changed at inference, self-distillation with a frozen backbone, regression errors, FLOPs bookkeeping. The
invariants every family keeps (exactness with exits off, batch invariance with rows exiting, rows processed, Hub
round trip) are in test_invariants.py."""

import math

import pytest
import torch
from conftest import MIXED_LENGTHS, PAD, load_as, mixed_batch, tiny_config
from transformers import BertForSequenceClassification

from tokenskim.modeling import (
    EarlyExitBertConfig,
    EarlyExitBertForSequenceClassification,
    EarlyExitRobertaForSequenceClassification,
    ExitDecision,
    dense_flops,
    encoder_flops,
    exit_counts,
    exit_head_macs,
    model_macs,
    normalized_entropy,
    self_distillation_loss,
)
from tokenskim.modeling.early_exit import patience_step

SEQ_CLS = {"bert": EarlyExitBertForSequenceClassification, "roberta": EarlyExitRobertaForSequenceClassification}


def exiting_model(backbone="bert", cls=None, layers=3, **kwargs):
    """A random model (3 layers unless told) whose CLS states differ enough between sequences that the exit
    heads' confidence varies (initializer_range 0.3): with tau = 0.6 some rows exit early, others not."""
    cls = cls or SEQ_CLS[backbone]
    config = tiny_config(backbone, initializer_range=0.3, num_hidden_layers=layers).to_dict()
    kwargs = {"exit_threshold": 0.6, **kwargs}
    return cls(cls.config_class(**config, **kwargs)).eval()


def layer_cls_states(model, batch):
    """CLS state after every layer `[layers, batch, hidden]`, from the training path with exits off."""
    was_training = model.training
    model.train()
    with torch.no_grad():
        out = model.skim_model(**batch, return_layer_cls=True)
    model.train(was_training)
    return out.layer_cls


def test_exits_on_but_never_taken_matches_stock():
    stock = BertForSequenceClassification(tiny_config()).eval()
    ours = load_as(EarlyExitBertForSequenceClassification, stock, exit_threshold=-1.0).eval()
    batch = mixed_batch(MIXED_LENGTHS)
    with torch.no_grad():
        out = ours(**batch)
    torch.testing.assert_close(out.logits, stock(**batch).logits, atol=1e-5, rtol=0)
    assert out.exit_layer.tolist() == [3] * 16


def test_running_rows_keep_every_token_and_exited_rows_none():
    """Exits alone drop whole sequences, never tokens (the rows processed are these counts: test_invariants)."""
    model = exiting_model()
    with torch.no_grad():
        out = model(**mixed_batch(MIXED_LENGTHS, seq=40))
    lengths = torch.tensor(MIXED_LENGTHS)
    for layer in range(3):
        running = out.exit_layer > layer
        assert out.kept_tokens[:, layer].tolist() == torch.where(running, lengths, 0).tolist()
        assert out.ffn_tokens[:, layer].tolist() == torch.where(running, lengths, 0).tolist()
    assert out.kept_tokens[:, -1].sum() < out.kept_tokens[:, 0].sum()


@pytest.mark.parametrize("backbone", ["bert", "roberta"])
def test_patience_rows_exit_at_several_layers(backbone):
    """The random model of test_invariants' patience case: rows leave after different layers."""
    model = exiting_model(backbone, layers=5, exit_criterion="patience", exit_patience=1)
    with torch.no_grad():
        exit_layer = model(**mixed_batch(MIXED_LENGTHS, pad_id=PAD[backbone])).exit_layer
    counts = exit_counts(exit_layer, 5)
    assert (counts[:-1] > 0).sum() >= 2, f"rows should exit at several layers: {counts}"


def test_exit_logits_are_the_exit_heads_and_final_logits_the_classifier():
    model = exiting_model()
    batch = mixed_batch(MIXED_LENGTHS)
    states = layer_cls_states(model, batch)
    with torch.no_grad():
        out = model(**batch)
        model.config.exit_enabled = False
        final = model(**batch).logits
        heads = model.exit_heads.all_logits(states[:-1])
    for i, layer in enumerate(out.exit_layer.tolist()):
        want = heads[layer - 1, i] if layer < 3 else final[i]
        torch.testing.assert_close(out.logits[i], want, atol=1e-5, rtol=0)
        if layer < 3:  # it exited at the first layer whose normalized entropy was <= tau
            u = normalized_entropy(heads[:, i])
            assert u[layer - 1] <= 0.6 and torch.all(u[: layer - 1] > 0.6)


def test_tau_changed_at_inference_moves_exits_monotonically():
    model = exiting_model()
    batch = mixed_batch(MIXED_LENGTHS)
    layers, means = [], []
    with torch.no_grad():
        for tau in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
            model.config.exit_threshold = tau  # no retraining, no reload
            exit_layer = model(**batch).exit_layer
            layers.append(exit_layer)
            means.append(exit_layer.float().mean().item())
    for earlier, later in zip(layers, layers[1:]):
        assert torch.all(later <= earlier)  # every sequence exits no later with a larger tau
    assert means[0] == 3.0 and means[-1] == 1.0  # tau 1 exits everything after the first layer
    assert len(set(means)) >= 3


def test_normalized_entropy_bounds():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    u = normalized_entropy(logits)
    assert u[0].item() == pytest.approx(1.0) and u[1].item() == pytest.approx(0.0, abs=1e-6)
    p = torch.softmax(logits[2], -1)
    assert u[2].item() == pytest.approx(float(-(p * p.log()).sum() / math.log(4)), rel=1e-5)


def test_patience_rule_and_state_follows_running_rows():
    assert patience_step(torch.tensor([1, 2]), None, None).tolist() == [0, 0]
    assert patience_step(torch.tensor([1, 2, 0]), torch.tensor([1, 0, 0]), torch.tensor([3, 1, 0])).tolist() == [4, 0, 1]

    class Fixed(torch.nn.Module):  # exit "heads" that return given logits, to drive the rule by hand
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, cls):
            return self.logits[: cls.shape[0]]

    config = EarlyExitBertConfig(exit_criterion="patience", exit_patience=1)
    a, b = torch.tensor([5.0, 0.0]), torch.tensor([0.0, 5.0])
    heads = [Fixed(torch.stack([a, a, b])), Fixed(torch.stack([b, b, b])), Fixed(torch.stack([b, b]))]
    decide = ExitDecision(heads, config)
    stop, _ = decide(0, torch.zeros(3, 4), torch.arange(3))
    assert stop.tolist() == [False, False, False]
    stop, _ = decide(1, torch.zeros(3, 4), torch.arange(3))  # row 2 keeps its prediction (b, b): it exits
    assert stop.tolist() == [False, False, True]
    stop, _ = decide(2, torch.zeros(2, 4), torch.tensor([0, 1]))  # rows 0 and 1 remain, in order: a -> b -> b
    assert stop.tolist() == [True, True]


def test_regression_is_a_clear_error():
    with pytest.raises(ValueError, match="classification only"):
        EarlyExitBertForSequenceClassification(EarlyExitBertConfig(**tiny_config(num_labels=1).to_dict()))
    with pytest.raises(ValueError, match="regression"):
        load_as(EarlyExitBertForSequenceClassification, BertForSequenceClassification(tiny_config()), num_labels=1)
    model = exiting_model()
    model.config.problem_type = "regression"
    with pytest.raises(ValueError, match="classification only"):
        model(**mixed_batch([4, 2]))


def test_frozen_backbone_loss_is_self_distillation():
    """With the backbone frozen the loss is the exit heads' distillation from the final classifier (that only the
    exit heads then learn is in test_invariants)."""
    model = exiting_model().train().freeze_for_exit_training()
    batch = mixed_batch([12, 8, 5, 10], seed=1)
    out = model(**batch, labels=torch.tensor([0, 1, 2, 1]))  # labels are not used: teacher = final classifier
    states = layer_cls_states(model, batch)
    teacher = out.logits.detach()
    model.train()
    want = self_distillation_loss(model.exit_heads.all_logits(states[:-1]), teacher)
    torch.testing.assert_close(out.loss, want)


def test_distillation_loss_is_forward_kl_summed_over_heads():
    heads = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[0.5, 0.5], [3.0, 0.0]]])  # [heads 2, batch 2, labels 2]
    teacher = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    pt = torch.softmax(teacher, -1)
    want = sum((pt * (pt.log() - torch.log_softmax(h, -1))).sum() for h in heads) / 2
    torch.testing.assert_close(self_distillation_loss(heads, teacher), want)
    assert self_distillation_loss(teacher.expand(3, 2, 2), teacher).item() == pytest.approx(0.0, abs=1e-6)
    teacher.requires_grad_(True)
    self_distillation_loss(heads.clone().requires_grad_(True), teacher).backward()
    assert teacher.grad is None  # the teacher is detached


def test_trainable_backbone_uses_task_loss():
    model = exiting_model().train()
    labels = torch.tensor([0, 1, 2])
    out = model(**mixed_batch([6, 3, 5]), labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))


def test_init_exit_heads_from_classifier_reproduces_final_head():
    for backbone in ("bert", "roberta"):
        model = exiting_model(backbone).init_exit_heads_from_classifier()
        batch = mixed_batch([7, 4], pad_id=PAD[backbone])
        states = layer_cls_states(model, batch)
        model.config.exit_enabled = False
        with torch.no_grad():
            final = model(**batch).logits
            torch.testing.assert_close(model.exit_heads[0](states[-1]), final, atol=1e-5, rtol=0)


def test_flops_of_exited_sequences():
    model = exiting_model()
    batch = mixed_batch(MIXED_LENGTHS)
    with torch.no_grad():
        out = model(**batch)
    lengths = torch.tensor(MIXED_LENGTHS)
    ours = encoder_flops(out.kept_tokens, out.ffn_tokens, model.config)
    dense = dense_flops(lengths, model.config)
    per_layer = dense / 3
    torch.testing.assert_close(ours, per_layer * out.exit_layer.double())  # no pruning: cost = layers run
    heads = exit_head_macs(out.exit_layer, model.config)
    assert torch.all(heads <= 2 * (32 * 32 + 32 * 3))
    assert heads.sum() < 0.05 * ours.sum()  # small next to the encoder even in this tiny model
    torch.testing.assert_close(model_macs(model, out.kept_tokens, out.ffn_tokens, out.exit_layer, lengths=lengths), ours + heads)
    model.config.exit_enabled = False  # no exit head evaluated
    torch.testing.assert_close(model_macs(model, out.kept_tokens, out.ffn_tokens, out.exit_layer, lengths=lengths), ours)


