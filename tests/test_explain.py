"""`tokenskim explain`: per-token drop layers from the selector's decisions, checked against the model's
own kept-token counts, and the HTML / PNG / JSON it writes."""

import json

import pytest
import torch
from test_bench import _one_thread, make_checkpoint  # noqa: F401  (autouse fixture)

from tokenskim.trainers import explain as ex


def test_drop_layers_follows_the_engine_rules():
    # 6 tokens, 3 layers. Layer 0 (before): drop 2 and 4; CLS is kept even when the selector says no.
    decisions = [
        (0, ex.BEFORE, [False, True, False, True, False, True]),
        (1, ex.BEFORE, [True, True, False, True]),  # alive now: 0, 1, 3, 5 -> drop 3
        (1, ex.AFTER, [True, False, True]),  # alive: 0, 1, 5 -> token 1 leaves after layer 1's attention
        (2, ex.BEFORE, [True, True]),
    ]
    d = ex.drop_layers(decisions, 6, 3)
    assert d.layer == [3, 1, 0, 1, 0, 3]
    assert d.stage == ["kept", ex.AFTER, ex.BEFORE, ex.BEFORE, ex.BEFORE, "kept"]
    attn, ffn = ex.counts_from_drops(d, 3)
    assert attn == [4, 3, 2] and ffn == [4, 2, 2]


def test_drop_layers_with_early_exit_and_bad_input():
    d = ex.drop_layers([(0, ex.BEFORE, torch.tensor([True, False, True]))], 3, 4, exit_layer=2)
    assert d.layer == [2, 0, 2] and d.stage == ["exit", ex.BEFORE, "exit"]
    with pytest.raises(ValueError, match="alive tokens"):
        ex.drop_layers([(0, ex.BEFORE, [True, False])], 3, 2)
    assert ex.drop_layers([], 2, 2).layer == [2, 2]


def test_explain_matches_the_models_counts_and_writes_files(tmp_path):
    ck = make_checkpoint(tmp_path / "ck")
    words = " ".join(f"w{i}" for i in range(3, 40))
    res = ex.explain(ck, [words, "w1 w2"], output_dir=str(tmp_path / "out"))
    e = res["explanations"][0]
    assert len(e.tokens) == len(e.drop_layer) == 39 and e.tokens[0] == "[CLS]"
    assert e.drop_stage[0] == "kept" and e.drop_layer[0] == e.num_layers  # CLS stays
    assert any(layer < e.num_layers for layer in e.drop_layer)  # the random predictors drop some tokens
    kept = sum(min(layer, e.num_layers) for layer in e.drop_layer) / (len(e.tokens) * e.num_layers)
    assert e.kept_token_ratio == pytest.approx(kept)
    # the selector is left as it was
    from transformers import AutoModelForSequenceClassification

    html = (tmp_path / "out" / "explain.html").read_text()
    assert html.count("<span class='t") == 39 + 4 and "prediction" in html
    assert all(p.endswith(".png") for p in res["files"]["png"]) and len(res["files"]["png"]) == 2
    js = json.loads((tmp_path / "out" / "explain.json").read_text())
    assert js["explanations"][1]["tokens"] == ["[CLS]", "w1", "w2", "[SEP]"]
    model = AutoModelForSequenceClassification.from_pretrained(ck, trust_remote_code=True)
    with ex.record_decisions(model.skim_model.selector) as log:
        pass
    assert log == [] and "before_layer" not in model.skim_model.selector.__dict__


def test_explain_rejects_a_model_that_drops_nothing(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    model = BertForSequenceClassification(BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=8))
    with pytest.raises(ValueError, match="not a tokenskim model"):
        ex.explain_text(model, None, "x")
