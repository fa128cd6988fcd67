"""Block-Skim on the shared engine: whole blocks skipped, block labels and loss, question protection, skipped
positions never predicted, the attention-block hook of both execution paths. The invariants every family keeps
(exactness with skimming off, batch invariance, rows processed, Hub round trip) are in test_invariants.py, which
builds its models and QA batches with `skimming_model` and `qa_batch` from here."""

import tempfile

import pytest
import torch
from conftest import MIXED_LENGTHS, PAD, mixed_batch, tiny_config
from transformers import BertForQuestionAnswering

from tokenskim.modeling import (
    BlockSkimBertConfig,
    BlockSkimBertForQuestionAnswering,
    BlockSkimForQA,
    BlockSkimRobertaConfig,
    BlockSkimRobertaForQuestionAnswering,
)
from tokenskim.modeling.block_skim import BlockRecord, block_labels, question_lengths
from tokenskim.modeling.attention import (
    diagonal_blocks,
    padded_attention_blocks,
    varlen_attention_with_blocks,
)

QA = {"bert": BlockSkimBertForQuestionAnswering, "roberta": BlockSkimRobertaForQuestionAnswering}
SEP = 2  # RoBERTa's </s>
QUESTION = 5  # tokens of the question segment (CLS + question + separators) in `qa_batch`
LOW = torch.finfo(torch.float32).min


def qa_batch(lengths, backbone="bert", seq=None, seed=0):
    """A padded QA batch: the first QUESTION tokens of each row are the question segment, marked by
    token_type_ids (BERT) or by `</s></s>` at positions 3-4 (RoBERTa)."""
    batch = mixed_batch(lengths, seq=seq, pad_id=PAD[backbone], seed=seed)
    real = batch["attention_mask"].bool()
    if backbone == "roberta":
        ids = batch["input_ids"]
        ids[ids == SEP] = 7  # no stray separators inside the text
        for i, n in enumerate(lengths):
            ids[i, 3 : min(QUESTION, n)] = SEP
    else:
        types = torch.zeros_like(batch["input_ids"])
        types[:, QUESTION:] = 1
        batch["token_type_ids"] = types * real
    return batch


def config(backbone="bert", **fields):
    base = tiny_config(backbone, num_labels=2).to_dict()
    cls = BlockSkimRobertaConfig if backbone == "roberta" else BlockSkimBertConfig
    return cls(**{**base, "block_size": 4, "skim_layers": [0, 1], **fields})


def skimming_model(backbone="bert", tau=None, **fields):
    """A random model whose CNNs give varied P(keep), so some blocks go and some stay: tau defaults to
    the median P(keep) of the first skim layer on a reference batch."""
    model = QA[backbone](config(backbone, skim_threshold=0.0, **fields)).eval()
    with torch.no_grad():
        for predictor in model.skim_model.selector.predictors.values():
            for conv in (predictor.conv1, predictor.conv2):
                torch.nn.init.normal_(conv.weight, std=1.0)
            torch.nn.init.normal_(predictor.classifier.weight, std=0.5)
        if tau is None:
            records = model.skim_model(**qa_batch(MIXED_LENGTHS, backbone, seed=5)).records
            tau = torch.softmax(records[0].logits, -1)[:, 1].median().item()
    model.config.skim_threshold = tau
    return model


def test_alias_and_loading_reports_only_new_modules():
    assert BlockSkimForQA is BlockSkimBertForQuestionAnswering
    with tempfile.TemporaryDirectory() as d:
        BertForQuestionAnswering(tiny_config(num_labels=2)).save_pretrained(d)
        _, info = BlockSkimForQA.from_pretrained(d, block_size=4, output_loading_info=True)
    assert info["missing_keys"] and all(k.startswith("bert.selector.predictors.") for k in info["missing_keys"])
    assert not info["unexpected_keys"]


@pytest.mark.parametrize("backbone", ["bert", "roberta"])
def test_skips_whole_blocks_after_layer_0_and_keeps_more_than_the_question(backbone):
    """The random model of test_invariants skips context blocks but not all of them; the counts are the rows
    processed (test_invariants)."""
    model = skimming_model(backbone)
    with torch.no_grad():
        out = model(**qa_batch(MIXED_LENGTHS, backbone, seq=40))
    assert out.ffn_tokens[:, -1].sum() > sum(min(n, QUESTION) for n in MIXED_LENGTHS), "it should keep some blocks"
    assert out.ffn_tokens[:, 0].sum() < out.kept_tokens[:, 0].sum()  # blocks leave after layer 0's attention
    # drops are whole blocks (or a sequence's whole last block): kept counts stay block-aligned
    lengths = torch.tensor(MIXED_LENGTHS)
    dropped = lengths - out.ffn_tokens[:, -1]
    partial = lengths % 4
    assert torch.all((dropped % 4 == 0) | (dropped % 4 == partial))


