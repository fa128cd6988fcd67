"""`tokenskim predict`: input order kept through length-sorted batching, the summary, resuming a long run, the
file formats, and 2 CPU processes (accelerate launch, gloo) giving the predictions of one."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_trainer import BUNDLED, save_tiny_checkpoint
from transformers import AutoTokenizer

from tokenskim.modeling import TranskimmerBertForSequenceClassification
from tokenskim.trainers import cli

ROWS = 45
ACCELERATE_CPU_CONFIG = """compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
use_cpu: true
num_machines: 1
machine_rank: 0
mixed_precision: 'no'
dynamo_config: {}
"""


@pytest.fixture(scope="module")
def skimmer(tmp_path_factory):
    """A tiny Transkimmer classifier that skims part of the tokens (predictor bias -1), with label names."""
    root = tmp_path_factory.mktemp("predict")
    tiny = save_tiny_checkpoint(root / "tiny")
    torch.manual_seed(0)
    model = TranskimmerBertForSequenceClassification.from_pretrained(
        tiny, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1},
        skim_bias_init=-1.0)
    model.save_pretrained(root / "model")
    AutoTokenizer.from_pretrained(tiny).save_pretrained(root / "model")
    return root / "model"


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """ROWS SST-2 dev sentences of mixed lengths as a CSV with a `sentence` and an `id` column."""
    lines = (BUNDLED / "sst2_dev.tsv").read_text().splitlines()[1 : ROWS + 1]
    sentences = [line.split("\t")[0] for line in lines]
    path = tmp_path_factory.mktemp("input") / "texts.csv"
    path.write_text("id,sentence\n" + "".join(f'{i},"{s.replace(chr(34), "")}"\n' for i, s in enumerate(sentences)))
    return path, [s.replace('"', "") for s in sentences]


def predict(*argv):
    return cli.main(["predict", "--no-progress", *map(str, argv)])


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_predictions_come_back_in_input_order_and_match_one_by_one(skimmer, texts, tmp_path, capsys):
    path, sentences = texts
    out = tmp_path / "preds.jsonl"
    assert predict("--model", skimmer, "--input", path, "--text-column", "sentence", "--output", out,
                   "--batch-size", "4", "--chunk-size", "16", "--device", "cpu") == 0
    rows = read_jsonl(out)
    assert [r["index"] for r in rows] == list(range(ROWS))
    model = TranskimmerBertForSequenceClassification.from_pretrained(skimmer).eval()
    tokenizer = AutoTokenizer.from_pretrained(skimmer)
    for row, sentence in zip(rows, sentences):  # each row alone: no padding, no batch neighbours
        with torch.no_grad():
            probs = model(**tokenizer(sentence, return_tensors="pt")).logits.softmax(-1)[0]
        assert row["label"] == model.config.id2label[int(probs.argmax())]
        assert row["score"] == pytest.approx(float(probs.max()), abs=1e-5)
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    assert summary["examples"] == ROWS and summary["examples_per_second"] > 0
    assert 0 < summary["kept_token_ratio"] < 1 and summary["flops_ratio"] > 1  # the model skimmed
    printed = capsys.readouterr().out
    assert "examples/s" in printed and "kept_token_ratio" in printed


def test_an_interrupted_run_resumes_after_the_last_chunk_written(skimmer, texts, tmp_path, capsys):
    path, _ = texts
    full, part = tmp_path / "full.csv", tmp_path / "part.csv"
    common = ["--model", skimmer, "--input", path, "--text-columns", "sentence", "--batch-size", "8", "--chunk-size", "16"]
    assert predict(*common, "--output", full) == 0
    lines = full.read_text().splitlines(keepends=True)
    assert lines[0] == "index,label,score\n" and len(lines) == ROWS + 1
    part.write_text("".join(lines[:17]) + lines[17][:5])  # header, one chunk, and half a line: killed mid-write
    capsys.readouterr()
    assert predict(*common, "--output", part) == 0
    assert "resuming: 16 of 45 rows" in capsys.readouterr().out
    assert part.read_text() == full.read_text()
    assert json.loads(Path(f"{part}.summary.json").read_text())["examples"] == ROWS - 16
    assert predict(*common, "--output", part, "--overwrite") == 0  # starts over
    assert json.loads(Path(f"{part}.summary.json").read_text())["examples"] == ROWS


def test_a_text_file_one_text_per_line(skimmer, texts, tmp_path):
    _, sentences = texts
    (tmp_path / "in.txt").write_text("\n".join(sentences[:7]) + "\n")
    assert predict("--model", skimmer, "--input", tmp_path / "in.txt", "--output", tmp_path / "o.tsv") == 0
    lines = (tmp_path / "o.tsv").read_text().splitlines()
    assert lines[0] == "index\tlabel\tscore" and [int(line.split("\t")[0]) for line in lines[1:]] == list(range(7))


def accelerate_exe():
    exe = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    return exe if Path(exe).exists() else None


@pytest.mark.skipif(accelerate_exe() is None, reason="accelerate's launcher not installed")
def test_two_processes_write_the_predictions_of_one(skimmer, texts, tmp_path):
    path, _ = texts
    args = ["predict", "--model", str(skimmer), "--input", str(path), "--text-columns", "sentence",
            "--batch-size", "4", "--chunk-size", "16", "--no-progress"]
    assert cli.main([*args, "--output", str(tmp_path / "one.jsonl")]) == 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    # `--multi_gpu` with use_cpu from a config file: torchrun-style processes on CPU, talking through gloo
    (tmp_path / "accelerate.yaml").write_text(ACCELERATE_CPU_CONFIG)
    proc = subprocess.run(
        [accelerate_exe(), "launch", "--config_file", str(tmp_path / "accelerate.yaml"), "--multi_gpu",
         "--num_processes", "2", "--main_process_port", "29547",
         "-m", "tokenskim.trainers.cli", *args, "--output", str(tmp_path / "two.jsonl")],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    one, two = read_jsonl(tmp_path / "one.jsonl"), read_jsonl(tmp_path / "two.jsonl")
    assert [r["index"] for r in two] == list(range(ROWS))
    assert [r["label"] for r in two] == [r["label"] for r in one]
    assert [r["score"] for r in two] == pytest.approx([r["score"] for r in one], abs=1e-5)
    summary = json.loads((tmp_path / "two.jsonl.summary.json").read_text())
    assert summary["processes"] == 2 and summary["examples"] == ROWS
    assert summary["kept_token_ratio"] == pytest.approx(json.loads((tmp_path / "one.jsonl.summary.json").read_text())["kept_token_ratio"])


def test_a_hub_dataset_name_is_read_through_datasets(monkeypatch):
    from unittest import mock

    from tokenskim.trainers import predict as predict_module
    from tokenskim.trainers.errors import UsageError

    with pytest.raises(UsageError, match="Hub is offline"):  # conftest keeps the Hub offline
        predict_module.read_input("stanfordnlp/imdb", split="test")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    with mock.patch.object(predict_module.datasets, "load_dataset", return_value="rows") as load:
        assert predict_module.read_input("stanfordnlp/imdb", split="test") == "rows"
    load.assert_called_once_with("stanfordnlp/imdb", None, split="test")
    with pytest.raises(UsageError, match="input file not found"):
        predict_module.read_input("./missing/reviews")
