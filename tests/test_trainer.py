"""SkimTrainer: training statistics, evaluation bookkeeping (kept-token and FLOPs ratios), loss scale under
gradient accumulation, and the selector's own learning rate. Tiny random BERTs on the bundled SST-2 sample.

`save_tiny_checkpoint` and `sst2_sample` are shared with test_cli.py and test_multiprocess.py.
"""

import collections
import csv
from pathlib import Path

import pytest
import torch
from transformers import BertModel, BertConfig, BertForSequenceClassification, BertTokenizerFast, TrainingArguments

from tokenskim.modeling import TranskimmerBertForSequenceClassification
from tokenskim.modeling.flops import dense_flops, encoder_flops, flops_ratio, kept_token_ratio
from tokenskim.trainers import data, metrics
from tokenskim.trainers.trainer import (
    SkimTrainer, distillation_loss, move_to_own_groups, selector_parameter_names, skim_metrics,
)

BUNDLED = Path(data.__file__).resolve().parent / "data"


def save_tiny_checkpoint(path, layers=2, hidden=32) -> str:
    """A random stock BERT with a word-level vocabulary from the bundled SST-2 dev set (offline, small)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    counts = collections.Counter()
    with open(BUNDLED / "sst2_dev.tsv", newline="") as f:
        for text, _ in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]:
            counts.update(text.split())
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [w for w, _ in counts.most_common(300)]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=128, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(path)
    return str(path)


def sst2_sample(train_rows=64, eval_rows=40):
    """(raw DatasetDict, TaskSpec) from the bundled SST-2 files, first rows (deterministic)."""
    raw, spec = data.load_task("sst2", train_file=BUNDLED / "sst2_train_sample.tsv", validation_file=BUNDLED / "sst2_dev.tsv")
    raw["train"] = raw["train"].select(range(train_rows))
    raw["validation"] = raw["validation"].select(range(eval_rows))
    return raw, spec


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def sample(tiny_dir):
    tokenizer = BertTokenizerFast.from_pretrained(tiny_dir)
    raw, spec = sst2_sample()
    return tokenizer, data.tokenize(raw, tokenizer, spec, max_length=48), spec


def make_trainer(model, tokenizer, tokenized, spec, tmp_path, **args):
    defaults = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=8, per_device_eval_batch_size=16, learning_rate=1e-3,
        max_steps=3, logging_steps=1, report_to=[], save_strategy="no", train_sampling_strategy="sequential",
        disable_tqdm=True, use_cpu=True, seed=0,
    )
    own = {k: args.pop(k) for k in ("selector_learning_rate", "teacher", "distill_alpha", "distill_temperature")
           if k in args}
    return SkimTrainer(
        model=model, args=TrainingArguments(**{**defaults, **args}), train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"], processing_class=tokenizer, data_collator=data.collator(tokenizer),
        compute_metrics=metrics.build_compute_metrics(spec.name), **own,
    )


def transkimmer(tiny_dir, **config):
    """A Transkimmer from the tiny checkpoint. skim_bias_init=20 makes training decisions deterministic
    (every token kept, Gumbel noise cannot flip a 40-logit gap); a negative one skims almost everything."""
    torch.manual_seed(0)
    return TranskimmerBertForSequenceClassification.from_pretrained(tiny_dir, num_labels=2, **config)


def train_losses(trainer):
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


# ----------------------------------------------------------------------------------------------------
# Evaluation bookkeeping


def manual_counts(model, tokenizer, dataset):
    """Token counts of the whole set, straight from the model in eval mode, one batch."""
    batch = data.collator(tokenizer)([dataset[i] for i in range(dataset.num_rows)])
    batch.pop("labels")
    model.eval()
    with torch.no_grad():
        out = model(**batch)
    return batch["attention_mask"].sum(1), out.kept_tokens, out.ffn_tokens


def test_eval_metrics_match_the_model_counts_when_tokens_are_skimmed(tiny_dir, sample, tmp_path):
    tokenizer, tokenized, spec = sample
    model = transkimmer(tiny_dir, skim_bias_init=-5.0)  # predictors start by skipping nearly every token
    results = make_trainer(model, tokenizer, tokenized, spec, tmp_path).evaluate()

    lengths, kept, ffn = manual_counts(model, tokenizer, tokenized["validation"])
    d = model.config.hidden_size
    # Transkimmer's predictors on the tokens they scored: every real token before layer 0, then what each layer kept
    predictors = (d * d + 2 * d) * (lengths.double() + kept[:, :-1].double().sum(-1))
    assert results["eval_kept_token_ratio"] == pytest.approx(kept_token_ratio(kept, lengths))
    assert results["eval_flops_ratio"] == pytest.approx(flops_ratio(dense_flops(lengths, model.config), encoder_flops(kept, ffn, model.config) + predictors))
    assert results["eval_kept_token_ratio"] < 0.5  # something was actually skimmed
    assert results["eval_flops_ratio"] > 2.0
    for layer in range(model.config.num_hidden_layers):
        expected = float(kept[:, layer].sum() / lengths.sum())
        assert results[f"eval_keep_rate_layer_{layer}"] == pytest.approx(expected)
    assert "eval_accuracy" in results


def test_eval_batch_size_does_not_change_the_ratios(tiny_dir, sample, tmp_path):
    tokenizer, tokenized, spec = sample
    model = transkimmer(tiny_dir, skim_bias_init=-1.0)
    a = make_trainer(model, tokenizer, tokenized, spec, tmp_path, per_device_eval_batch_size=3).evaluate()
    b = make_trainer(model, tokenizer, tokenized, spec, tmp_path, per_device_eval_batch_size=40).evaluate()
    for key in ("eval_kept_token_ratio", "eval_flops_ratio", "eval_accuracy"):
        assert a[key] == pytest.approx(b[key], rel=1e-6)


def test_stock_dense_model_reports_ratios_of_one(tiny_dir, sample, tmp_path):
    tokenizer, tokenized, spec = sample
    model = BertForSequenceClassification.from_pretrained(tiny_dir, num_labels=2)
    results = make_trainer(model, tokenizer, tokenized, spec, tmp_path).evaluate()
    assert results["eval_kept_token_ratio"] == 1.0
    assert results["eval_flops_ratio"] == 1.0


def test_skim_metrics_count_real_tokens_only():
    config = BertConfig(hidden_size=8, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)
    lengths = torch.tensor([4, 2])
    kept = torch.tensor([[4, 2], [2, 1]])
    out = skim_metrics(BertModel(config), lengths, kept, kept)  # a stock model: its layers are its whole cost
    assert out["kept_token_ratio"] == pytest.approx((4 + 2 + 2 + 1) / (6 * 2))
    assert out["keep_rate_layer_0"] == 1.0 and out["keep_rate_layer_1"] == pytest.approx(0.5)
    layer = lambda n: 2 * 8 * n * n + 4 * 64 * n + 2 * 8 * 32 * n  # noqa: E731
    assert out["flops_ratio"] == pytest.approx(2 * (layer(4) + layer(2)) / (layer(4) + layer(2) + layer(2) + layer(1)))


# ----------------------------------------------------------------------------------------------------
# Training statistics and loss scale


def test_training_logs_kept_ratio_and_layer_keep_rates(tiny_dir, sample, tmp_path):
    tokenizer, tokenized, spec = sample
    trainer = make_trainer(transkimmer(tiny_dir, skim_bias_init=20.0), tokenizer, tokenized, spec, tmp_path)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3
    for h in logs:
        assert h["kept_token_ratio"] == pytest.approx(1.0)  # bias 20: nothing skimmed in training
        assert h["keep_rate_layer_0"] == pytest.approx(1.0) and h["keep_rate_layer_1"] == pytest.approx(1.0)
        assert h["skim_loss"] == pytest.approx(1.0)


def test_training_statistics_arithmetic(tiny_dir, sample, tmp_path):
    """Two micro-batches between logs: the ratio is pooled over real tokens, not averaged per batch."""
    tokenizer, tokenized, spec = sample
    trainer = make_trainer(transkimmer(tiny_dir), tokenizer, tokenized, spec, tmp_path)
    mask_a = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])  # 6 real tokens
    mask_b = torch.tensor([[1, 1, 0, 0]])  # 2 real tokens
    trainer._record_train({"kept_tokens": torch.tensor([[4, 1], [2, 2]]), "skim_loss": torch.tensor(0.5)}, mask_a,
                          torch.tensor(0.75))
    trainer._record_train({"kept_tokens": torch.tensor([[2, 0]]), "skim_loss": torch.tensor(0.25)}, mask_b,
                          torch.tensor(0.25))
    stats = trainer._train_statistics()
    assert stats["kept_token_ratio"] == pytest.approx((4 + 1 + 2 + 2 + 2 + 0) / (8 * 2))
    assert stats["keep_rate_layer_0"] == pytest.approx(8 / 8)
    assert stats["keep_rate_layer_1"] == pytest.approx(3 / 8)
    assert stats["skim_loss"] == pytest.approx(0.375)
    assert stats["task_loss"] == pytest.approx(0.5)
    assert trainer._train_sums is None  # reset after each log


@pytest.mark.parametrize("method", ["dense", "transkimmer"])
def test_gradient_accumulation_gives_the_same_losses_as_one_big_batch(method, tiny_dir, sample, tmp_path):
    """8 rows in one batch == 2 x 4 rows accumulated: same logged losses, same weights. The stock Trainer
    fails this for stock classifiers (it takes their **kwargs as a sign of token-count normalisation)."""
    tokenizer, tokenized, spec = sample

    def model():
        if method == "dense":
            torch.manual_seed(0)
            return BertForSequenceClassification.from_pretrained(tiny_dir, num_labels=2)
        return transkimmer(tiny_dir, skim_bias_init=20.0)

    one = make_trainer(model(), tokenizer, tokenized, spec, tmp_path / "a", per_device_train_batch_size=8)
    acc = make_trainer(model(), tokenizer, tokenized, spec, tmp_path / "b", per_device_train_batch_size=4,
                       gradient_accumulation_steps=2)
    losses_one, losses_acc = train_losses(one), train_losses(acc)
    assert len(losses_one) == 3
    assert losses_acc == pytest.approx(losses_one, rel=1e-4)
    for (name, p), q in zip(one.model.named_parameters(), acc.model.parameters()):
        assert torch.allclose(p, q, atol=1e-5), name


def test_transkimmer_training_loss_includes_the_weighted_skim_loss(tiny_dir, sample, tmp_path):
    tokenizer, tokenized, spec = sample
    plain = train_losses(make_trainer(transkimmer(tiny_dir, skim_bias_init=20.0, skim_coefficient=0.0),
                                      tokenizer, tokenized, spec, tmp_path / "a", max_steps=1))
    weighted = train_losses(make_trainer(transkimmer(tiny_dir, skim_bias_init=20.0, skim_coefficient=0.7),
                                         tokenizer, tokenized, spec, tmp_path / "b", max_steps=1))
    assert weighted[0] == pytest.approx(plain[0] + 0.7 * 1.0, rel=1e-4)  # every token kept: skim loss 1


# ----------------------------------------------------------------------------------------------------
# Selector learning rate


def test_selector_gets_its_own_learning_rate(tiny_dir, sample, tmp_path):
    tokenizer, tokenized, spec = sample
    model = transkimmer(tiny_dir)
    trainer = make_trainer(model, tokenizer, tokenized, spec, tmp_path, learning_rate=1e-4, weight_decay=0.01,
                           selector_learning_rate=3e-2, max_steps=1)
    trainer.create_optimizer()
    names = selector_parameter_names(model)
    assert names and all(n.startswith("bert.selector.") for n in names)
    by_id = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for group in trainer.optimizer.param_groups:
        group_names = {by_id[id(p)] for p in group["params"]}
        seen |= group_names
        if group_names & names:
            assert group_names <= names and group["lr"] == 3e-2
        elif group_names:
            assert group["lr"] == 1e-4
    assert seen == {n for n, p in model.named_parameters() if p.requires_grad}  # nothing lost or doubled
    decays = {g["weight_decay"] for g in trainer.optimizer.param_groups if {by_id[id(p)] for p in g["params"]} & names}
    assert decays == {0.0, 0.01}  # the decay / no-decay split survives

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    moved = {n: float((p - before[n]).abs().max()) for n, p in model.named_parameters()}
    assert max(moved[n] for n in names if n.endswith("4.bias")) > 0  # selector trained


def test_selector_learning_rate_needs_a_selector(tiny_dir, sample, tmp_path):
    tokenizer, tokenized, spec = sample
    dense = BertForSequenceClassification.from_pretrained(tiny_dir, num_labels=2)
    with pytest.raises(ValueError, match="no token selector"):
        make_trainer(dense, tokenizer, tokenized, spec, tmp_path, selector_learning_rate=1e-3)


def test_move_to_own_groups_keeps_group_settings():
    a, b, c = (torch.nn.Parameter(torch.zeros(1)) for _ in range(3))
    opt = torch.optim.AdamW([{"params": [a, b], "weight_decay": 0.1}, {"params": [c], "weight_decay": 0.0}], lr=1.0)
    move_to_own_groups(opt, [b, c], lr=5.0)
    groups = [(len(g["params"]), g["lr"], g["weight_decay"]) for g in opt.param_groups]
    assert groups == [(1, 1.0, 0.1), (1, 5.0, 0.1), (1, 5.0, 0.0)]


def test_skim_warmup_ramps_the_auxiliary_weight(tiny_dir, sample, tmp_path):
    """The loss the optimizer sees is task + ramp * lambda * skim, the ramp rising linearly to 1 over
    `skim_warmup_steps`; the model's own loss (ramp 1) is unchanged."""
    tokenizer, tokenized, spec = sample
    model = transkimmer(tiny_dir, skim_bias_init=20.0, skim_coefficient=0.5)
    trainer = make_trainer(model, tokenizer, tokenized, spec, tmp_path)
    trainer.skim_warmup_steps = 4
    batch = data.collator(tokenizer)([tokenized["train"][i] for i in range(4)])
    model.train()
    for step, ramp in ((0, 0.25), (2, 0.75), (3, 1.0), (10, 1.0)):
        trainer.state.global_step = step
        loss, out = trainer.compute_loss(model, dict(batch), return_outputs=True)
        task = out.loss - 0.5 * out.skim_loss
        torch.testing.assert_close(loss, task + ramp * 0.5 * out.skim_loss)


