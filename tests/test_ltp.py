"""Learned Token Pruning on the shared engine: attention probabilities only where a layer prunes, thresholds,
soft/hard training signals, the budget loss, the thresholds' learning rate. The invariants every family keeps
(exactness with pruning off, batch invariance, rows processed, edge cases, Hub round trip, Auto registration) are
in test_invariants.py."""

import pytest
import torch
from conftest import MIXED_LENGTHS, load_as, mixed_batch, tiny_config
from transformers import BertForSequenceClassification

import tokenskim.modeling.engine as engine_module
from tokenskim.trainers.trainer import move_to_own_groups, selector_parameter_names
from tokenskim.modeling import (
    LTPBertForSequenceClassification,
    LTPRobertaForSequenceClassification,
    keep_ratio_loss,
    threshold_parameters,
)

SEQ_CLS = {"bert": LTPBertForSequenceClassification, "roberta": LTPRobertaForSequenceClassification}


def pruning_model(backbone="bert", final_threshold=0.1, **kwargs):
    """A random 3-layer model whose thresholds prune a good share of tokens: with near-uniform random
    attention a token receives about 1/n, and layers 1 and 2 prune below 0.033 and 0.067."""
    config = tiny_config(backbone).to_dict()
    config = SEQ_CLS[backbone].config_class(**config, final_threshold=final_threshold, **kwargs)
    return SEQ_CLS[backbone](config).eval()


def count_received_calls(monkeypatch):
    """Counts the packed path's calls that materialise attention probabilities."""
    calls = []
    original = engine_module.varlen_attention_with_received

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(engine_module, "varlen_attention_with_received", counting)
    return calls


def test_zero_threshold_keeps_everything_and_computes_no_probabilities(monkeypatch):
    calls = count_received_calls(monkeypatch)
    stock = BertForSequenceClassification(tiny_config()).eval()
    ours = load_as(LTPBertForSequenceClassification, stock, final_threshold=0.0).eval()
    batch = mixed_batch(MIXED_LENGTHS)
    with torch.no_grad():
        out = ours(**batch)
        torch.testing.assert_close(out.logits, stock(**batch).logits, atol=1e-5, rtol=0)
    assert out.kept_tokens.sum(0).tolist() == [sum(MIXED_LENGTHS)] * 3
    assert calls == []


def test_attention_probabilities_only_in_pruning_layers(monkeypatch):
    calls = count_received_calls(monkeypatch)
    model = pruning_model()
    with torch.no_grad():
        model(**mixed_batch([9, 4]))
    assert len(calls) == 2  # layers 1 and 2; layer 0's threshold is 0 (never prunes)
    calls.clear()
    model.config.skim_enabled = False  # the live config switches pruning off
    with torch.no_grad():
        model(**mixed_batch([9, 4]))
    assert calls == []


def test_higher_threshold_prunes_more():
    model = pruning_model()
    batch = mixed_batch(MIXED_LENGTHS)
    kept = []
    with torch.no_grad():
        for theta in (0.0, 0.05, 0.1, 0.2, 0.5):
            model.config.final_threshold = theta
            kept.append(model(**batch).ffn_tokens.sum().item())
    assert kept == sorted(kept, reverse=True) and kept[-1] < kept[0]


# thresholds of both spaces that prune a good share of the random model's tokens
SPACES = {"attention": {}, "log-relative": {"threshold_space": "log-relative", "final_threshold": 1.5}}


@pytest.mark.parametrize("scale", [1.0, 1.7])
@pytest.mark.parametrize("space", SPACES)
def test_hard_stage_training_path_equals_packed_inference(space, scale):
    """Training with pruning_stage='hard' applies the same binary decisions as inference (masked keys
    and residual gating vs physical removal), so the logits agree; a `threshold_scale` too (what calibrate
    picked is what the hard stage fine-tunes under)."""
    model = pruning_model(pruning_stage="hard", threshold_scale=scale, **SPACES[space])
    batch = mixed_batch([20, 7, 13, 3])
    with torch.no_grad():
        packed = model(**batch)
        model.train()
        masked = model(**batch)
    torch.testing.assert_close(masked.logits, packed.logits, atol=1e-5, rtol=0)
    assert torch.equal(masked.ffn_tokens, packed.ffn_tokens)
    assert masked.skim_loss is None  # thresholds frozen: no L1 term in the hard stage


