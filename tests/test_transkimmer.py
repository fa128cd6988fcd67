"""Transkimmer on the shared engine: exactness against stock transformers, batch invariance, physical
removal, training signals, Hub round trip, bad input and edge cases."""

import json

import pytest
import torch
from conftest import MIXED_LENGTHS, PAD, load_as, mixed_batch, row, run_without_tokenskim, tiny_config
from transformers import (
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
)

from tokenskim.modeling import (
    TranskimmerBertConfig,
    TranskimmerBertForQuestionAnswering,
    TranskimmerBertForSequenceClassification,
    TranskimmerBertForTokenClassification,
    TranskimmerBertModel,
    TranskimmerRobertaForQuestionAnswering,
    TranskimmerRobertaForSequenceClassification,
    TranskimmerRobertaForTokenClassification,
    TranskimmerRobertaModel,
)

STOCK_AND_OURS = {
    "bert": [
        (BertModel, TranskimmerBertModel, "last_hidden_state"),
        (BertForSequenceClassification, TranskimmerBertForSequenceClassification, "logits"),
        (BertForQuestionAnswering, TranskimmerBertForQuestionAnswering, "start_logits"),
        (BertForTokenClassification, TranskimmerBertForTokenClassification, "logits"),
    ],
    "roberta": [
        (RobertaModel, TranskimmerRobertaModel, "last_hidden_state"),
        (RobertaForSequenceClassification, TranskimmerRobertaForSequenceClassification, "logits"),
        (RobertaForQuestionAnswering, TranskimmerRobertaForQuestionAnswering, "start_logits"),
        (RobertaForTokenClassification, TranskimmerRobertaForTokenClassification, "logits"),
    ],
}
SEQ_CLS = {"bert": TranskimmerBertForSequenceClassification, "roberta": TranskimmerRobertaForSequenceClassification}



def skimming_model(backbone="bert", bias=0.0, **kwargs):
    """A random model whose predictors drop a good share of tokens (no keep-biased init)."""
    config = tiny_config(backbone)
    config = (SEQ_CLS[backbone].config_class)(**config.to_dict(), skim_bias_init=bias, **kwargs)
    return SEQ_CLS[backbone](config).eval()


@pytest.mark.parametrize("backbone", ["bert", "roberta"])
@pytest.mark.parametrize("head", range(4))
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_skim_off_matches_stock(backbone, head, mode):
    stock_cls, our_cls, field = STOCK_AND_OURS[backbone][head]
    stock = stock_cls(tiny_config(backbone, num_labels=2 if "QuestionAnswering" in stock_cls.__name__ else 3)).eval()
    ours = load_as(our_cls, stock, skim_enabled=False)
    getattr(ours, mode)()
    batch = mixed_batch([12, 5, 1, 9], pad_id=PAD[backbone])
    with torch.no_grad():
        want = getattr(stock(**batch), field)
        got = getattr(ours(**batch), field)
    if want.dim() >= 2 and want.shape[1] == batch["input_ids"].shape[1]:  # token-level: real positions only
        real = batch["attention_mask"].bool()
        want, got = want[real], got[real]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_pooler_and_hidden_states_full_length():
    model = load_as(TranskimmerBertModel, BertModel(tiny_config()), skim_bias_init=0.0).eval()
    batch = mixed_batch([10, 4])
    out = model(**batch)
    assert out.last_hidden_state.shape == (2, 10, 32)
    assert out.pooler_output.shape == (2, 32)
    assert torch.all(out.last_hidden_state[1, 4:] == 0)  # padding stays zero
    assert torch.all(out.last_hidden_state[1, :4].abs().sum(-1) > 0)  # every real token has a state


