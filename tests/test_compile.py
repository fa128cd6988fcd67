"""`torch.compile` of the pruning-off path: one graph (no graph break, `fullgraph=True` raises on any) that gives
the eager model's outputs. With decisions on, compiled models run the packed path with graph breaks where it reads
lengths; that path is exercised everywhere else."""

import pytest
import torch
from conftest import PAD, mixed_batch, tiny_config
from test_block_skim import qa_batch

from tokenskim.modeling import (
    BlockSkimBertConfig,
    BlockSkimBertForQuestionAnswering,
    MagicPyramidRobertaConfig,
    MagicPyramidRobertaForSequenceClassification,
    STTABTBertConfig,
    STTABTBertForSequenceClassification,
    TranskimmerBertConfig,
    TranskimmerBertForSequenceClassification,
)

CASES = {
    "transkimmer": (TranskimmerBertForSequenceClassification, TranskimmerBertConfig, "bert", "logits"),
    "magic-pyramid-roberta": (MagicPyramidRobertaForSequenceClassification, MagicPyramidRobertaConfig, "roberta", "logits"),
    "sttabt": (STTABTBertForSequenceClassification, STTABTBertConfig, "bert", "logits"),
    "block-skim": (BlockSkimBertForQuestionAnswering, BlockSkimBertConfig, "bert", "start_logits"),
}


@pytest.mark.parametrize("name", CASES)
def test_pruning_off_compiles_to_one_graph(name):
    cls, config_class, backbone, field = CASES[name]
    torch.manual_seed(0)
    config = config_class(**tiny_config(backbone, num_labels=2).to_dict(), skim_enabled=False)
    model = cls(config).eval()
    batch = qa_batch([9, 14, 5], backbone) if name == "block-skim" else mixed_batch([9, 14, 5], pad_id=PAD[backbone])
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="eager")  # dynamo's graph capture; no C++ build needed
    with torch.no_grad():
        torch.testing.assert_close(getattr(compiled(**batch), field), getattr(model(**batch), field), atol=1e-5, rtol=0)
