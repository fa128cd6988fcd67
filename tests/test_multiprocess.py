"""SkimTrainer in 2 processes on CPU (torchrun, gloo) against 1 process with the same global batch:
the same logged losses step by step (loss scale under DDP + gradient accumulation), the same training
statistics, and the same evaluation metrics (counts gathered across processes, the last batch's
duplicates dropped)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_trainer import save_tiny_checkpoint

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from transformers import BertTokenizerFast, TrainingArguments
    from tokenskim.modeling import TranskimmerBertForSequenceClassification
    from tokenskim.trainers import data, metrics
    from tokenskim.trainers.trainer import SkimTrainer

    tiny, bundled, out, per_device, accumulation = sys.argv[1:6]
    tokenizer = BertTokenizerFast.from_pretrained(tiny)
    raw, spec = data.load_task("sst2", train_file=f"{bundled}/sst2_train_sample.tsv", validation_file=f"{bundled}/sst2_dev.tsv")
    raw["train"], raw["validation"] = raw["train"].select(range(24)), raw["validation"].select(range(10))
    tokenized = data.tokenize(raw, tokenizer, spec, max_length=40)

    def trainer(model, output_dir):
        args = TrainingArguments(
            output_dir=output_dir, per_device_train_batch_size=int(per_device), gradient_accumulation_steps=int(accumulation),
            per_device_eval_batch_size=4, learning_rate=1e-3, max_steps=3, logging_steps=1, save_strategy="no",
            report_to=[], train_sampling_strategy="sequential", disable_tqdm=True, use_cpu=True, seed=0,
            ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        )
        return SkimTrainer(model=model, args=args, train_dataset=tokenized["train"], eval_dataset=tokenized["validation"],
                           processing_class=tokenizer, data_collator=data.collator(tokenizer),
                           compute_metrics=metrics.build_compute_metrics("sst2"))

    torch.manual_seed(0)  # bias 20: every training decision is "keep", whatever the Gumbel noise of each process
    model = TranskimmerBertForSequenceClassification.from_pretrained(tiny, num_labels=2, skim_bias_init=20.0, skim_coefficient=0.5)
    t = trainer(model, out + "/train")
    t.train()
    logs = [h for h in t.state.log_history if "loss" in h]

    torch.manual_seed(0)  # bias -1: the predictors skim part of the tokens at evaluation
    skimmer = TranskimmerBertForSequenceClassification.from_pretrained(tiny, num_labels=2, skim_bias_init=-1.0)
    evaluation = trainer(skimmer, out + "/eval").evaluate()
    if t.is_world_process_zero():
        json.dump({"world_size": t.args.world_size, "logs": logs, "eval": evaluation}, open(out + "/result.json", "w"))
    if torch.distributed.is_initialized():  # a gloo group left to interpreter exit can abort ("terminate called ...")
        torch.distributed.destroy_process_group()
    """
)


def run(cmd, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((Path(cwd) / "result.json").read_text())


def torchrun():
    exe = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    return exe if Path(exe).exists() else None


@pytest.mark.skipif(torchrun() is None, reason="torchrun not installed")
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    from tokenskim.trainers import data

    tiny = save_tiny_checkpoint(tmp_path / "tiny")
    bundled = str(Path(data.__file__).resolve().parent / "data")
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()

    # 1 process x 8 rows  vs  2 processes x 2 rows x 2 accumulation steps: global batch 8 in both
    one = run([sys.executable, str(script), tiny, bundled, str(tmp_path / "one"), "8", "1"], tmp_path / "one")
    two = run([torchrun(), "--nproc_per_node", "2", "--master_port", "29533", str(script), tiny, bundled,
               str(tmp_path / "two"), "2", "2"], tmp_path / "two")

    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert len(one["logs"]) == len(two["logs"]) == 3
    for a, b in zip(one["logs"], two["logs"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), (a, b)
        assert b["skim_loss"] == pytest.approx(a["skim_loss"]) and b["kept_token_ratio"] == pytest.approx(a["kept_token_ratio"])
    # the loss moved: the three steps saw different weights, so matching them checks the averaged gradients
    assert len({round(h["loss"], 6) for h in one["logs"]}) == 3

    for key in ("eval_accuracy", "eval_kept_token_ratio", "eval_flops_ratio", "eval_loss", "eval_keep_rate_layer_1"):
        assert two["eval"][key] == pytest.approx(one["eval"][key], rel=1e-5), key
    assert one["eval"]["eval_kept_token_ratio"] < 1.0  # the evaluation skimmed something
