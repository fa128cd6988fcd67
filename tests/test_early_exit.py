"""Early exit as a reusable part: exactness with exits off, batch invariance and physical removal with
rows exiting, the entropy and patience rules, tau changed at inference, self-distillation with a frozen
backbone, regression errors, FLOPs bookkeeping and the Hub round trip."""

import json
import math

import pytest
import torch
from conftest import MIXED_LENGTHS, PAD, load_as, mixed_batch, row, run_without_tokenskim, tiny_config
from transformers import BertForSequenceClassification, RobertaForSequenceClassification

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
STOCK = {"bert": BertForSequenceClassification, "roberta": RobertaForSequenceClassification}



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


@pytest.mark.parametrize("backbone", ["bert", "roberta"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_exits_off_matches_stock(backbone, mode):
    stock = STOCK[backbone](tiny_config(backbone)).eval()
    ours = load_as(SEQ_CLS[backbone], stock, exit_enabled=False)
    getattr(ours, mode)()
    batch = mixed_batch([12, 5, 1, 9], pad_id=PAD[backbone])
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, stock(**batch).logits, atol=1e-5, rtol=0)


def test_exits_on_but_never_taken_matches_stock():
    stock = BertForSequenceClassification(tiny_config()).eval()
    ours = load_as(EarlyExitBertForSequenceClassification, stock, exit_threshold=-1.0).eval()
    batch = mixed_batch(MIXED_LENGTHS)
    with torch.no_grad():
        out = ours(**batch)
    torch.testing.assert_close(out.logits, stock(**batch).logits, atol=1e-5, rtol=0)
    assert out.exit_layer.tolist() == [3] * 16


@pytest.mark.parametrize("backbone", ["bert", "roberta"])
@pytest.mark.parametrize("criterion", ["entropy", "patience"])
def test_batch_invariance_with_exits(backbone, criterion):
    # 5 layers: with patience 1 a row can exit after layer 2, 3 or 4, so rows leave at different layers
    layers = 5 if criterion == "patience" else 3
    model = exiting_model(backbone, layers=layers, exit_criterion=criterion, exit_patience=1)
    batch = mixed_batch(MIXED_LENGTHS, pad_id=PAD[backbone])
    with torch.no_grad():
        out = model(**batch)
        counts = exit_counts(out.exit_layer, layers)
        assert (counts[:-1] > 0).sum() >= 2 or criterion == "entropy", f"rows should exit at several layers: {counts}"
        assert counts[:-1].sum() > 0 and counts[-1] > 0, f"some rows should exit early and some not: {counts}"
        for i in range(len(MIXED_LENGTHS)):
            alone = model(**row(batch, i))
            torch.testing.assert_close(alone.logits[0], out.logits[i], atol=1e-5, rtol=0)
            assert alone.exit_layer[0] == out.exit_layer[i]
            assert torch.equal(alone.kept_tokens[0], out.kept_tokens[i])


def test_exited_rows_leave_the_batch():
    model = exiting_model()
    seen = []
    for layer in model.bert.encoder.layer:
        layer.attention.self.query.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    batch = mixed_batch(MIXED_LENGTHS, seq=40)
    with torch.no_grad():
        out = model(**batch)
    assert seen == out.kept_tokens.sum(0).tolist()
    lengths = torch.tensor(MIXED_LENGTHS)
    for layer in range(3):
        running = out.exit_layer > layer
        assert out.kept_tokens[:, layer].tolist() == torch.where(running, lengths, 0).tolist()
        assert out.ffn_tokens[:, layer].tolist() == torch.where(running, lengths, 0).tolist()
    assert seen[-1] < seen[0]


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


def test_self_distillation_trains_only_the_exit_heads():
    model = exiting_model().train().freeze_for_exit_training()
    batch = mixed_batch([12, 8, 5, 10], seed=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = model(**batch, labels=torch.tensor([0, 1, 2, 1]))  # labels are not used: teacher = final classifier
    states = layer_cls_states(model, batch)
    teacher = out.logits.detach()
    model.train()
    want = self_distillation_loss(model.exit_heads.all_logits(states[:-1]), teacher)
    torch.testing.assert_close(out.loss, want)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    first = out.loss.item()
    out.loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("exit_heads."))
    assert all(p.grad is not None for p in model.exit_heads.parameters())
    opt.step()
    for _ in range(10):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    assert model(**batch).loss.item() < first
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) != n.startswith("exit_heads."), n


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
    torch.testing.assert_close(model_macs(model, out.kept_tokens, out.ffn_tokens, out.exit_layer), ours + heads)
    model.config.exit_enabled = False  # no exit head evaluated
    torch.testing.assert_close(model_macs(model, out.kept_tokens, out.ffn_tokens, out.exit_layer), ours)


def test_remote_code_round_trip_without_tokenskim(tmp_path):
    model = exiting_model()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForSequenceClassification"}
    batch = mixed_batch(MIXED_LENGTHS)
    with torch.no_grad():
        want = model(**batch)
        model.config.exit_threshold = 0.9
        want_09 = model(**batch)
    assert 0 < (want.exit_layer < 3).sum() < 16
    code = f"""
        import torch
        from transformers import AutoModel, AutoModelForSequenceClassification
        ids = torch.tensor({batch['input_ids'].tolist()}); mask = torch.tensor({batch['attention_mask'].tolist()})
        m = AutoModelForSequenceClassification.from_pretrained("{tmp_path}", trust_remote_code=True).eval()
        with torch.no_grad():
            out = m(input_ids=ids, attention_mask=mask)
            print(out.logits.tolist()); print(out.exit_layer.tolist())
            m.config.exit_threshold = 0.9
            print(m(input_ids=ids, attention_mask=mask).exit_layer.tolist())
        print(type(AutoModel.from_pretrained("{tmp_path}", trust_remote_code=True)).__name__)
    """
    lines = run_without_tokenskim(code).strip().splitlines()
    torch.testing.assert_close(torch.tensor(eval(lines[0])), want.logits, atol=1e-6, rtol=0)
    assert eval(lines[1]) == want.exit_layer.tolist()
    assert eval(lines[2]) == want_09.exit_layer.tolist()
    assert lines[3] == "EarlyExitBertModel"