# ----------------------------------------------------------------------------------------------------
# Distillation from a dense teacher


def kl(teacher, student):
    """KL(softmax(teacher) || softmax(student)) per row, written out."""
    p = teacher.softmax(-1)
    return (p * (p.log() - student.log_softmax(-1))).sum(-1)


def test_distillation_loss_against_its_formula():
    torch.manual_seed(0)
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(distillation_loss({"logits": s}, {"logits": t}), kl(t, s).mean())
    torch.testing.assert_close(distillation_loss({"logits": s}, {"logits": t}, temperature=2.0), 4 * kl(t / 2, s / 2).mean())
    assert float(distillation_loss({"logits": t}, {"logits": t})) < 1e-6
    # extractive QA: the mean over start and end; a position the student skipped (dtype minimum) stays finite
    ss, se, ts, te = torch.randn(4, 4, 10).unbind(0)
    ss[:, -2:] = torch.finfo(ss.dtype).min
    qa = distillation_loss({"start_logits": ss, "end_logits": se}, {"start_logits": ts, "end_logits": te})
    assert torch.isfinite(qa)
    torch.testing.assert_close(qa, (kl(ts, ss.clamp_min(-1e4)).mean() + kl(te, se).mean()) / 2)
    # regression: the squared error
    torch.testing.assert_close(distillation_loss({"logits": s[:, :1]}, {"logits": t[:, :1]}), ((s[:, 0] - t[:, 0]) ** 2).mean())


