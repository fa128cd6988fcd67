"""STTABT on the shared engine: nested keep sets, back-tracking on a hand-made example, the packed and masked
paths agree, training signals, padding, FLOPs, the selector's saved state. The invariants every family keeps
(exactness with skimming off, batch invariance, rows processed, edge cases, bf16, Hub round trip) are in
test_invariants.py."""

import math

import pytest
import torch
from conftest import MIXED_LENGTHS, PAD, load_as, mixed_batch, tiny_config
from transformers import BertForSequenceClassification

from tokenskim.modeling import (
    STTABTBertConfig,
    STTABTBertForSequenceClassification,
    STTABTRobertaForSequenceClassification,
    encoder_flops,
    model_macs,
)
from tokenskim.modeling.flops import layer_macs
from tokenskim.modeling.selector import SelectorOutput
from tokenskim.modeling.sttabt import back_track

SEQ_CLS = {"bert": STTABTBertForSequenceClassification, "roberta": STTABTRobertaForSequenceClassification}


def skimming_model(backbone="bert", keep_logit=0.0, **kwargs):
    """A random model whose ApproxNet has sharp attention (query/key weights ~ N(0, 1)), so back-tracking
    drops a good share of tokens: a token stays when its normalised importance s > 1 - sigmoid(keep_logit)."""
    config = SEQ_CLS[backbone].config_class(**tiny_config(backbone).to_dict(), keep_logit_init=keep_logit, **kwargs)
    model = SEQ_CLS[backbone](config)
    with torch.no_grad():
        for layer in model.skim_model.selector.approx.layer:
            for lin in (layer.attention.self.query, layer.attention.self.key):
                lin.weight.normal_(0.0, 1.0)
    return model.eval()


def hard_plan(model, batch):
    """The selector's bool keep masks `[layers, B, S]` for a batch, as inference decides them."""
    base = model.skim_model
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        return base.selector.plan(base.embeddings(input_ids=batch["input_ids"]), real, hard=True)


@pytest.mark.parametrize("backbone", ["bert", "roberta"])
def test_sharp_approxnet_drops_most_tokens_and_more_in_each_layer(backbone):
    """The random model of test_invariants: fewer tokens in every layer, under half of them in the last."""
    model = skimming_model(backbone)
    with torch.no_grad():
        kept = model(**mixed_batch(MIXED_LENGTHS, pad_id=PAD[backbone])).kept_tokens.sum(0)
    assert kept[-1] < 0.5 * kept[0]
    assert kept[-1] < kept[1] < kept[0]


def test_keep_sets_are_nested_and_are_what_the_engine_runs():
    model = skimming_model()
    batch = mixed_batch(MIXED_LENGTHS, seq=36)
    real = batch["attention_mask"].bool()
    masks = hard_plan(model, batch)
    assert masks.dtype == torch.bool and masks.shape == (3, 16, 36)
    assert torch.equal(masks[0], real)  # layer 0 sees every real token
    for upper, lower in zip(masks[1:], masks[:-1]):
        assert not (upper & ~lower).any(), "layer l+1 keeps a token that layer l dropped"
    assert not (masks & ~real).any()  # padding is never kept
    assert masks[:, :, 0].all()  # CLS always stays
    with torch.no_grad():
        kept = model(**batch).kept_tokens
    assert torch.equal(kept, masks.sum(-1).T)
    assert (masks[1:].sum(-1) < masks[:-1].sum(-1)).any()


def test_back_tracking_hand_made_example():
    """5 tokens, 3 layers. In the last layer CLS reads tokens 2 and 3; in layer 1 token 2 reads token 4, which
    CLS never reads. Back-tracking must rank token 4 with the tokens CLS needs, above token 1."""
    attention = torch.zeros(3, 1, 5, 5)
    attention[2, 0, 0] = torch.tensor([0.1, 0.0, 0.6, 0.3, 0.0])  # last layer: only the CLS row matters
    attention[2, 0, 1:] = 0.2  # rows of tokens that are not needed must not count
    attention[1, 0, 0] = torch.tensor([0.4, 0.6, 0.0, 0.0, 0.0])
    attention[1, 0, 1] = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])  # token 1 is dropped above: its row is ignored
    attention[1, 0, 2] = torch.tensor([0.0, 0.0, 0.2, 0.0, 0.8])
    attention[1, 0, 3] = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0])
    attention[1, 0, 4] = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])  # token 4 is dropped above too
    real = torch.ones(1, 5, dtype=torch.bool)
    keep_logits = torch.tensor([0.0, math.log(0.2 / 0.8), math.log(0.6 / 0.4)])  # keep s > 0.8 / s > 0.4

    masks, scores = back_track(attention, real, keep_logits, temperature=0.1, hard=True)
    # layer 2 input: s = CLS row / 0.6, and CLS itself (weight 1)
    torch.testing.assert_close(scores[2, 0], torch.tensor([1.0, 0.0, 1.0, 0.5, 0.0]))
    assert masks[2, 0].tolist() == [True, False, True, True, False]
    # layer 1 input: rows of CLS (1), token 2 (1) and token 3 (0.5): raw = [0.4, 0.6, 0.2, 0.5, 0.8] / 0.8
    torch.testing.assert_close(scores[1, 0], torch.tensor([1.0, 0.75, 1.0, 0.625, 1.0]))
    assert masks[1, 0].tolist() == [True, False, True, True, True]  # token 3 kept as a superset of layer 2
    assert masks[0, 0].all()

    soft, soft_scores = back_track(attention, real, keep_logits, temperature=0.1, hard=False)
    assert torch.equal(soft > 0.5, masks)
    assert (soft_scores - scores).abs().max() < 0.02  # soft masks weight the rows almost like hard ones


