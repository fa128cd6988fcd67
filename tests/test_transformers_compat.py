"""tokenskim models behave like `transformers` models where a user meets them (issue 11): either padding side,
one switch for every decision, `return_dict=False`, clear errors on bad inputs, real `forward` signatures,
`torch.export` of the pruning-off path, gradient checkpointing."""

import inspect
import os
import subprocess
import sys

import pytest
import torch
from conftest import MIXED_LENGTHS, PAD, VOCAB, load_as, mixed_batch, row, tiny_config
from test_block_skim import qa_batch
from test_block_skim import skimming_model as block_skim_model
from test_sttabt import skimming_model as sttabt_skimming_model
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

import tokenskim.modeling as tsm
import tokenskim.modeling.attention as attention
from tokenskim.modeling import SkimPreTrainedModel

# per family: its sequence-classification class for each backbone, and settings under which a tiny random model
# really drops tokens and/or exits sequences
SEQ_CLS_FAMILIES = {
    "transkimmer": ("Transkimmer{}ForSequenceClassification", {"skim_bias_init": 0.0}),
    "ltp": ("LTP{}ForSequenceClassification", {"final_threshold": 0.1}),
    "early-exit": ("EarlyExit{}ForSequenceClassification", {"exit_threshold": 0.8}),
    "magic-pyramid": ("MagicPyramid{}ForSequenceClassification", {"final_threshold": 0.1, "exit_threshold": 0.6}),
    "sttabt": ("STTABT{}ForSequenceClassification", {"keep_logit_init": 0.0}),
}
BACKBONES = {"bert": "Bert", "roberta": "Roberta"}
STOCK = {
    "Model": {"bert": BertModel, "roberta": RobertaModel},
    "ForSequenceClassification": {"bert": BertForSequenceClassification, "roberta": RobertaForSequenceClassification},
    "ForQuestionAnswering": {"bert": BertForQuestionAnswering, "roberta": RobertaForQuestionAnswering},
    "ForTokenClassification": {"bert": BertForTokenClassification, "roberta": RobertaForTokenClassification},
}
# every public model class, by name
ALL_CLASSES = sorted(
    name for name, obj in vars(tsm).items()
    if isinstance(obj, type) and issubclass(obj, SkimPreTrainedModel) and "config_class" in vars(obj) and name == obj.__name__
)


def seq_cls(family, backbone):
    return getattr(tsm, SEQ_CLS_FAMILIES[family][0].format(BACKBONES[backbone]))


def deciding_model(family, backbone, **kwargs):
    """A random sequence classifier whose decisions drop tokens and/or exit sequences (initializer_range 0.3
    spreads the exit heads' confidence)."""
    cls = seq_cls(family, backbone)
    config = tiny_config(backbone, initializer_range=0.3).to_dict()
    return cls(cls.config_class(**config, **{**SEQ_CLS_FAMILIES[family][1], **kwargs})).eval()


def backbone_of(name):
    return "roberta" if "Roberta" in name else "bert"


def head_of(name):
    return next(h for h in STOCK if name.endswith(h))


def left_padded(batch):
    """The same examples with their padding moved to the left."""
    out = {k: v.clone() for k, v in batch.items()}
    for i, n in enumerate(batch["attention_mask"].sum(1).tolist()):
        for k in out:
            out[k][i] = batch[k][i].roll(batch[k].shape[1] - n)
    return out


LENGTHS = [9, 3, 14, 6, 1, 11]


# ---------------------------------------------------------------------------------------------------------
# 1. left padding


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("family", SEQ_CLS_FAMILIES)
def test_left_padding_equals_right_padding_and_each_example_alone(family, backbone):
    model = deciding_model(family, backbone)
    right = mixed_batch(LENGTHS, pad_id=PAD[backbone])
    left = left_padded(right)
    with torch.no_grad():
        got, want = model(**left), model(**right)
        decided = (want.ffn_tokens[:, -1] < torch.tensor(LENGTHS)).any() or (want.exit_layer < 3).any()
        assert decided, "the random model should drop tokens or exit sequences"
        torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=0)
        assert torch.equal(got.kept_tokens, want.kept_tokens) and torch.equal(got.exit_layer, want.exit_layer)
        for i in range(len(LENGTHS)):
            torch.testing.assert_close(model(**row(right, i)).logits[0], got.logits[i], atol=1e-5, rtol=0)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("family", SEQ_CLS_FAMILIES)
