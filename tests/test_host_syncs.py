"""Host reads of one inference forward, counted on CPU so CI holds the GPU budget without a GPU.

On CUDA every value the host reads from a tensor waits for the GPU to go idle. Counted here: the Python-level
reads (`tolist`, `item`, `bool`, `int`, `float`) and the operators whose output size depends on values
(`nonzero`, boolean-mask indexing, `masked_select`, `repeat_interleave` without `output_size`, `bincount`,
`unique`), through a `TorchDispatchMode`. Budgets (see `SkimEncoder.forward_packed`): one read to pack the
batch, plus one per decision point (a layer where a selector scores tokens, an exit check); with every
decision off, one per forward, input checks included.
"""

import contextlib

import pytest
import torch
from conftest import mixed_batch, tiny_config
from test_sttabt import skimming_model as sttabt_model
from torch.utils._python_dispatch import TorchDispatchMode

from tokenskim.modeling import (
    BlockSkimBertConfig,
    BlockSkimBertForQuestionAnswering,
    EarlyExitBertConfig,
    EarlyExitBertForSequenceClassification,
    LTPBertConfig,
    LTPBertForSequenceClassification,
    MagicPyramidBertConfig,
    MagicPyramidBertForSequenceClassification,
    TranskimmerBertConfig,
    TranskimmerBertForSequenceClassification,
)

aten = torch.ops.aten
VALUE_DEPENDENT = {aten.nonzero.default, aten.masked_select.default, aten.bincount.default,
                   aten._unique2.default, aten.unique_consecutive.default, aten.unique_dim.default}
READS = ("tolist", "item", "__bool__", "__int__", "__float__")


class CountSyncs(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in VALUE_DEPENDENT:
            self.ops.append(str(func))
        elif func in (aten.index.Tensor, aten.index_put_.default, aten.index_put.default):
            if any(t is not None and t.dtype == torch.bool for t in args[1]):
                self.ops.append(f"{func} (boolean mask)")
        elif func == aten.repeat_interleave.Tensor and kwargs.get("output_size") is None:
            self.ops.append(f"{func} (no output_size)")
        return func(*args, **kwargs)


@contextlib.contextmanager
def counting(monkeypatch):
    reads = []
    for name in READS:
        original = getattr(torch.Tensor, name)

        def wrapped(self, *a, _original=original, _name=name, **k):
            reads.append(_name)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    mode = CountSyncs()
    with mode:
        yield reads, mode.ops
    monkeypatch.undo()


def families():
    """(name, model, decision points of one forward with decisions on) for tiny 3-layer BERTs that drop tokens."""
    base = tiny_config().to_dict()
    base.update(num_labels=3)
    transkimmer = TranskimmerBertForSequenceClassification(TranskimmerBertConfig(**base, skim_bias_init=0.0))
    ltp = LTPBertForSequenceClassification(LTPBertConfig(**base, final_threshold=0.1))
    exits = EarlyExitBertForSequenceClassification(EarlyExitBertConfig(**base, exit_threshold=0.99))
    pyramid = MagicPyramidBertForSequenceClassification(MagicPyramidBertConfig(**base, final_threshold=0.1,
                                                                                exit_threshold=0.99))
    qa = dict(base, num_labels=2)
    block = BlockSkimBertForQuestionAnswering(BlockSkimBertConfig(**qa, block_size=4, skim_threshold=0.999))
    sttabt = sttabt_model()
    return [
        ("transkimmer", transkimmer, 3),  # before every layer
        ("ltp", ltp, 2),  # after the attention of layers 1 and 2 (layer 0 never prunes)
        ("early-exit", exits, 2),  # an exit check after layers 0 and 1
        ("magic-pyramid", pyramid, 4),  # both
        ("block-skim", block, 2),
        ("sttabt", sttabt, 4),  # its plan (ApproxNet packs the batch once more), then every layer
    ]


@pytest.mark.parametrize("name,model,points", families(), ids=[f[0] for f in families()])
def test_host_reads_per_forward_stay_within_budget(name, model, points, monkeypatch):
    model.eval()
    batch = mixed_batch([17, 3, 30, 9, 12, 5])
    if name == "block-skim":
        batch["token_type_ids"] = (torch.arange(30) >= 4).long().expand(6, -1) * batch["attention_mask"]
    with torch.no_grad():
        with counting(monkeypatch) as (reads, ops):
            out = model(**batch)
        assert len(reads) + len(ops) <= 1 + points, (reads, ops)
        assert int(out.kept_tokens.sum()) < int(batch["attention_mask"].sum()) * 3 or name == "early-exit"

        model.config.skim_enabled = False
        if hasattr(model.config, "exit_enabled"):
            model.config.exit_enabled = False
        with counting(monkeypatch) as (reads, ops):
            model(**batch)
        assert len(reads) + len(ops) <= 1, (reads, ops)
