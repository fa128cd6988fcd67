"""The invariants every tokenskim family keeps, written once and run for every family, backbone and head:
exactness against stock `transformers` with decisions off, a batch equal to its examples one at a time, rows
processed equal to the reported counts, full-length base-model outputs, bf16 on CPU, a CLS-only row and a model
that drops every token but CLS, local Auto registration, and the Hub round trip without tokenskim installed.

`FAMILIES` says how each family meets them; family-specific behaviour (formulas, losses, schedules, the strength
of each family's random deciding model) stays in the family's own test file.
"""

import json
from dataclasses import dataclass
from typing import Callable

import pytest
import test_block_skim
import test_early_exit
import test_ltp
import test_magic_pyramid
import test_sttabt
import test_transkimmer
import torch
import transformers
from conftest import MIXED_LENGTHS, PAD, load_as, mixed_batch, row, run_without_tokenskim, tiny_config
from safetensors.torch import load_file

import tokenskim.modeling as tsm
from tokenskim.modeling import exit_counts

BACKBONES = {"bert": "Bert", "roberta": "Roberta"}


def plain_batch(lengths, backbone="bert", seq=None, seed=0):
    """`mixed_batch` with the backbone's padding token."""
    return mixed_batch(lengths, seq=seq, pad_id=PAD[backbone], seed=seed)


@dataclass(frozen=True)
class Family:
    """How the invariants meet one family.

    heads: the heads it has, the one `deciding_model` builds first.
    off: config overrides that switch every decision off.
    deciding_model: `(backbone, **config overrides)` -> a random model in eval mode whose decisions really drop
        tokens and/or exit sequences on `MIXED_LENGTHS` (each family's test file says how strongly).
    inputs: `(lengths, backbone, seq=None, seed=0)` -> a padded batch the family can read.
    prunes: it drops tokens.
    exit_stage: its classifier has exit heads, and these config overrides train them alone; None: no exits.
    decides_before_layer_0: it may drop tokens before the first layer's attention.
    live_switch: a config field and value that the loaded model must honour when set after loading.
    drop_all: `(deciding_model overrides under which every token but CLS goes, kept_tokens, ffn_tokens)` on the
        batch of `test_cls_only_and_everything_dropped`, or None.
    """

    heads: tuple
    off: dict
    deciding_model: Callable
    inputs: Callable = plain_batch
    prunes: bool = True
    exit_stage: dict = None
    decides_before_layer_0: bool = False
    live_switch: tuple = ("skim_enabled", False)
    drop_all: tuple = None

    @property
    def exits(self):
        return self.exit_stage is not None


ALL_HEADS = ("ForSequenceClassification", "Model", "ForQuestionAnswering", "ForTokenClassification")
SEQ_CLS_AND_MODEL = ("ForSequenceClassification", "Model")

FAMILIES = {
    "Transkimmer": Family(
        ALL_HEADS, {"skim_enabled": False}, test_transkimmer.skimming_model, decides_before_layer_0=True,
        drop_all=({"bias": -5.0, "min_kept_tokens": 0}, [[1, 1, 1], [1, 1, 1]], [[1, 1, 1], [1, 1, 1]]),
    ),
    "LTP": Family(
        ALL_HEADS, {"skim_enabled": False}, test_ltp.pruning_model,
        drop_all=({"final_threshold": 10.0, "min_kept_tokens": 0}, [[3, 3, 1], [1, 1, 1]], [[3, 1, 1], [1, 1, 1]]),
    ),
    "EarlyExit": Family(
        SEQ_CLS_AND_MODEL, {"exit_enabled": False}, test_early_exit.exiting_model, prunes=False, exit_stage={},
        live_switch=("exit_threshold", 0.9),
    ),
    "MagicPyramid": Family(
        SEQ_CLS_AND_MODEL, {"skim_enabled": False, "exit_enabled": False}, test_magic_pyramid.pyramid,
        exit_stage={"pruning_stage": "hard"},
        live_switch=("exit_threshold", 0.3),
    ),
    "BlockSkim": Family(
        ("ForQuestionAnswering", "Model"), {"skim_enabled": False, "block_size": 4},  # test_block_skim's block size
        test_block_skim.skimming_model,
        inputs=test_block_skim.qa_batch,
    ),
    "STTABT": Family(
        SEQ_CLS_AND_MODEL, {"skim_enabled": False}, test_sttabt.skimming_model,
        drop_all=({"keep_logit": -30.0}, [[3, 1, 1], [1, 1, 1]], [[3, 1, 1], [1, 1, 1]]),
    ),
}
# exit rules: with patience 1 and 5 layers a row can exit after layer 2, 3 or 4
CRITERIA = {
    "entropy": {"exit_criterion": "entropy", "exit_patience": 1},
    "patience": {"exit_criterion": "patience", "exit_patience": 1, "layers": 5},
}