def test_soft_stage_gradients_reach_thresholds():
    model = pruning_model(temperature=1e-2).train()
    batch = mixed_batch([12, 8, 5, 10], seed=1)
    out = model(**batch, labels=torch.tensor([0, 1, 2, 1]))
    assert out.skim_loss is not None and out.skim_loss.requires_grad
    out.skim_loss.backward()
    grad = model.bert.selector.threshold_offsets.grad
    assert grad[0] == 0  # layer 0 never prunes
    assert torch.all(grad[1:] < 0), "raising a threshold lowers the masks, so the L1 term pushes thresholds up"


def test_hard_stage_passes_no_gradient_to_thresholds():
    model = pruning_model(pruning_stage="hard").train()
    out = model(**mixed_batch([12, 8, 5]), labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    grad = model.bert.selector.threshold_offsets.grad
    assert grad is None or torch.all(grad == 0)
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_l1_term_is_sum_over_layers_of_real_token_means():
    model = pruning_model(temperature=1e-2).train()
    lengths = [9, 4, 6]
    tight, padded = mixed_batch(lengths), mixed_batch(lengths, seq=30)
    with torch.no_grad():
        loss_tight = model(**tight).skim_loss
        loss_padded = model(**padded).skim_loss
    torch.testing.assert_close(loss_padded, loss_tight)  # padding never counts
    assert 1.0 < loss_tight.item() < 3.0  # layer 0 keeps all (1.0), layers 1-2 prune some of the rest

    masks = [torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.5, 0.0], [1.0, 0.0, 0.0]])]
    real = torch.tensor([[True, True, False], [True, False, False]])
    selector = model.bert.selector
    # per layer, mean over examples of kept real / real: (1 + 1) / 2 and (0.75 + 1) / 2
    assert selector.loss(masks, real).item() == pytest.approx(1.0 + 0.875)
    assert selector.loss(masks, real).item() == pytest.approx(2 * keep_ratio_loss(masks, real).item())


def test_soft_training_learns_to_prune():
    """A strong L1 weight and a threshold learning rate make the thresholds rise and prune more."""
    model = pruning_model(final_threshold=0.03, temperature=1e-2, skim_coefficient=1.0)
    batch = mixed_batch(MIXED_LENGTHS, seed=2)
    labels = torch.arange(16) % 3
    with torch.no_grad():
        before = model(**batch).ffn_tokens.sum().item()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    move_to_own_groups(opt, threshold_parameters(model), lr=5e-3)  # SkimTrainer's --selector-learning-rate
    for _ in range(15):
        opt.zero_grad()
        model(**batch, labels=labels).loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = model(**batch).ffn_tokens.sum().item()
    assert model.bert.selector.threshold_offsets[1:].min() > 0
    assert after < before


def test_the_selector_learning_rate_reaches_the_thresholds_only():
    """SkimTrainer gives `selector_parameter_names` their own learning rate (the soft-pruning stage's
    --selector-learning-rate): for LTP, the threshold offsets and nothing else."""
    model = pruning_model()
    thresholds = threshold_parameters(model)
    assert len(thresholds) == 1 and thresholds[0] is model.bert.selector.threshold_offsets
    assert selector_parameter_names(model) == {"bert.selector.threshold_offsets"}


def test_offsets_start_at_zero_and_survive_save_load():
    model = load_as(LTPBertForSequenceClassification, BertForSequenceClassification(tiny_config()))
    assert model.bert.selector.threshold_offsets.tolist() == [0.0, 0.0, 0.0]
    with torch.no_grad():
        model.bert.selector.threshold_offsets.copy_(torch.tensor([0.0, 0.25, -0.5]))
    again = load_as(LTPBertForSequenceClassification, model)
    assert again.bert.selector.threshold_offsets.tolist() == [0.0, 0.25, -0.5]
    torch.testing.assert_close(again.bert.selector.thresholds(), torch.tensor([0.0, 0.25 + 0.01 / 3, -0.5 + 0.02 / 3]))