def test_training_never_skims_and_gradient_reaches_cnn():
    model = skimming_model().train()
    batch = qa_batch([12, 8, 5, 10], seed=1)
    out = model(**batch, start_positions=torch.tensor([6, 9, 0, 7]), end_positions=torch.tensor([8, 11, 0, 7]))
    assert out.kept_tokens.tolist() == out.ffn_tokens.tolist() == [[n] * 3 for n in (12, 8, 5, 10)]
    assert torch.isfinite(out.start_logits).all()
    assert out.skim_loss is not None and out.skim_loss.item() > 0
    # the block loss also trains the encoder's attention (multi-task, as in the paper)
    query = model.bert.encoder.layer[0].attention.self.query.weight
    (grad,) = torch.autograd.grad(out.skim_loss, query, retain_graph=True)
    assert grad.abs().sum() > 0
    out.loss.backward()
    for predictor in model.bert.selector.predictors.values():
        for p in predictor.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0


def test_block_labels_and_loss_ignore_padding():
    model = skimming_model().train()
    lengths = [13, 7, 10]
    start, end = torch.tensor([12, 5, 0]), torch.tensor([12, 6, 0])  # last token of row 0 (a partial block)
    tight, padded = qa_batch(lengths), qa_batch(lengths, seq=40)
    loss_tight = model(**tight, start_positions=start, end_positions=end).skim_loss
    records = model.bert(**tight).records  # what the QA head reads its block loss from
    assert [r.layer for r in records] == [0, 1]
    # blocks of real tokens only: ceil(13/4) + ceil(7/4) + ceil(10/4) per skim layer
    assert records[0].length.tolist() == [4, 4, 4, 1, 4, 3, 4, 4, 2]
    labels = block_labels(records[0], start, end).tolist()
    assert labels == [0, 0, 0, 1, 0, 1, 0, 0, 0]  # row 0 block 3 (position 12); row 1 block 1 (5-6); row 2 none
    loss_padded = model(**padded, start_positions=start, end_positions=end).skim_loss
    torch.testing.assert_close(loss_padded, loss_tight)
    assert 0 < loss_tight.item() < 10


def test_block_labels_one_token_answers_and_spans():
    record = BlockRecord(
        layer=0, logits=torch.zeros(4, 2), sequence=torch.tensor([0, 0, 0, 1]),
        start=torch.tensor([0, 32, 64, 0]), length=torch.tensor([32, 32, 10, 20]),
    )
    # a one-token answer (position 40) marks its block; the reference's ">= 2 tokens" rule would not
    assert block_labels(record, torch.tensor([40, 0]), torch.tensor([40, 0])).tolist() == [0, 1, 0, 0]
    # a span across a block edge marks both blocks; position 0 (CLS) means no answer
    assert block_labels(record, torch.tensor([30, 0]), torch.tensor([33, 0])).tolist() == [1, 1, 0, 0]


def test_question_and_cls_never_skipped_and_skipped_never_predicted():
    model = skimming_model(tau=1.01)  # P(keep) < tau everywhere: only protected blocks stay
    batch = qa_batch(MIXED_LENGTHS, seq=36)
    with torch.no_grad():
        out = model(**batch)
    real = batch["attention_mask"].bool()
    lengths = torch.tensor(MIXED_LENGTHS)
    protected = torch.clamp(lengths, max=8)  # question tokens 0-4 sit in blocks 0-1 of size 4
    assert out.ffn_tokens[:, 0].tolist() == protected.tolist()
    positions = torch.arange(36)
    kept = positions[None] < protected[:, None]
    skipped = real & ~kept
    assert torch.all(out.start_logits[skipped] == LOW) and torch.all(out.end_logits[skipped] == LOW)
    assert torch.all(out.start_logits[kept] > LOW) and torch.all(out.end_logits[kept] > LOW)
    for logits in (out.start_logits, out.end_logits):  # the best real position is never a skipped one
        assert torch.all(kept.gather(1, logits.masked_fill(~real, float("-inf")).argmax(1, keepdim=True)))
    # with a threshold of 0 nothing is skipped and no logit is masked
    model.config.skim_threshold = 0.0
    with torch.no_grad():
        out = model(**batch)
    assert out.ffn_tokens[:, -1].tolist() == MIXED_LENGTHS
    assert torch.all(out.start_logits[real] > LOW)