def perturbed_teacher(tiny_dir):
    torch.manual_seed(1)
    teacher = BertForSequenceClassification.from_pretrained(tiny_dir, num_labels=2)
    with torch.no_grad():
        teacher.classifier.weight.normal_(0, 1.0)
    return teacher


def test_training_with_a_teacher_mixes_task_and_distillation(tiny_dir, sample, tmp_path):
    """loss = (1 - alpha) * task + alpha * KL(teacher || student) + ramp * lambda * skim; task_loss logs the task's own."""
    tokenizer, tokenized, spec = sample
    model = transkimmer(tiny_dir, skim_bias_init=20.0, skim_coefficient=0.5)
    teacher = perturbed_teacher(tiny_dir)
    trainer = make_trainer(model, tokenizer, tokenized, spec, tmp_path, teacher=teacher, distill_alpha=0.3)
    batch = data.collator(tokenizer)([tokenized["train"][i] for i in range(6)])
    model.train()
    loss, out = trainer.compute_loss(model, dict(batch), return_outputs=True)
    task = out.loss - 0.5 * out.skim_loss
    with torch.no_grad():
        taught = teacher(**{k: v for k, v in batch.items() if k != "labels"}).logits
    expected = 0.7 * task + 0.3 * kl(taught, out.logits).mean() + 0.5 * out.skim_loss
    torch.testing.assert_close(loss, expected)
    assert not any(p.requires_grad for p in trainer.teacher.parameters())


def test_distillation_brings_the_student_to_the_teacher(tiny_dir, sample, tmp_path):
    """alpha 1: the student learns only the teacher's predictions; the logged distillation loss falls."""
    tokenizer, tokenized, spec = sample
    model = transkimmer(tiny_dir, skim_bias_init=20.0, skim_coefficient=0.0)
    trainer = make_trainer(model, tokenizer, tokenized, spec, tmp_path, teacher=perturbed_teacher(tiny_dir),
                           distill_alpha=1.0, max_steps=24, logging_steps=4)
    trainer.train()
    distill = [h["distill_loss"] for h in trainer.state.log_history if "distill_loss" in h]
    assert len(distill) == 6 and distill[-1] < 0.2 * distill[0], distill


def test_a_dense_student_can_distill_too(tiny_dir, sample, tmp_path):
    """A stock model has no kept_tokens; the training statistics count every token as kept."""
    tokenizer, tokenized, spec = sample
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(tiny_dir, num_labels=2)
    trainer = make_trainer(model, tokenizer, tokenized, spec, tmp_path, teacher=perturbed_teacher(tiny_dir))
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert all(h["kept_token_ratio"] == 1.0 and h["distill_loss"] > 0 for h in logs)