def test_bad_stage_is_an_error():
    model = pruning_model(pruning_stage="medium").train()
    with pytest.raises(ValueError, match="pruning_stage"):
        model(**mixed_batch([5, 3]))


def test_budget_loss_is_the_distance_to_the_target_times_the_layers():
    """With `target_keep_ratio`, the soft stage's loss is L * the mean over sequences of |kept ratio - target|,
    pulling down when above the target and up when below."""
    # a soft gate (T = 0.05) and no floor, so every token's gate carries a gradient; thresholds that drop some tokens
    # of every sequence
    model = pruning_model(final_threshold=0.5, target_keep_ratio=0.5, temperature=0.05, min_kept_tokens=1).train()
    batch = mixed_batch([9, 4, 6], seq=12)
    out = model(**batch)
    real = batch["attention_mask"].bool()
    # the loss uses the soft masks, which the encoder returns
    hidden = model.bert.embeddings(input_ids=batch["input_ids"])
    masks = model.bert.encoder(hidden, real, model.bert.selector).masks
    # the ratio counts what inference keeps (mask > 0.5)
    ratios = [float(sum(((m[b] > 0.5) * real[b]).sum() for m in masks) / (real[b].sum() * len(masks))) for b in range(3)]
    want = 3 * sum(abs(r - 0.5) for r in ratios) / 3  # per sequence, then the mean; the floor (1 token) is below 0.5
    torch.testing.assert_close(out.skim_loss.item(), want, rtol=1e-5, atol=1e-6)
    for target, sign in ((0.01, 1.0), (0.999, -1.0)):  # above the target it pushes down, below it pulls up
        model.config.target_keep_ratio = target
        model.zero_grad()
        model(**batch).skim_loss.backward()
        assert sign * float(model.bert.selector.threshold_offsets.grad[1:].sum()) < 0  # higher thresholds keep fewer


def uniform_attention_model(**kwargs):
    """Zero query weights: every token receives exactly 1/n of the attention of its sequence's n kept tokens."""
    model = pruning_model(**kwargs)
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.attention.self.query.weight.zero_()
            layer.attention.self.query.bias.zero_()
    return model


def test_log_relative_thresholds_do_not_depend_on_length():
    """Under uniform attention every token's share is 1/n: thresholds on received attention prune the long
    sequences only, thresholds on log(n * share) treat every length alike (all kept below 1, all pruned above)."""
    lengths = [30, 5]
    batch = mixed_batch(lengths)

    def ffn(**kwargs):
        with torch.no_grad():
            return uniform_attention_model(min_kept_tokens=1, **kwargs)(**batch).ffn_tokens.tolist()

    # attention space: layer 2 prunes below 0.05 * 2/3 = 0.033; 1/30 is just above it, 1/5 far above
    assert ffn(final_threshold=0.06) == [[30, 30, 1], [5, 5, 5]]
    # log-relative: layer 1 at 0.9 * 1/3 and layer 2 at 0.9 * 2/3 of the average keep all; 1.8 * 2/3 > 1 prunes all
    assert ffn(threshold_space="log-relative", final_threshold=0.9) == [[30, 30, 30], [5, 5, 5]]
    assert ffn(threshold_space="log-relative", final_threshold=1.8) == [[30, 30, 1], [5, 5, 1]]


