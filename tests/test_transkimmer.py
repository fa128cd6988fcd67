"""Transkimmer on the shared engine: the packed and masked paths agree, training signals, predictor init,
bad input, short inputs and the keep threshold. The invariants every family keeps (exactness with skimming off,
batch invariance, rows processed, edge cases, Hub round trip) are in test_invariants.py."""

import pytest
import torch
from conftest import MIXED_LENGTHS, load_as, mixed_batch, tiny_config
from transformers import BertForSequenceClassification

from tokenskim.modeling import (
    TranskimmerBertConfig,
    TranskimmerBertForSequenceClassification,
    TranskimmerRobertaForSequenceClassification,
)

SEQ_CLS = {"bert": TranskimmerBertForSequenceClassification, "roberta": TranskimmerRobertaForSequenceClassification}


def skimming_model(backbone="bert", bias=0.0, **kwargs):
    """A random model whose predictors drop a good share of tokens (no keep-biased init)."""
    config = tiny_config(backbone)
    config = (SEQ_CLS[backbone].config_class)(**config.to_dict(), skim_bias_init=bias, **kwargs)
    return SEQ_CLS[backbone](config).eval()


def test_packed_inference_equals_masked_path_with_hard_decisions():
    """The two execution modes implement the same decisions: eval (packed, physical removal) and the
    training path fed with the same hard decisions give the same logits."""
    model = skimming_model()
    batch = mixed_batch([20, 7, 13])
    with torch.no_grad():
        packed = model(**batch).logits
        selector = model.bert.selector
        before = selector.before_layer
        selector.before_layer = lambda i, h, hard: before(i, h, hard=True)
        selector.gate = _hard_gate
        model.train()
        masked = model(**batch).logits
    torch.testing.assert_close(masked, packed, atol=1e-5, rtol=0)


@pytest.mark.parametrize("keep_threshold", [0.5, 0.7])
def test_deterministic_training_takes_inference_decisions_at_any_keep_threshold(keep_threshold):
    """gumbel_noise=False trains on the decisions inference takes, keep_threshold included, so a threshold picked
    by `tokenskim calibrate` is the one further training adapts the encoder to."""
    model = skimming_model(gumbel_noise=False, keep_threshold=keep_threshold, min_kept_tokens=1)
    batch = mixed_batch([20, 7, 13])
    with torch.no_grad():
        packed = model(**batch)
        model.train()
        masked = model(**batch)
    assert torch.equal(masked.kept_tokens, packed.kept_tokens)
    torch.testing.assert_close(masked.logits, packed.logits, atol=1e-5, rtol=0)
    assert packed.kept_tokens.sum() < sum([20, 7, 13]) * 3  # the threshold drops tokens


def _hard_gate(layer_idx, score):
    """Straight-through decision without Gumbel noise, to make training-mode decisions reproducible."""
    soft = torch.sigmoid(score)
    return (score >= 0).to(score.dtype) - soft.detach() + soft


def test_skim_loss_ignores_padding():
    model = skimming_model().train()
    model.bert.selector.gate = _hard_gate
    lengths = [9, 4, 6]
    tight, padded = mixed_batch(lengths), mixed_batch(lengths, seq=30)
    loss_tight = model(**tight).skim_loss
    loss_padded = model(**padded).skim_loss
    assert 0 < loss_tight.item() < 1
    torch.testing.assert_close(loss_padded, loss_tight)


