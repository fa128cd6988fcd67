"""Magic Pyramid = LTP pruning + early exit: exactness with both off, batch invariance and physical
removal with tokens pruned and rows exiting, tau at inference, the exit-head stage with hard pruning,
regression error and the Hub round trip."""

import json

import pytest
import torch
from conftest import MIXED_LENGTHS, PAD, load_as, mixed_batch, row, run_without_tokenskim, tiny_config
from transformers import BertForSequenceClassification, RobertaForSequenceClassification

from tokenskim.modeling import (
    LTPSelector,
    MagicPyramidBert,
    MagicPyramidBertConfig,
    MagicPyramidBertForSequenceClassification,
    MagicPyramidRobertaForSequenceClassification,
    dense_flops,
    encoder_flops,
    exit_counts,
    flops_ratio,
)

SEQ_CLS = {"bert": MagicPyramidBertForSequenceClassification, "roberta": MagicPyramidRobertaForSequenceClassification}
STOCK = {"bert": BertForSequenceClassification, "roberta": RobertaForSequenceClassification}



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


@pytest.mark.parametrize("backbone", ["bert", "roberta"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_pruning_and_exits_off_match_stock(backbone, mode):
    stock = STOCK[backbone](tiny_config(backbone)).eval()
    ours = load_as(SEQ_CLS[backbone], stock, skim_enabled=False, exit_enabled=False)
    getattr(ours, mode)()
    batch = mixed_batch([12, 5, 1, 9], pad_id=PAD[backbone])
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, stock(**batch).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backbone", ["bert", "roberta"])
@pytest.mark.parametrize("criterion", ["entropy", "patience"])
def test_batch_invariance_with_pruning_and_exits(backbone, criterion):
    layers = 5 if criterion == "patience" else 3  # patience 1: exits possible after layers 2, 3 and 4
    model = pyramid(backbone, layers=layers, exit_criterion=criterion, exit_patience=1)
    batch = mixed_batch(MIXED_LENGTHS, pad_id=PAD[backbone])
    with torch.no_grad():
        out = model(**batch)
        counts = exit_counts(out.exit_layer, layers)
        assert counts[:-1].sum() > 0 and counts[-1] > 0, f"some rows should exit early and some not: {counts}"
        ran = torch.arange(layers) < out.exit_layer[:, None]  # [batch, layers]: layers each row went through
        assert torch.any(ran & (out.ffn_tokens < torch.tensor(MIXED_LENGTHS)[:, None])), "nothing pruned"
        for i in range(len(MIXED_LENGTHS)):
            alone = model(**row(batch, i))
            torch.testing.assert_close(alone.logits[0], out.logits[i], atol=1e-5, rtol=0)
            assert alone.exit_layer[0] == out.exit_layer[i]
            assert torch.equal(alone.kept_tokens[0], out.kept_tokens[i])
            assert torch.equal(alone.ffn_tokens[0], out.ffn_tokens[i])


def test_rows_processed_equal_counts():
    model = pyramid()
    seen = {"attention": [], "ffn": []}
    for layer in model.bert.encoder.layer:
        layer.attention.self.query.register_forward_hook(lambda m, i, o: seen["attention"].append(i[0].shape[0]))
        layer.intermediate.register_forward_hook(lambda m, i, o: seen["ffn"].append(i[0].shape[0]))
    batch = mixed_batch(MIXED_LENGTHS, seq=40)
    with torch.no_grad():
        out = model(**batch)
    assert seen["attention"] == out.kept_tokens.sum(0).tolist()
    assert seen["ffn"] == out.ffn_tokens.sum(0).tolist()
    assert seen["attention"][0] == sum(MIXED_LENGTHS)
    exited = out.exit_layer < 3
    assert exited.any() and torch.all(out.kept_tokens[exited, -1] == 0)  # exited rows cost nothing after their exit
    # both mechanisms save work: the FLOPs ratio beats pruning alone and exits alone on these weights
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
    distillation while pruning (hard) is active."""
    model = pyramid(pruning_stage="hard").train().freeze_for_exit_training()
    thresholds = model.bert.selector.threshold_offsets.detach().clone()
    batch = mixed_batch(MIXED_LENGTHS, seed=3)
    out = model(**batch)
    assert out.skim_loss is None and out.loss.requires_grad
    assert out.ffn_tokens[:, -1].sum() < sum(MIXED_LENGTHS)  # pruning active during exit training
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    first = out.loss.item()
    out.loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("exit_heads."))
    opt.step()
    for _ in range(10):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    assert model(**batch).loss.item() < first
    assert torch.equal(model.bert.selector.threshold_offsets, thresholds)


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


def test_remote_code_round_trip_without_tokenskim(tmp_path):
    model = pyramid()
    with torch.no_grad():
        model.bert.selector.threshold_offsets.copy_(torch.tensor([0.0, 0.005, -0.005]))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForSequenceClassification"}
    batch = mixed_batch(MIXED_LENGTHS)
    with torch.no_grad():
        want = model(**batch)
        model.config.exit_threshold = 0.3
        want_03 = model(**batch)
    assert 0 < (want.exit_layer < 3).sum() < 16
    code = f"""
        import torch
        from transformers import AutoModel, AutoModelForSequenceClassification
        ids = torch.tensor({batch['input_ids'].tolist()}); mask = torch.tensor({batch['attention_mask'].tolist()})
        m = AutoModelForSequenceClassification.from_pretrained("{tmp_path}", trust_remote_code=True).eval()
        with torch.no_grad():
            out = m(input_ids=ids, attention_mask=mask)
            print(out.logits.tolist()); print(out.exit_layer.tolist()); print(out.ffn_tokens.tolist())
            m.config.exit_threshold = 0.3
            print(m(input_ids=ids, attention_mask=mask).exit_layer.tolist())
        print(type(m).__name__, type(AutoModel.from_pretrained("{tmp_path}", trust_remote_code=True)).__name__)
    """
    lines = run_without_tokenskim(code).strip().splitlines()
    torch.testing.assert_close(torch.tensor(eval(lines[0])), want.logits, atol=1e-6, rtol=0)
    assert eval(lines[1]) == want.exit_layer.tolist()
    assert eval(lines[2]) == want.ffn_tokens.tolist()
    assert eval(lines[3]) == want_03.exit_layer.tolist()
    assert lines[4] == "MagicPyramidBertForSequenceClassification MagicPyramidBertModel"
