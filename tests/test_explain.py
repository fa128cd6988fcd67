"""`tokenskim explain`: per-token drop layers from the selector's decisions, checked against the model's
own kept-token counts, and the HTML / PNG / JSON it writes."""

import json

import pytest
import torch
from test_bench import _one_thread, make_checkpoint  # noqa: F401  (autouse fixture)

from tokenskim.trainers import explain as ex


def test_drop_layers_reads_the_layers_each_token_went_through():
    # 6 tokens, 3 layers: tokens 2 and 4 skip layer 0, token 3 skips layer 1, token 1 leaves after layer 1's
    # attention, CLS and token 5 go through everything
    attention = [3, 2, 0, 1, 0, 3]
    ffn = [3, 1, 0, 1, 0, 3]
    d = ex.drop_layers(attention, ffn, 3)
    assert d.layer == [3, 1, 0, 1, 0, 3]
    assert d.stage == ["kept", ex.AFTER, ex.BEFORE, ex.BEFORE, ex.BEFORE, "kept"]


def test_drop_layers_with_early_exit_and_bad_input():
    d = ex.drop_layers([2, 0, 2], [2, 0, 2], 4, exit_layer=2)
    assert d.layer == [2, 0, 2] and d.stage == ["exit", ex.BEFORE, "exit"]
    with pytest.raises(ValueError, match="cannot enter"):
        ex.drop_layers([3, 1], [1, 1], 3)  # two layers' attention without their feed-forward blocks
    with pytest.raises(ValueError, match="counts"):
        ex.drop_layers([1, 1], [1], 2)
    assert ex.drop_layers([], [], 2).layer == []


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
    from transformers import AutoModelForSequenceClassification

    html = (tmp_path / "out" / "explain.html").read_text()
    assert html.count("<span class='t") == 39 + 4 and "prediction" in html
    assert all(p.endswith(".png") for p in res["files"]["png"]) and len(res["files"]["png"]) == 2
    js = json.loads((tmp_path / "out" / "explain.json").read_text())
    assert js["explanations"][1]["tokens"] == ["[CLS]", "w1", "w2", "[SEP]"]
    # the drops agree with the model's own per-layer counts
    from transformers import AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(ck, trust_remote_code=True).eval()
    with torch.inference_mode():
        out = model(**AutoTokenizer.from_pretrained(ck)(words, return_tensors="pt"))
    assert counts_from_drops(e) == (out.kept_tokens[0].tolist(), out.ffn_tokens[0].tolist())


def counts_from_drops(e):
    """Tokens entering each layer's attention and feed-forward block, rebuilt from an explanation's drops."""
    after = [stage == ex.AFTER for stage in e.drop_stage]
    attention = [sum(layer > i or (layer == i and a) for layer, a in zip(e.drop_layer, after)) for i in range(e.num_layers)]
    return attention, [sum(layer > i for layer in e.drop_layer) for i in range(e.num_layers)]


def test_explain_reads_planned_decisions(tmp_path):
    """STTABT decides every layer up front (`plan`), which the explanation shows."""
    from test_sttabt import skimming_model
    from transformers import BertTokenizerFast

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(115)]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    torch.manual_seed(0)
    model = skimming_model()
    text = " ".join(f"w{i}" for i in range(3, 30))
    e = ex.explain_text(model, tokenizer, text)
    with torch.inference_mode():
        out = model(**tokenizer(text, return_tensors="pt"))
    assert any(layer < e.num_layers for layer in e.drop_layer)  # the plan dropped tokens
    assert counts_from_drops(e) == (out.kept_tokens[0].tolist(), out.ffn_tokens[0].tolist())


def test_explain_rejects_a_model_that_drops_nothing(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    model = BertForSequenceClassification(BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=8))
    with pytest.raises(ValueError, match="not a tokenskim model"):
        ex.explain_text(model, None, "x")