def test_the_first_layer_prunes_and_learns_only_when_asked():
    """The paper's layer 0 never prunes (threshold 0, -inf in log units: no gradient either); `prune_first_layer`
    starts it at half of layer 1's base and lets the budget train it."""
    lengths = [30, 5]
    batch = mixed_batch(lengths)

    def ffn(**kwargs):
        with torch.no_grad():
            return uniform_attention_model(min_kept_tokens=1, **kwargs)(**batch).ffn_tokens.tolist()

    # three layers; layer 0's base: 6.6 / (2 * 3) = 1.1 times the average share under uniform attention, above every token's
    assert ffn(threshold_space="log-relative", final_threshold=6.6) == [[30, 1, 1], [5, 1, 1]]
    assert ffn(threshold_space="log-relative", final_threshold=6.6, prune_first_layer=True) == [[1, 1, 1], [1, 1, 1]]
    # attention space: layer 0 at 0.25 / 6 = 0.042 prunes 1/30, keeps 1/5
    assert ffn(final_threshold=0.25, prune_first_layer=True) == [[1, 1, 1], [5, 5, 5]]

    for first, grad_expected in ((False, False), (True, True)):
        model = pruning_model(threshold_space="log-relative", final_threshold=1.5, prune_first_layer=first,
                              target_keep_ratio=0.3, min_kept_tokens=1).train()
        model(**mixed_batch([12, 9, 14], seed=4)).skim_loss.backward()
        assert (model.bert.selector.threshold_offsets.grad[0].abs() > 1e-4) == grad_expected


def test_log_relative_scale_and_defaults():
    model = pruning_model(threshold_space="log-relative", final_threshold=None)
    selector = model.bert.selector
    assert selector.final_threshold == 1.0 and selector.temperature == 0.25
    torch.testing.assert_close(selector.thresholds()[1:], torch.log(torch.tensor([1 / 3, 2 / 3])))
    batch = mixed_batch(MIXED_LENGTHS)
    kept = []
    with torch.no_grad():
        for scale in (0.0, 0.5, 1.0, 2.0, 4.0):
            model.config.threshold_scale = scale
            kept.append(model(**batch).ffn_tokens.sum().item())
    assert kept == sorted(kept, reverse=True) and kept[-1] < kept[0]
    assert kept[0] == sum(MIXED_LENGTHS) * 3  # scale 0 prunes nothing
    model.config.threshold_space = "linear"
    with pytest.raises(ValueError, match="threshold_space"):
        model(**batch)


def test_log_relative_batch_equals_alone():
    model = pruning_model(threshold_space="log-relative", final_threshold=1.5)
    batch = mixed_batch(MIXED_LENGTHS, seed=3)
    with torch.no_grad():
        together = model(**batch)
        for b, n in enumerate(MIXED_LENGTHS):
            alone = model(input_ids=batch["input_ids"][b : b + 1, :n], attention_mask=batch["attention_mask"][b : b + 1, :n])
            torch.testing.assert_close(alone.logits[0], together.logits[b], atol=1e-5, rtol=1e-4)
            assert alone.ffn_tokens[0].tolist() == together.ffn_tokens[b].tolist()
    assert together.ffn_tokens[:, -1].sum() < sum(MIXED_LENGTHS)


def test_a_threshold_above_every_token_still_gets_pulled_back_in_log_relative_space():
    """The absorbing state of thresholds on received attention: once a threshold passes every token but the floor,
    the paper's T = 1e-3 gate is 0 on all of them and the budget loss has no gradient to pull it back. In the
    log-relative space the gate's width is a share of the scores' spread, so the pull-back is there."""
    batch = mixed_batch([12, 9, 14], seed=4)

    def offset_grad(offset, **kwargs):
        model = pruning_model(target_keep_ratio=0.8, min_kept_tokens=2, **kwargs).train()
        with torch.no_grad():
            model.bert.selector.threshold_offsets[1:] = offset
        out = model(**batch)
        assert all(int(n) == 2 for n in out.ffn_tokens[:, 1:].flatten())  # every sequence is at the floor
        out.skim_loss.backward()
        return model.bert.selector.threshold_offsets.grad[1:]

    # layer 1's threshold at about 1.5x the average share in both spaces (0.133 against 1/12; e^1.5 / 3 = 1.49)
    assert offset_grad(0.1).abs().max() < 1e-6  # attention space: stuck
    # log-relative: below the target the loss pulls layer 1's threshold down (a positive gradient); layer 2 follows
    # once layer 1 lets tokens through (its own gate sits behind layer 1's)
    assert offset_grad(1.5, threshold_space="log-relative", final_threshold=1.0)[0] > 0.1