def test_training_lowers_loss_and_reaches_predictors():
    model = skimming_model(bias=5.0, skim_coefficient=0.5).train()
    batch = mixed_batch([12, 8, 5, 10], seed=1)
    labels = torch.tensor([0, 1, 2, 1])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model(**batch, labels=labels)
    first.loss.backward()
    grads = [p.grad for p in model.bert.selector.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    opt.step()
    for _ in range(20):
        opt.zero_grad()
        model(**batch, labels=labels).loss.backward()
        opt.step()
    assert model(**batch, labels=labels).loss.item() < first.loss.item()


def test_unbalanced_bias_init_survives_from_pretrained():
    model = load_as(TranskimmerBertForSequenceClassification, BertForSequenceClassification(tiny_config()))
    for predictor in model.bert.selector.predictors:
        skip, keep = predictor[-1].bias.tolist()
        assert skip == pytest.approx(-5.0, abs=0.1) and keep == pytest.approx(5.0, abs=0.1)
    # and a trained predictor is not re-initialised when loaded back
    with torch.no_grad():
        model.bert.selector.predictors[0][-1].bias.copy_(torch.tensor([1.5, -0.5]))
    again = load_as(TranskimmerBertForSequenceClassification, model)
    assert again.bert.selector.predictors[0][-1].bias.tolist() == [1.5, -0.5]


@pytest.mark.parametrize("predictor_size,first_layer", [(None, True), (8, True), (8, False)])
def test_flops_charge_each_predictor_on_the_tokens_it_scored(predictor_size, first_layer):
    """The selector's MACs are those of the rows its predictors ran on (layer 0: every real token, unless it has no
    predictor; layer i: the tokens layer i-1 kept), counted by a hook on the predictors of a skimming forward, times
    the MACs of the predictor's Linear weights (as wide as `skim_predictor_size`)."""
    model = skimming_model(skim_predictor_size=predictor_size, skim_first_layer=first_layer)
    selector = model.bert.selector
    rows = []
    hooks = [p.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0])) for p in selector.predictors]
    batch = mixed_batch(MIXED_LENGTHS)
    with torch.no_grad():
        out = model(**batch)
    for h in hooks:
        h.remove()
    per_token = sum(m.weight.numel() for m in selector.predictors[-1] if isinstance(m, torch.nn.Linear))
    assert per_token == (model.config.hidden_size + 2) * (predictor_size or model.config.hidden_size)
    macs = selector.macs(out.kept_tokens, torch.tensor(MIXED_LENGTHS))
    assert out.kept_tokens[:, -1].sum() < sum(MIXED_LENGTHS)  # it skims
    assert len(rows) == model.config.num_hidden_layers - (not first_layer)
    assert float(macs.sum()) == per_token * sum(rows)


@pytest.mark.parametrize("train", [False, True])
def test_without_a_first_layer_predictor_every_token_enters_layer_0(train):
    """`skim_first_layer=False`: layer 0 has no predictor (and no parameters for it), keeps every real token in
    inference and training, and later layers still skim."""
    model = skimming_model(skim_first_layer=False, gumbel_noise=False).train(train)
    assert not list(model.bert.selector.predictors[0].parameters())
    batch = mixed_batch(MIXED_LENGTHS)
    out = model.bert(**batch)
    assert out.kept_tokens[:, 0].tolist() == MIXED_LENGTHS
    assert (out.kept_tokens[:, 1:].sum(0) < sum(MIXED_LENGTHS)).all()


def test_bad_input_errors():
    model = skimming_model()
    with pytest.raises(ValueError, match="empty batch"):
        model(input_ids=torch.zeros(0, 5, dtype=torch.long), attention_mask=torch.zeros(0, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds"):
        model(input_ids=torch.full((1, 65), 7), attention_mask=torch.ones(1, 65, dtype=torch.long))
    batch = mixed_batch([6, 3])
    with pytest.raises(ValueError, match="attention_mask"):
        model(input_ids=batch["input_ids"])
    with pytest.raises(ValueError, match="all zeros"):
        model(input_ids=batch["input_ids"], attention_mask=torch.zeros_like(batch["attention_mask"]))
    with pytest.raises(ValueError, match="num_attention_heads"):
        TranskimmerBertForSequenceClassification(TranskimmerBertConfig(hidden_size=30, num_attention_heads=4))


def test_short_inputs_keep_min_kept_tokens():
    """A predictor that skips everything still leaves each sequence its `min_kept_tokens` best tokens
    (CLS counted), in both execution paths, so short inputs stay answerable."""
    lengths = [2, 3, 9]
    model = skimming_model(bias=-5.0, min_kept_tokens=3)
    with torch.no_grad():
        out = model(**mixed_batch(lengths))
    assert out.kept_tokens.tolist() == [[min(n, 3)] * 3 for n in lengths]
    model.train()
    out = model(**mixed_batch(lengths))
    assert out.kept_tokens.tolist() == [[min(n, 3)] * 3 for n in lengths]


def test_keep_threshold_trades_tokens_without_retraining():
    """keep_threshold is P(keep) at inference: higher keeps fewer tokens, 0.5 is the argmax."""
    model = skimming_model(min_kept_tokens=0)
    batch = mixed_batch(MIXED_LENGTHS)
    kept = []
    for p in (0.05, 0.5, 0.95):
        model.config.keep_threshold = p
        with torch.no_grad():
            kept.append(int(model(**batch).kept_tokens.sum()))
    assert kept[0] > kept[1] > kept[2]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_matches_fp32(dtype):
    model = skimming_model(bias=5.0).cuda()
    batch = {k: v.cuda() for k, v in mixed_batch(MIXED_LENGTHS).items()}
    with torch.no_grad():
        ref = model(**batch).logits
        half = model.to(dtype)(**batch).logits
        assert torch.isfinite(half).all()
        torch.testing.assert_close(half.float(), ref, atol=5e-2, rtol=5e-2)
        model.train()
        assert torch.isfinite(model(**batch, labels=torch.zeros(16, dtype=torch.long, device="cuda")).loss)