def test_left_padding_with_decisions_off_matches_stock_on_each_example(family, backbone):
    stock = STOCK["ForSequenceClassification"][backbone](tiny_config(backbone)).eval()
    ours = load_as(seq_cls(family, backbone), stock, skim_enabled=False).eval()
    right = mixed_batch(LENGTHS, pad_id=PAD[backbone])
    with torch.no_grad():
        got = ours(**left_padded(right)).logits
        for i in range(len(LENGTHS)):
            torch.testing.assert_close(got[i], stock(**row(right, i)).logits[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["TranskimmerBertForQuestionAnswering", "TranskimmerRobertaForTokenClassification",
                                  "LTPBertForTokenClassification", "BlockSkimRobertaForQuestionAnswering"])
def test_left_padding_token_level_heads(name):
    cls, backbone = getattr(tsm, name), backbone_of(name)
    if "BlockSkim" in name:  # test_block_skim's model and QA batches (question segment marked)
        model, right = block_skim_model(backbone), qa_batch([9, 13, 14, 6, 5, 11], backbone)
    else:
        config = tiny_config(backbone, num_labels=2, initializer_range=0.3).to_dict()
        model = cls(cls.config_class(**config, **DECIDING_SETTINGS[name.split(BACKBONES[backbone])[0]])).eval()
        right = mixed_batch(LENGTHS, pad_id=PAD[backbone])
    left = left_padded(right)
    lengths = right["attention_mask"].sum(1)
    field = "start_logits" if "QuestionAnswering" in name else "logits"
    with torch.no_grad():
        got, want = model(**left), model(**right)
        assert (want.ffn_tokens[:, -1] < lengths).any(), "the random model should drop tokens"
        assert torch.equal(got.ffn_tokens, want.ffn_tokens)
    real_left, real_right = left["attention_mask"].bool(), right["attention_mask"].bool()
    torch.testing.assert_close(getattr(got, field)[real_left], getattr(want, field)[real_right], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------
# 2. one switch


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("family", ["early-exit", "magic-pyramid"])
def test_skim_enabled_false_turns_exits_off_too(family, backbone):
    stock = STOCK["ForSequenceClassification"][backbone](tiny_config(backbone)).eval()
    # tau = 1 exits every sequence after layer 1 (and theta = 10 would prune every token but CLS): all of it off
    pruning = {"final_threshold": 10.0} if family == "magic-pyramid" else {}
    ours = load_as(seq_cls(family, backbone), stock, skim_enabled=False, exit_threshold=1.0, **pruning).eval()
    batch = mixed_batch(LENGTHS, pad_id=PAD[backbone])
    with torch.no_grad():
        out = ours(**batch)
        torch.testing.assert_close(out.logits, stock(**batch).logits, atol=1e-5, rtol=0)
        assert (out.exit_layer == 3).all()
        ours.config.skim_enabled = True  # the live switch: now everything exits after layer 1
        assert (ours(**batch).exit_layer == 1).all()


def test_early_exit_configs_accept_skim_enabled():
    for backbone in BACKBONES:
        config = seq_cls("early-exit", backbone).config_class(skim_enabled=False)
        assert config.skim_enabled is False


# ---------------------------------------------------------------------------------------------------------
# 3. return_dict=False


def labels_for(name, batch):
    if name.endswith("Model"):
        return {}
    if "QuestionAnswering" in name:
        return {"start_positions": torch.tensor([1, 0, 2]), "end_positions": torch.tensor([2, 0, 4])}
    if "TokenClassification" in name:
        return {"labels": torch.randint(0, 2, batch["input_ids"].shape)}
    return {"labels": torch.tensor([0, 1, 1])}


@pytest.mark.parametrize("name", ALL_CLASSES)
def test_return_dict_false_returns_the_stock_tuple(name):
    cls, backbone, head = getattr(tsm, name), backbone_of(name), head_of(name)
    config = tiny_config(backbone, num_labels=2)
    stock = STOCK[head][backbone](config).eval()
    ours = load_as(cls, stock, block_size=4).eval() if "BlockSkim" in name else load_as(cls, stock).eval()
    batch = {**mixed_batch([6, 2, 5], pad_id=PAD[backbone]), **labels_for(name, mixed_batch([6, 2, 5]))}
    with torch.no_grad():
        want = stock(**batch, return_dict=False)
        got = ours(**batch, return_dict=False)
        assert isinstance(got, tuple) and len(got) == len(want)
        full = ours(**batch)
        for value, key in zip(got, full.stock_fields):
            assert value is getattr(full, key) or torch.equal(value, getattr(full, key))
        ours.config.return_dict = False
        assert isinstance(ours(**batch), tuple)
        assert not isinstance(ours(**batch, return_dict=True), tuple)


def test_loss_logits_unpack():
    model = deciding_model("transkimmer", "bert")
    batch = mixed_batch([6, 2, 5])
    loss, logits = model(**batch, labels=torch.tensor([0, 1, 2]), return_dict=False)
    assert loss.dim() == 0 and logits.shape == (3, 3)


# ---------------------------------------------------------------------------------------------------------
# 4. bad inputs


@pytest.mark.parametrize("name", ["TranskimmerBertModel", "STTABTRobertaForSequenceClassification",
                                  "BlockSkimBertForQuestionAnswering", "EarlyExitBertForSequenceClassification"])
def test_bad_inputs_are_errors_naming_the_argument(name):
    cls, backbone = getattr(tsm, name), backbone_of(name)
    model = cls(cls.config_class(**tiny_config(backbone).to_dict(), **({"block_size": 4} if "BlockSkim" in name else {})))
    batch = mixed_batch([6, 2, 5], pad_id=PAD[backbone])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with pytest.raises(ValueError, match=r"attention_mask has shape \(3, 5\) but input_ids"):
        model(input_ids=ids, attention_mask=mask[:, :5])
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(input_ids=ids, attention_mask=mask[:2])
    with pytest.raises(ValueError, match="both input_ids and inputs_embeds"):
        model(input_ids=ids, inputs_embeds=torch.randn(3, 6, 32), attention_mask=mask)
    with pytest.raises(ValueError, match=r"only 2-D \[batch, seq\] attention masks"):
        model(input_ids=ids, attention_mask=mask[:, None, None, :].expand(3, 1, 6, 6))
    with pytest.raises(ValueError, match=r"only 2-D \[batch, seq\] attention masks"):
        model(input_ids=ids, attention_mask=mask[:, None, :])
    with pytest.raises(ValueError, match="input_ids must have 2 dimensions"):
        model(input_ids=ids[0])


# ---------------------------------------------------------------------------------------------------------
# 5. signatures


@pytest.mark.parametrize("name", ALL_CLASSES)
def test_forward_signature_names_the_inputs(name):
    params = inspect.signature(getattr(tsm, name).forward).parameters
    assert {"input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds", "return_dict"} <= set(params)
    head = head_of(name)
    expected = {"Model": [], "ForQuestionAnswering": ["start_positions", "end_positions"]}.get(head, ["labels"])
    assert set(expected) <= set(params)


# ---------------------------------------------------------------------------------------------------------
# 6. torch.export of the pruning-off path


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("family", SEQ_CLS_FAMILIES)
def test_export_with_decisions_off(family, backbone):
    model = deciding_model(family, backbone, skim_enabled=False)
    example = mixed_batch([7, 3, 5], pad_id=PAD[backbone])
    program = torch.export.export(model, args=(), kwargs=example)
    other = mixed_batch([2, 7, 4], pad_id=PAD[backbone], seed=1)  # same shapes, other values
    with torch.no_grad():
        for batch in (example, other):
            torch.testing.assert_close(program.module()(**batch).logits, model(**batch).logits, atol=1e-5, rtol=0)
    model.config.skim_enabled = True
    with pytest.raises(Exception, match="skim_enabled = False"):
        torch.export.export(model, args=(), kwargs=example)


@pytest.mark.parametrize("name", ["TranskimmerBertForSequenceClassification", "BlockSkimRobertaForQuestionAnswering"])
def test_jit_trace_with_decisions_off_runs_new_inputs(name):
    cls, backbone = getattr(tsm, name), backbone_of(name)
    blocks = {"block_size": 4} if "BlockSkim" in name else {}
    model = cls(cls.config_class(**tiny_config(backbone, num_labels=2).to_dict(), skim_enabled=False, **blocks)).eval()
    field = "start_logits" if "QuestionAnswering" in name else "logits"
    example = mixed_batch([7, 3, 5], pad_id=PAD[backbone])
    with torch.no_grad(), pytest.warns(torch.jit.TracerWarning):  # the shape checks are constants of the trace
        traced = torch.jit.trace(model, example_kwarg_inputs=example, strict=False)
        other = mixed_batch([2, 7, 4], pad_id=PAD[backbone], seed=1)
        torch.testing.assert_close(traced(**other)[field], getattr(model(**other), field), atol=1e-5, rtol=0)
    model.config.skim_enabled = True
    with pytest.raises(NotImplementedError, match="skim_enabled = False"):
        torch.jit.trace(model, example_kwarg_inputs=example, strict=False)


# ---------------------------------------------------------------------------------------------------------
# 7. gradient checkpointing


def training_model(name):
    cls, backbone = getattr(tsm, name), backbone_of(name)
    extra = {
        "Transkimmer": {"skim_bias_init": 0.0},  # Gumbel decisions that drop tokens
        "LTP": {"final_threshold": 0.1, "pruning_stage": "soft"},  # received attention
        "BlockSkim": {"block_size": 4},  # attention blocks
        "STTABT": {"keep_logit_init": 0.0},  # planned masks + distillation
    }[next(k for k in ("Transkimmer", "LTP", "BlockSkim", "STTABT") if name.startswith(k))]
    config = tiny_config(backbone, num_labels=2, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    return cls(cls.config_class(**config.to_dict(), **extra)).train()


def gradients(model, batch, seed=0):
    torch.manual_seed(seed)
    model(**batch).loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return grads


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("name", ["TranskimmerBertForSequenceClassification", "LTPRobertaForTokenClassification",
                                  "BlockSkimBertForQuestionAnswering", "STTABTBertForSequenceClassification"])
def test_gradient_checkpointing_gives_the_same_gradients(name, reentrant):
    model = training_model(name)
    batch = {**mixed_batch([9, 3, 6]), **labels_for(name, mixed_batch([9, 3, 6]))}
    if "TokenClassification" in name:
        batch["labels"] = torch.randint(0, 2, batch["input_ids"].shape, generator=torch.Generator().manual_seed(0))
    calls = []
    for layer in model.skim_model.encoder.layer:
        layer.intermediate.register_forward_hook(lambda *a: calls.append(1))
    want = gradients(model, batch)
    plain_calls, calls[:] = len(calls), []
    options = {"use_reentrant": reentrant}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.25; the older name is deprecated there
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    got = gradients(model, batch)
    assert len(calls) == plain_calls + len(model.skim_model.encoder.layer), "each feed-forward block recomputed once"
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=1e-5, msg=k)


# ---------------------------------------------------------------------------------------------------------
# 8. bf16 on CPU: a batch and its examples one at a time agree exactly


@pytest.mark.parametrize("name, settings", [
    ("TranskimmerBertForQuestionAnswering", {"skim_bias_init": 0.0}),
    ("TranskimmerRobertaForTokenClassification", {"skim_bias_init": 0.0}),
    ("STTABTBertForSequenceClassification", {}),  # test_sttabt's skimming model
    ("LTPBertForTokenClassification", {"final_threshold": 0.1}),
])
def test_bf16_batch_equals_each_example_alone(name, settings, monkeypatch):
    """Stock transformers gives bitwise the same bf16 logits batched and alone; so does tokenskim with decisions on.
    The short-sequence padded attention used to round its scores to bf16 (differences up to 2.7e-2); it now runs
    the per-sequence path's SDPA kernel in half precision (see `attention.padded_attention`)."""
    padded_calls = []
    original = attention.padded_attention
    monkeypatch.setattr(attention, "padded_attention", lambda *a: padded_calls.append(1) or original(*a))
    cls, backbone = getattr(tsm, name), backbone_of(name)
    config = tiny_config(backbone, num_labels=2 if "QuestionAnswering" in name else 3)
    model = cls(cls.config_class(**config.to_dict(), **settings)).eval()
    if "STTABT" in name:
        model = sttabt_skimming_model(backbone)
    model = model.to(torch.bfloat16)
    batch = mixed_batch(MIXED_LENGTHS, pad_id=PAD[backbone])
    field = "start_logits" if "QuestionAnswering" in name else "logits"
    with torch.no_grad():
        out = model(**batch)
        assert (out.ffn_tokens[:, -1] < torch.tensor(MIXED_LENGTHS)).any(), "the random model should drop tokens"
        for i in range(len(MIXED_LENGTHS)):
            alone = model(**row(batch, i))
            n = MIXED_LENGTHS[i]
            want = getattr(alone, field)[0]
            got = getattr(out, field)[i] if want.dim() == 1 and "Sequence" in name else getattr(out, field)[i, :n]
            assert torch.equal(alone.kept_tokens[0], out.kept_tokens[i])
            torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert padded_calls or "STTABT" in name or "LTP" in name, "the batch should take the short padded attention path"


# ---------------------------------------------------------------------------------------------------------
# 9. the tokenizer of a saved folder


def test_tokenizer_of_a_saved_folder_loads_without_running_custom_code(tmp_path):
    """`AutoTokenizer` reads the folder's model config first (`AutoConfig.from_pretrained`), and the config's
    `auto_map` needs custom code unless tokenskim registered its types in this process. So without tokenskim
    imported a plain `AutoTokenizer.from_pretrained(folder)` asks "run the custom code? [y/N]" (transformers'
    behaviour for every custom-code checkpoint; the AutoConfig entry cannot go, AutoModel needs it).
    `trust_remote_code=False` loads the plain BERT tokenizer and runs no code; with tokenskim imported nothing
    needs saying. Both checked in fresh processes with stdin closed, so a prompt would fail them."""
    from transformers import BertTokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(115)]))
    folder = tmp_path / "model"
    deciding_model("transkimmer", "bert").save_pretrained(folder)
    BertTokenizer(str(vocab)).save_pretrained(folder)
    load = f"from transformers import AutoTokenizer\nt = AutoTokenizer.from_pretrained({str(folder)!r}{{}})\n" \
           "print(type(t).__name__, t('w1 w2')['input_ids'])"
    without_tokenskim = "import sys\nsys.modules['tokenskim'] = None\n" + load.format(", trust_remote_code=False")
    with_tokenskim = "import tokenskim.modeling\n" + load.format("")
    for code in (without_tokenskim, with_tokenskim):
        proc = subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "[y/N]" not in proc.stdout + proc.stderr
        assert proc.stdout.split()[0] == "BertTokenizer" and "[2, 6, 7, 3]" in proc.stdout