def test_packed_inference_equals_masked_path_with_hard_decisions():
    """Both execution modes implement the same decisions: eval (packed ApproxNet, physical removal) and the
    training path (padded ApproxNet, masks) fed with the hard decisions give the same logits."""
    model = skimming_model()
    batch = mixed_batch([20, 7, 13, 1, 16])
    selector = model.bert.selector
    with torch.no_grad():
        packed = model(**batch).logits
        plan = selector.plan
        def hard_gates(hidden, real, hard):
            answer = plan(hidden, real, hard=True)  # in training: the gates with their distillation record
            return SelectorOutput(answer.score.float(), answer.record)

        selector.plan = hard_gates
        model.train()
        masked = model(**batch).logits
    torch.testing.assert_close(masked, packed, atol=1e-5, rtol=0)


def test_training_masks_are_the_concrete_masks():
    """In training the engine's cumulative masks are exactly the back-tracked Concrete masks M_l (the
    selector's gates M_l / M_{l-1} telescope), soft and nested."""
    model = skimming_model().train()
    base, batch = model.bert, mixed_batch([12, 8, 5, 10], seed=1)
    real = batch["attention_mask"].bool()
    hidden = base.embeddings(input_ids=batch["input_ids"])
    approx = base.selector.approx(hidden, real)
    want, _ = back_track(approx.attention, real, base.selector.keep_logits, 0.1, hard=False)
    masks = torch.stack(base.encoder(hidden, real, base.selector).masks)
    torch.testing.assert_close(masks, want, atol=1e-6, rtol=1e-5)
    assert ((masks > 0.01) & (masks < 0.99)).any(), "some masks should be soft"
    assert (masks[1:] <= masks[:-1]).all()


def test_gradients_reach_keep_logits_and_approxnet():
    model = skimming_model().train()
    batch = mixed_batch([12, 8, 5, 10], seed=1)
    out = model(**batch, labels=torch.tensor([0, 1, 2, 1]))
    out.loss.backward()
    selector = model.bert.selector
    assert selector.keep_logits.grad[1:].abs().min() > 0  # every layer that prunes
    for name, p in selector.approx.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0  # the task loss


def test_auxiliary_losses_leave_the_main_model_alone():
    """Distillation trains ApproxNet against the dense main model without moving the main model."""
    model = skimming_model(skim_coefficient=0.0).train()
    out = model(**mixed_batch([12, 8, 5, 10], seed=1))
    assert out.loss is None and out.skim_loss > 0
    out.skim_loss.backward()
    main = [p for n, p in model.named_parameters() if ".selector." not in n]
    assert all(p.grad is None for p in main)


def test_keep_ratio_term_pushes_keep_probabilities_down():
    model = skimming_model(attention_distill_weight=0.0, hidden_distill_weight=0.0, prediction_distill_weight=0.0).train()
    out = model(**mixed_batch([12, 8, 5, 10], seed=1))
    out.skim_loss.backward()
    assert (model.bert.selector.keep_logits.grad[1:] > 0).all()


@pytest.mark.parametrize("backbone", ["bert", "roberta"])
def test_losses_ignore_padding(backbone):
    model = skimming_model(backbone).train()
    lengths = [9, 4, 6]
    labels = torch.tensor([0, 2, 1])
    tight = model(**mixed_batch(lengths, pad_id=PAD[backbone]), labels=labels)
    padded = model(**mixed_batch(lengths, seq=30, pad_id=PAD[backbone]), labels=labels)
    assert torch.equal(tight.kept_tokens, padded.kept_tokens)
    assert tight.skim_loss > 0
    torch.testing.assert_close(padded.skim_loss, tight.skim_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded.loss, tight.loss, atol=1e-5, rtol=1e-5)


def test_flops_charge_approxnet_once_per_real_token():
    model = skimming_model()
    batch = mixed_batch(MIXED_LENGTHS)
    with torch.no_grad():
        kept = model(**batch).kept_tokens
    n = torch.tensor(MIXED_LENGTHS, dtype=torch.float64)
    d, d_a, f_a, heads, layers = 32, 8, 16, 4, 3
    approx = d * d_a * n + layers * layer_macs(n, n, d_a, f_a) + (layers * heads + layers - 1) * n * n
    selector = model.bert.selector
    main = encoder_flops(kept, kept, model.config)
    torch.testing.assert_close(model_macs(model, kept, kept, lengths=n), main + approx)
    torch.testing.assert_close(selector.macs(kept, n), approx)
    model.config.skim_enabled = False
    assert not selector.macs(kept, n).any() and model_macs(model, kept, kept, lengths=n).equal(main)


def test_bad_approx_factor():
    with pytest.raises(ValueError, match="approx_factor"):
        STTABTBertForSequenceClassification(STTABTBertConfig(**tiny_config().to_dict(), approx_factor=3))


def test_plain_checkpoint_loads_and_selector_round_trips(tmp_path):
    model = load_as(STTABTBertForSequenceClassification, BertForSequenceClassification(tiny_config()), keep_logit_init=2.5)
    assert model.bert.selector.keep_logits.tolist() == [2.5, 2.5, 2.5]
    with torch.no_grad():
        model.bert.selector.keep_logits.copy_(torch.tensor([0.0, -1.5, 0.5]))
    model.save_pretrained(tmp_path)
    again = STTABTBertForSequenceClassification.from_pretrained(tmp_path)
    assert again.bert.selector.keep_logits.tolist() == [0.0, -1.5, 0.5]
    names = set(again.state_dict())
    assert "bert.selector.approx.layer.2.attention.self.query.weight" in names
    assert "bert.selector.approx.down.weight" in names
    for name, p in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], p), name