def exits(family, head):
    return FAMILIES[family].exits and head == "ForSequenceClassification"  # the exit heads sit on the classifier


EVERY_HEAD = [pytest.param(f, h, id=f"{f}-{h}") for f, spec in FAMILIES.items() for h in spec.heads]
DECIDING_HEADS = [p for p in EVERY_HEAD if FAMILIES[p.values[0]].prunes or exits(*p.values)]
DECIDING_HEADS_AND_RULES = [
    pytest.param(*p.values, rule, id="-".join([p.id] + ([rule] if rule else [])))
    for p in DECIDING_HEADS for rule in (CRITERIA if exits(*p.values) else [None])
]


def model_class(family, backbone, head):
    return getattr(tsm, f"{family}{BACKBONES[backbone]}{head}")


def auto_class_name(head):
    return "AutoModel" + ("" if head == "Model" else head)


def deciding_model(family, backbone, head, **overrides):
    """The family's deciding model, loaded as `head` when it is built with another head (the decisions' weights and
    settings travel with the checkpoint; a new head starts at random)."""
    spec = FAMILIES[family]
    model = spec.deciding_model(backbone, **overrides)
    if head == spec.heads[0]:
        return model
    labels = {"num_labels": 2} if head == "ForQuestionAnswering" else {}
    return load_as(model_class(family, backbone, head), model, **labels).eval()


def is_token_level(field, head):
    """The field is `[batch, seq, ...]`."""
    return field in ("last_hidden_state", "start_logits", "end_logits", "token_layers", "token_ffn_layers") or (
        field == "logits" and head == "ForTokenClassification"
    )


def tensors(out):
    """The output's tensor fields, by name."""
    return {k: v for k, v in out.items() if torch.is_tensor(v)}


def assert_decides(out, lengths, family, head):
    """Some real token was dropped in a layer its row ran (pruning families), and some rows exited early while
    others ran every layer (exit heads)."""
    lengths = torch.as_tensor(lengths)
    layers = out.kept_tokens.shape[1]
    exit_layer = out.get("exit_layer", torch.full_like(lengths, layers))
    if FAMILIES[family].prunes:
        ran = torch.arange(layers) < exit_layer[:, None]
        assert (ran & (out.ffn_tokens < lengths[:, None])).any(), "the random model should drop tokens"
    if exits(family, head):
        counts = exit_counts(exit_layer, layers)
        assert counts[:-1].sum() > 0 and counts[-1] > 0, f"some rows should exit early and some not: {counts}"


# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("family, head", EVERY_HEAD)
def test_decisions_off_match_stock(family, head, backbone, mode):
    """A stock checkpoint loaded with every decision off gives the stock outputs at real positions, and every real
    token goes through every layer."""
    stock_class = getattr(transformers, f"{BACKBONES[backbone]}{head}")
    stock = stock_class(tiny_config(backbone, num_labels=2 if head == "ForQuestionAnswering" else 3)).eval()
    ours = load_as(model_class(family, backbone, head), stock, **FAMILIES[family].off)
    getattr(ours, mode)()
    lengths = [12, 5, 1, 9, 23]
    batch = FAMILIES[family].inputs(lengths, backbone)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        want, got = stock(**batch), ours(**batch)
    for field in got.stock_fields:
        if field != "loss":
            expected, actual = getattr(want, field), getattr(got, field)
            if is_token_level(field, head):
                expected, actual = expected[real], actual[real]
            torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0, msg=field)
    layers = stock.config.num_hidden_layers
    every_token = torch.tensor(lengths)[:, None].expand(-1, layers)
    assert got.kept_tokens.tolist() == got.ffn_tokens.tolist() == every_token.tolist()
    assert got.token_layers.tolist() == got.token_ffn_layers.tolist() == (layers * real).tolist()
    if "exit_layer" in got:
        assert (got.exit_layer == layers).all()


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("family, head, rule", DECIDING_HEADS_AND_RULES)
def test_batch_equals_each_example_alone(family, head, rule, backbone):
    """With decisions on, each example's outputs and counts are the same in a batch of mixed lengths as alone."""
    model = deciding_model(family, backbone, head, **CRITERIA.get(rule, {}))
    batch = FAMILIES[family].inputs(MIXED_LENGTHS, backbone)
    with torch.no_grad():
        out = model(**batch)
        assert_decides(out, MIXED_LENGTHS, family, head)
        for i, n in enumerate(MIXED_LENGTHS):
            alone = tensors(model(**row(batch, i)))
            assert alone.keys() == tensors(out).keys()
            for field, value in alone.items():
                in_batch = out[field][i, :n] if is_token_level(field, head) else out[field][i]
                if value.is_floating_point():
                    torch.testing.assert_close(value[0], in_batch, atol=1e-5, rtol=0, msg=f"{field} of row {i}")
                else:
                    assert torch.equal(value[0], in_batch), f"{field} of row {i}"


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("family, head", DECIDING_HEADS)
def test_rows_processed_equal_counts(family, head, backbone):
    """The rows each layer's attention and feed-forward block run on are the reported kept_tokens / ffn_tokens:
    packed, without padding rows, fewer at the end, none for a row after its exit; and the per-token layer counts
    add up to them (a dropped token never comes back)."""
    model = deciding_model(family, backbone, head)
    seen = {"attention": [], "ffn": []}
    for layer in model.base_model.encoder.layer:
        layer.attention.self.query.register_forward_hook(lambda m, i, o: seen["attention"].append(i[0].shape[0]))
        layer.intermediate.register_forward_hook(lambda m, i, o: seen["ffn"].append(i[0].shape[0]))
    batch = FAMILIES[family].inputs(MIXED_LENGTHS, backbone, seq=40)  # 16 x 40 padded
    with torch.no_grad():
        out = model(**batch)
    assert_decides(out, MIXED_LENGTHS, family, head)
    assert seen["attention"] == out.kept_tokens.sum(0).tolist()
    assert seen["ffn"] == out.ffn_tokens.sum(0).tolist()
    lengths, first = torch.tensor(MIXED_LENGTHS), out.kept_tokens[:, 0]
    assert torch.all(first <= lengths) if FAMILIES[family].decides_before_layer_0 else torch.equal(first, lengths)
    assert torch.all(out.ffn_tokens <= out.kept_tokens)
    assert seen["ffn"][-1] < seen["attention"][0]
    if "exit_layer" in out:
        after_exit = torch.arange(out.kept_tokens.shape[1]) >= out.exit_layer[:, None]
        assert torch.all(out.kept_tokens[after_exit] == 0) and torch.all(out.ffn_tokens[after_exit] == 0)
    layers = torch.arange(out.kept_tokens.shape[1])
    assert torch.equal((out.token_layers[..., None] > layers).sum(1), out.kept_tokens)
    assert torch.equal((out.token_ffn_layers[..., None] > layers).sum(1), out.ffn_tokens)
    assert not out.token_layers[~batch["attention_mask"].bool()].any()


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("family", FAMILIES)
def test_base_model_output_is_full_length(family, backbone):
    """Dropped tokens keep the state of the last layer they took part in: every real position has a state, padding
    stays zero, and the pooler reads each row's CLS."""
    model = deciding_model(family, backbone, "Model")
    batch = FAMILIES[family].inputs(MIXED_LENGTHS, backbone, seq=40)
    with torch.no_grad():
        out = model(**batch)
    assert_decides(out, MIXED_LENGTHS, family, "Model")
    real = batch["attention_mask"].bool()
    assert out.last_hidden_state.shape == (16, 40, 32) and out.pooler_output.shape == (16, 32)
    assert torch.all(out.last_hidden_state[~real] == 0)
    assert torch.all(out.last_hidden_state[real].abs().sum(-1) > 0)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_cpu_inference_is_finite(family, backbone):
    """In bf16 on CPU the deciding model still decides, and its outputs stay finite and bf16."""
    head = FAMILIES[family].heads[0]
    model = deciding_model(family, backbone, head).to(torch.bfloat16)
    with torch.no_grad():
        out = model(**FAMILIES[family].inputs(MIXED_LENGTHS, backbone))
    assert_decides(out, MIXED_LENGTHS, family, head)
    for field in out.stock_fields:
        if field in out:
            assert out[field].dtype == torch.bfloat16 and torch.isfinite(out[field].float()).all(), field


