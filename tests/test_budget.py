"""Budget-targeted skimming learns *which* tokens matter: a synthetic task whose label is carried by two
marked tokens among random fillers. Trained through `SkimTrainer` with a keep target of 0.3, a model must
answer (near) perfectly, keep the marked tokens through every layer (95% of them at least; each example has
two), and land within 0.05 of the target. A model
that skims everything (or the wrong tokens) fails the same checks, which the last test shows."""

import datasets
import pytest
import torch
from transformers import TrainingArguments

from tokenskim.modeling import TranskimmerBertConfig, TranskimmerBertForSequenceClassification
from tokenskim.trainers.trainer import SkimTrainer

SEQ, LAYERS, TARGET = 16, 2, 0.3
CLS, SEP, MARKS, FILLERS = 1, 2, (3, 4), (5, 40)


def marked_task(n: int, seed: int):
    """input_ids `[n, SEQ]` (CLS, fillers, SEP) with the class's marker at two random positions; labels `[n]`."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(*FILLERS, (n, SEQ), generator=g)
    ids[:, 0], ids[:, -1] = CLS, SEP
    labels = torch.randint(0, 2, (n,), generator=g)
    for i in range(n):
        ids[i, torch.randperm(SEQ - 2, generator=g)[:2] + 1] = MARKS[int(labels[i])]
    return ids, labels


def train_to_budget(tmp_path, steps=300):
    torch.manual_seed(0)
    config = TranskimmerBertConfig(
        vocab_size=FILLERS[1], hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32, num_labels=2, pad_token_id=0,
        target_keep_ratio=TARGET, skim_coefficient=2.0, min_kept_tokens=1, skim_bias_init=2.0, gumbel_noise=False,
    )
    model = TranskimmerBertForSequenceClassification(config)
    ids, labels = marked_task(steps * 32, seed=0)
    train = datasets.Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(), "labels": labels.tolist()}
    )
    args = TrainingArguments(
        str(tmp_path), per_device_train_batch_size=32, learning_rate=3e-3, num_train_epochs=1, report_to="none",
        save_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True, seed=0,
    )
    SkimTrainer(model=model, args=args, train_dataset=train, skim_warmup_steps=20).train()
    return model.eval()


def check(model, n=128):
    """Accuracy, kept-token ratio, and the shares of marked tokens and of fillers that went through the first layer
    (where their information can reach CLS). Marks: the larger share of the two classes' markers. A model may drop
    one class's markers and read that class from their absence (a valid solution this task allows), so only the
    other class's markers must stay."""
    ids, labels = marked_task(n, seed=1)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    accuracy = float((out.logits.argmax(-1) == labels).float().mean())
    ratio = float(out.kept_tokens.sum()) / (ids.numel() * LAYERS)
    through_first = out.token_ffn_layers >= 1
    marks_kept = max(float(through_first[ids == mark].float().mean()) for mark in MARKS)
    fillers_kept = float(through_first[ids >= FILLERS[0]].float().mean())
    return accuracy, ratio, marks_kept, fillers_kept


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_to_budget(tmp_path_factory.mktemp("budget"))


def test_budget_training_keeps_the_tokens_that_carry_the_label(trained):
    accuracy, ratio, marks_kept, fillers_kept = check(trained)
    assert accuracy >= 0.98
    assert abs(ratio - TARGET) <= 0.05, ratio
    assert marks_kept >= 0.95, marks_kept  # a class's markers are kept ...
    assert fillers_kept <= 0.5, fillers_kept  # ... and most fillers are not


def test_a_model_that_skims_everything_fails_the_same_checks(trained):
    trained.config.keep_threshold = 1.0  # nothing passes: only the floor (CLS) is left
    try:
        accuracy, ratio, marks_kept, fillers_kept = check(trained)
    finally:
        trained.config.keep_threshold = 0.5
    assert accuracy < 0.75 and marks_kept == 0.0 and abs(ratio - TARGET) > 0.05


def test_budget_loss_is_per_sequence_and_never_asks_below_the_floor():
    from tokenskim.modeling.selector import budget_loss

    real = torch.tensor([[1] * 10, [1] * 3 + [0] * 7], dtype=torch.bool)
    keep_all = [real.float()] * 2
    # 10 tokens, floor 4: its target is max(0.3, 4/10) = 0.4, so |1 - 0.4| = 0.6; 3 tokens: target 1, met: 0
    torch.testing.assert_close(budget_loss(keep_all, real, 0.3, min_kept=4), torch.tensor(0.3))
    half = [torch.tensor([[1.0] * 5 + [0.0] * 5, [1, 1, 1] + [0] * 7])] * 2
    torch.testing.assert_close(budget_loss(half, real, 0.3, min_kept=0), torch.tensor((0.2 + 0.7) / 2))


def test_budget_loss_counts_what_inference_keeps_with_the_soft_gradient():
    """A soft mask of 0.6 counts as a kept token and 0.4 as a dropped one (inference's decisions), while the
    gradient is the soft masks' own (straight-through)."""
    from tokenskim.modeling.selector import budget_loss

    real = torch.ones(1, 4, dtype=torch.bool)
    soft = torch.tensor([[1.0, 0.6, 0.6, 0.4]], requires_grad=True)
    loss = budget_loss([soft], real, 0.5)
    torch.testing.assert_close(loss, torch.tensor(0.25))  # 3 of 4 kept at inference: |0.75 - 0.5|
    loss.backward()
    torch.testing.assert_close(soft.grad, torch.full((1, 4), 0.25))  # d|r - t|/dm = sign / n, for every token


def test_masked_attention_gradient_is_bounded_when_kept_keys_hold_little_attention():
    """The training path's renormalisation keeps its exact value, and its gradient with respect to the keep mask
    is exact while the kept keys hold at least the floor of a query's attention and bounded below it (the exact
    one grows without bound: long inputs collapsed on it)."""
    from tokenskim.modeling.engine import KEPT_MASS_FLOOR, renormalise_kept

    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(2, 3, 5, 40) * 4, dim=-1)

    def grads(kept, floor):
        m = torch.zeros(40)
        m[:kept] = 1.0
        m.requires_grad_(True)
        out = renormalise_kept(probs * m, floor)
        (out * torch.arange(40.0)).sum().backward()
        return out.detach(), m.grad

    exact_all, exact_grad_all = grads(40, 1e-12)
    bounded_all, bounded_grad_all = grads(40, KEPT_MASS_FLOOR)  # every key kept: mass 1, above the floor
    assert torch.equal(bounded_all, exact_all) and torch.allclose(bounded_grad_all, exact_grad_all)

    exact_few, exact_grad_few = grads(2, 1e-12)
    bounded_few, bounded_grad_few = grads(2, KEPT_MASS_FLOOR)
    assert torch.allclose(bounded_few, exact_few)  # the forward value never changes
    rows = probs.shape[0] * probs.shape[1] * probs.shape[2]
    bound = rows * 40 / KEPT_MASS_FLOOR  # |p_j (c_j - out)| / floor <= 40 / floor per row
    assert exact_grad_few.abs().max() > 10 * bound  # what the exact gradient does with 2 of 40 keys kept
    assert bounded_grad_few.abs().max() <= bound