@pytest.mark.parametrize("backbone", ["bert", "roberta"])
def test_batch_invariance_with_skimming(backbone):
    model = skimming_model(backbone)
    batch = mixed_batch(MIXED_LENGTHS, pad_id=PAD[backbone])
    with torch.no_grad():
        out = model(**batch)
        kept = out.kept_tokens
        assert kept[:, -1].sum() < kept[:, 0].sum(), "the random predictors should skim something"
        for i in range(len(MIXED_LENGTHS)):
            alone = model(**row(batch, i))
            torch.testing.assert_close(alone.logits[0], out.logits[i], atol=1e-5, rtol=0)
            assert torch.equal(alone.kept_tokens[0], kept[i])


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


def test_rows_processed_equal_kept_counts():
    model = skimming_model()
    seen = {"attention": [], "ffn": []}
    for layer in model.bert.encoder.layer:
        layer.attention.self.query.register_forward_hook(lambda m, i, o: seen["attention"].append(i[0].shape[0]))
        layer.intermediate.register_forward_hook(lambda m, i, o: seen["ffn"].append(i[0].shape[0]))
    batch = mixed_batch(MIXED_LENGTHS, seq=40)
    with torch.no_grad():
        out = model(**batch)
    assert seen["attention"] == out.kept_tokens.sum(0).tolist()
    assert seen["ffn"] == out.ffn_tokens.sum(0).tolist()
    assert seen["attention"][0] <= sum(MIXED_LENGTHS)  # packed: no padding rows (16 * 40 padded)
    assert seen["attention"][-1] < seen["attention"][0]


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


def test_remote_code_round_trip_without_tokenskim(tmp_path):
    model = skimming_model()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config["auto_map"]) == {
        "AutoConfig", "AutoModel", "AutoModelForSequenceClassification",
        "AutoModelForQuestionAnswering", "AutoModelForTokenClassification",
    }
    assert not list(tmp_path.glob("*.bin")) and (tmp_path / "model.safetensors").exists()
    batch = mixed_batch([11, 4, 7])
    with torch.no_grad():
        want = model(**batch)
    code = f"""
        import torch
        from transformers import AutoModel, AutoModelForQuestionAnswering, AutoModelForSequenceClassification
        ids = torch.tensor({batch['input_ids'].tolist()}); mask = torch.tensor({batch['attention_mask'].tolist()})
        m = AutoModelForSequenceClassification.from_pretrained("{tmp_path}", trust_remote_code=True).eval()
        out = m(input_ids=ids, attention_mask=mask)
        print(out.logits.tolist()); print(out.kept_tokens.tolist())
        for auto in (AutoModel, AutoModelForQuestionAnswering):
            print(type(auto.from_pretrained("{tmp_path}", trust_remote_code=True)).__name__)
    """
    lines = run_without_tokenskim(code).strip().splitlines()
    torch.testing.assert_close(torch.tensor(eval(lines[0])), want.logits, atol=1e-6, rtol=0)
    assert eval(lines[1]) == want.kept_tokens.tolist()
    assert lines[2:] == ["TranskimmerBertModel", "TranskimmerBertForQuestionAnswering"]


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


def test_no_mask_without_padding_means_all_real():
    model = skimming_model()
    ids = mixed_batch([8, 8])["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits)


def test_edge_cases_cls_only_and_everything_skimmed():
    batch = {"input_ids": torch.tensor([[3, 4], [3, 0]]), "attention_mask": torch.tensor([[1, 1], [1, 0]])}
    for model in (skimming_model(), skimming_model(bias=-5.0, min_kept_tokens=0)):  # bias -5: all but CLS skimmed
        with torch.no_grad():
            out = model(**batch)
            assert torch.isfinite(out.logits).all()
            torch.testing.assert_close(model(**row(batch, 1)).logits[0], out.logits[1], atol=1e-5, rtol=0)
    assert out.kept_tokens.tolist() == [[1, 1, 1], [1, 1, 1]]
    model.train()
    out = model(**batch, labels=torch.tensor([0, 2]))
    assert torch.isfinite(out.loss)


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


def test_bf16_cpu_inference_is_finite():
    model = skimming_model().to(torch.bfloat16)
    with torch.no_grad():
        out = model(**mixed_batch(MIXED_LENGTHS))
    assert torch.isfinite(out.logits.float()).all()


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