@pytest.mark.parametrize("family", [f for f in FAMILIES if FAMILIES[f].drop_all])
def test_cls_only_and_everything_dropped(family):
    """A row of CLS alone and a model that drops every token but CLS give finite outputs, losses and gradients,
    and the CLS-only row is the same in the batch as alone."""
    batch = {"input_ids": torch.tensor([[3, 4, 5], [3, 0, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [1, 0, 0]])}
    settings, kept, ffn = FAMILIES[family].drop_all
    dropping_all = FAMILIES[family].deciding_model("bert", **settings)
    for model in (FAMILIES[family].deciding_model("bert"), dropping_all):
        with torch.no_grad():
            out = model(**batch)
            assert torch.isfinite(out.logits).all()
            torch.testing.assert_close(model(**row(batch, 1)).logits[0], out.logits[1], atol=1e-5, rtol=0)
    with torch.no_grad():
        out = dropping_all(**batch)
    assert out.kept_tokens.tolist() == kept and out.ffn_tokens.tolist() == ffn
    model = dropping_all.train()
    out = model(**batch, labels=torch.tensor([0, 2]))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("family, head", EVERY_HEAD)
def test_local_auto_registration(family, head, backbone):
    """Importing tokenskim registers each config's model type and each head with the Auto classes."""
    cls = model_class(family, backbone, head)
    fields = {k: v for k, v in tiny_config(backbone).to_dict().items() if k != "model_type"}
    config = transformers.AutoConfig.for_model(cls.config_class.model_type, **fields)
    assert type(config) is cls.config_class
    assert type(getattr(transformers, auto_class_name(head)).from_config(config)) is cls


@pytest.mark.parametrize("family", [f for f in FAMILIES if FAMILIES[f].exits])
def test_exit_head_stage_trains_only_the_exit_heads(family):
    """With the rest frozen (`freeze_for_exit_training`) the loss reaches the exit heads and nothing else, falls,
    and leaves every other parameter as it was."""
    model = FAMILIES[family].deciding_model("bert", **FAMILIES[family].exit_stage).train().freeze_for_exit_training()
    batch = mixed_batch(MIXED_LENGTHS, seed=3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    first = model(**batch).loss
    first.backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == n.startswith("exit_heads."), n
    opt.step()
    for _ in range(10):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    assert model(**batch).loss.item() < first.item()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) != n.startswith("exit_heads."), n


def moved_off_init(model):
    """Every floating parameter and buffer nudged, as training would leave them, so one that does not travel with
    the checkpoint (and comes back at its initial value) shows."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.add_(1e-3 * torch.randn(t.shape, generator=g))
    return model


ROUND_TRIP = """
    import json, torch, transformers
    from safetensors.torch import save_file
    work = {work!r}
    batch = {{k: torch.tensor(v) for k, v in json.load(open(work + "/batch.json")).items()}}
    m = transformers.{auto}.from_pretrained(work + "/model", trust_remote_code=True).eval()
    fields = lambda out: {{k: v.tolist() for k, v in out.items() if torch.is_tensor(v)}}
    with torch.no_grad():
        outputs = [fields(m(**batch))]
        setattr(m.config, {switch!r}, {value!r})
        outputs.append(fields(m(**batch)))
    setattr(m.config, {switch!r}, {before!r})
    save_file({{k: v.contiguous() for k, v in m.state_dict().items()}}, work + "/loaded.safetensors")
    classes = {{a: type(getattr(transformers, a).from_pretrained(work + "/model", trust_remote_code=True)).__name__
               for a in {autos!r}}}
    json.dump({{"outputs": outputs, "classes": classes, "config": m.config.to_dict()}}, open(work + "/got.json", "w"))
"""


@pytest.mark.parametrize("family", FAMILIES)
def test_remote_code_round_trip_without_tokenskim(family, tmp_path):
    """Saved as safetensors with remote code and an `auto_map` for every head, the model loads where tokenskim is
    not importable with the same weights, config, outputs and decisions, and honours its live config."""
    spec, saved = FAMILIES[family], tmp_path / "model"
    head = spec.heads[0]
    model = moved_off_init(deciding_model(family, "bert", head))
    model.save_pretrained(saved)
    autos = [auto_class_name(h) for h in spec.heads]
    assert set(json.loads((saved / "config.json").read_text())["auto_map"]) == {"AutoConfig", *autos}
    assert (saved / "model.safetensors").exists() and not list(saved.glob("*.bin"))
    assert (saved / f"{type(model).__module__.rsplit('.', 1)[-1]}.py").exists()
    batch = spec.inputs(MIXED_LENGTHS, "bert")
    (tmp_path / "batch.json").write_text(json.dumps({k: v.tolist() for k, v in batch.items()}))
    switch, value = spec.live_switch
    before = getattr(model.config, switch)
    with torch.no_grad():
        out = model(**batch)
        setattr(model.config, switch, value)
        want = [tensors(out), tensors(model(**batch))]
    setattr(model.config, switch, before)
    assert_decides(out, MIXED_LENGTHS, family, head)
    decisions = [k for k in ("kept_tokens", "ffn_tokens", "exit_layer") if k in want[0]]
    assert any(not torch.equal(want[0][k], want[1][k]) for k in decisions), "the live switch should change decisions"

    run_without_tokenskim(ROUND_TRIP.format(work=str(tmp_path), auto=auto_class_name(head), switch=switch, value=value,
                                            before=before, autos=autos))
    got = json.loads((tmp_path / "got.json").read_text())
    assert len(got["outputs"]) == len(want)
    for expected, actual in zip(want, got["outputs"]):
        assert actual.keys() == expected.keys()
        for field, tensor in expected.items():
            if tensor.is_floating_point():
                torch.testing.assert_close(torch.tensor(actual[field]), tensor, atol=1e-6, rtol=0, msg=field)
            else:
                assert actual[field] == tensor.tolist(), field
    loaded = load_file(tmp_path / "loaded.safetensors")
    assert loaded.keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded[name], tensor), name
    ours = json.loads(model.config.to_json_string(use_diff=False))
    assert {**got["config"], "_name_or_path": None} == {**ours, "_name_or_path": None}  # the folder it came from
    assert got["classes"] == {auto_class_name(h): model_class(family, "bert", h).__name__ for h in spec.heads}