def test_skipped_positions_are_exactly_the_dropped_tokens():
    model = skimming_model()
    batch = qa_batch(MIXED_LENGTHS)
    with torch.no_grad():
        out = model(**batch)
    masked = (out.start_logits == LOW).sum(1)
    assert masked.tolist() == (torch.tensor(MIXED_LENGTHS) - out.ffn_tokens[:, -1]).tolist()
    assert masked.sum() > 0


@pytest.mark.parametrize("backbone", ["bert", "roberta"])
def test_question_lengths(backbone):
    batch = qa_batch([12, 4, 9], backbone)
    real = batch["attention_mask"].bool()
    got = question_lengths(batch["input_ids"], batch.get("token_type_ids"), real, config(backbone))
    assert got.tolist() == [5, 4, 5]
    # no second segment: the whole row is question, so nothing is skipped
    single = torch.tensor([[3, 9, 9, 9]])
    assert question_lengths(single, None, torch.ones(1, 4, dtype=torch.bool), config("bert")).tolist() == [4]


def test_packed_blocks_equal_padded_blocks_with_drops():
    """The hook's two implementations tile the same blocks: packed rows after a drop (inference) and a
    padded batch whose dropped tokens are masked (training path)."""
    torch.manual_seed(1)
    lengths, size, heads = [11, 6, 9], 4, 2
    real = torch.arange(12)[None] < torch.tensor(lengths)[:, None]
    kept = real.clone()
    kept[0, 4:8] = False  # row 0 drops its second block
    kept[2, 8:] = False  # row 2 drops its short last block
    scores = torch.randn(3, heads, 12, 12).masked_fill(~kept[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, -1)
    padded = padded_attention_blocks(probs, real, kept, size)
    # packed: the kept rows of each sequence, with attention over kept keys only
    q_rows = [probs[b][:, kept[b]][:, :, kept[b]] for b in range(3)]
    want = torch.cat([diagonal_blocks(p, size) for p in q_rows])
    torch.testing.assert_close(padded.probs, want)
    assert padded.start.tolist() == [0, 8, 0, 4, 0, 4]
    assert padded.length.tolist() == [4, 3, 4, 2, 4, 4]
    assert padded.sequence.tolist() == [0, 0, 1, 1, 2, 2]
    assert padded.token_block[0, :11].tolist() == [0] * 4 + [0] * 4 + [1] * 3  # dropped tokens: ignored
    # the packed implementation on the same kept rows
    total = int(kept.sum())
    q = torch.randn(total, heads, 8)
    ctx, packed = varlen_attention_with_blocks(
        q, q, q, kept.sum(1).tolist(), size, (real.long().cumsum(1) - 1)[kept], torch.arange(3)
    )
    assert packed.start.tolist() == padded.start.tolist() and packed.length.tolist() == padded.length.tolist()
    assert packed.token_block.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5]


def test_packed_inference_equals_masked_path_with_hard_decisions():
    """Both execution paths give the same decisions and logits when the training path is fed the hard
    decisions (BatchNorm in eval mode)."""
    model = skimming_model()
    batch = qa_batch([20, 7, 13, 16])
    with torch.no_grad():
        packed = model(**batch)
        selector = model.bert.selector
        after = selector.after_attention
        selector.after_attention = lambda i, blocks, hard, tokens=None: after(i, blocks, hard=True)
        model.train()
        selector.predictors.eval()
        masked = model(**batch)
    assert packed.ffn_tokens.tolist() == masked.ffn_tokens.tolist()
    assert packed.ffn_tokens[:, -1].sum() < sum([20, 7, 13, 16])
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(masked.start_logits[real], packed.start_logits[real], atol=1e-5, rtol=0)


def test_config_checks():
    with pytest.raises(ValueError, match="skim_layers"):
        BlockSkimBertForQuestionAnswering(config(skim_layers=[5]))
    with pytest.raises(ValueError, match="block_size"):
        BlockSkimBertForQuestionAnswering(config(block_size=2))
    default = BlockSkimBertForQuestionAnswering(config(skim_layers=None))
    assert sorted(default.bert.selector.predictors) == ["0", "1"]  # every layer but the last
    selector = default.bert.selector
    per_block = selector.predictors["0"].macs_per_block()
    assert per_block == 4 * 4 * 9 * (16 + 4) + 2 * 4 * 1 * 1  # heads 4, block 4: two convs and Linear(4, 2)
    kept = torch.tensor([[9, 4, 4], [3, 3, 1]])  # layers 0 and 1 score ceil(kept / 4) blocks
    assert selector.macs(kept, torch.tensor([9, 3])).tolist() == [(3 + 1) * per_block, (1 + 1) * per_block]
    default.config.skim_enabled = False
    assert selector.macs(kept, torch.tensor([9, 3])).tolist() == [0, 0]