# ---------------------------------------------------------------------------------------------------------
# common behaviour of every class, decisions off and on (a few of transformers' ModelTesterMixin checks)

DECIDING_SETTINGS = {
    "Transkimmer": {"skim_bias_init": 0.0},
    "LTP": {"final_threshold": 0.1},
    "EarlyExit": {"exit_threshold": 0.8},
    "MagicPyramid": {"final_threshold": 0.1, "exit_threshold": 0.8},
    "STTABT": {"keep_logit_init": 0.0},
    "BlockSkim": {"block_size": 4, "skim_threshold": 0.6},
}


@pytest.mark.parametrize("decisions", ["off", "on"])
@pytest.mark.parametrize("name", ALL_CLASSES)
def test_common_behaviour(name, decisions, tmp_path):
    """No mask = a mask of ones; inputs_embeds = input_ids; save/load (also in bf16); resize_token_embeddings;
    a training step; the config round trip."""
    cls, backbone = getattr(tsm, name), backbone_of(name)
    family = next(k for k in DECIDING_SETTINGS if name.startswith(k))
    settings = DECIDING_SETTINGS[family] if decisions == "on" else {"skim_enabled": False}
    if family == "BlockSkim":
        settings = {"block_size": 4, **settings}
    config = cls.config_class(**tiny_config(backbone, num_labels=2, initializer_range=0.3).to_dict(), **settings)
    model = cls(config).eval()
    ids = mixed_batch([6, 6, 6], pad_id=PAD[backbone])["input_ids"]
    with torch.no_grad():
        out = model(input_ids=ids)
        field = next(k for k in out.stock_fields if k != "loss")
        torch.testing.assert_close(model(input_ids=ids, attention_mask=torch.ones_like(ids))[field], out[field])
        torch.testing.assert_close(model(inputs_embeds=model.get_input_embeddings()(ids))[field], out[field])
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(cls.from_pretrained(tmp_path).eval()(input_ids=ids)[field], out[field])
        half = cls.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
        assert half.dtype == torch.bfloat16 and half(input_ids=ids)[field].dtype == torch.bfloat16
    model.resize_token_embeddings(VOCAB + 10)
    assert model.config.vocab_size == VOCAB + 10 and model.get_input_embeddings().num_embeddings == VOCAB + 10
    model.train()
    batch = mixed_batch([6, 3, 5], pad_id=PAD[backbone])
    out = model(**batch, **labels_for(name, batch))
    (out.loss if "loss" in out else out.last_hidden_state.sum()).backward()
    assert any(p.grad is not None for p in model.parameters())
    assert type(config).from_dict(config.to_dict()).to_dict() == config.to_dict()
