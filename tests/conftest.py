"""Shared fixtures: tiny random BERT/RoBERTa configs and padded batches of mixed lengths."""

import os
import subprocess
import sys
import tempfile
import textwrap

import pytest
import torch
from transformers import BertConfig, RobertaConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 120
PAD = {"bert": 0, "roberta": 1}  # pad_token_id of the tiny configs


def tiny_config(backbone="bert", **overrides):
    """A 3-layer, hidden-32 config with dropout off, so train and eval modes are comparable."""
    common = dict(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3,
    )
    common.update(overrides)
    if backbone == "roberta":
        return RobertaConfig(max_position_embeddings=66, pad_token_id=1, bos_token_id=0, eos_token_id=2, **common)
    return BertConfig(max_position_embeddings=64, pad_token_id=0, **common)


def mixed_batch(lengths, seq=None, pad_id=0, seed=0):
    """input_ids / attention_mask `[len(lengths), seq]`, right-padded, CLS-like first token 3."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (len(lengths), max(lengths)), generator=g)  # same tokens whatever seq is
    ids = torch.nn.functional.pad(ids, (0, (seq or max(lengths)) - max(lengths)))
    seq = ids.shape[1]
    mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = pad_id
    ids[:, 0] = 3
    return {"input_ids": ids, "attention_mask": mask}


def load_as(cls, stock, **kwargs):
    """`stock` saved and loaded back as `cls` (how users turn a checkpoint into a tokenskim model)."""
    with tempfile.TemporaryDirectory() as d:
        stock.save_pretrained(d)
        return cls.from_pretrained(d, **kwargs)


def row(batch, i):
    """Example i of a padded batch, alone and without padding."""
    n = int(batch["attention_mask"][i].sum())
    return {k: v[i : i + 1, :n] for k, v in batch.items()}


MIXED_LENGTHS = [17, 3, 30, 9, 1, 24, 2, 12, 30, 5, 8, 21, 14, 6, 27, 11]  # 16 examples


def run_without_tokenskim(code: str) -> str:
    """Runs `code` in a fresh interpreter where `import tokenskim` fails and the Hub is offline;
    returns its stdout (raises with stderr on failure)."""
    prelude = "import sys\nsys.modules['tokenskim'] = None\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300
    )
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
