"""Training schedules of LTP, early exit and Magic Pyramid: every stage runs and is saved in its own folder,
each stage trains what it should, and a rerun skips finished stages and redoes only unfinished ones."""

import json

import pytest
import torch
from safetensors.torch import load_file
from test_trainer import BUNDLED, save_tiny_checkpoint

from tokenskim.trainers import cli, schedules
from tokenskim.trainers.trainer import SkimTrainer


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bert"), layers=3)


def train(tiny_dir, out, method, *extra):
    argv = [
        "train", "--method", method, "--model", tiny_dir, "--task", "sst2",
        "--train-file", str(BUNDLED / "sst2_train_sample.tsv"), "--validation-file", str(BUNDLED / "sst2_dev.tsv"),
        "--max-train-samples", "24", "--max-eval-samples", "16", "--max-length", "32",
        "--output-dir", str(out), "--max-steps", "2", "--per-device-train-batch-size", "8",
        "--per-device-eval-batch-size", "16", "--learning-rate", "1e-3", "--save-strategy", "no",
        "--eval-strategy", "no", "--logging-steps", "1", "--disable-tqdm", "true", "--use-cpu", "true", *extra,
    ]
    return cli.main(argv)


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_magic_pyramid_schedule_runs_every_stage_and_resumes(tiny_dir, tmp_path, monkeypatch):
    out = tmp_path / "mp"
    assert train(tiny_dir, out, "magic-pyramid", "--final-threshold", "0.2", "--selector-learning-rate", "0.05") == 0
    names = ["stage-1-finetune", "stage-2-soft-pruning", "stage-3-hard-pruning", "stage-4-exit-heads"]
    for name in names:
        assert (out / name / "stage.json").is_file() and (out / name / "model.safetensors").is_file()
    summary = json.loads((out / "schedule.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["finetune", "soft-pruning", "hard-pruning", "exit-heads"]
    assert "mean_exit_layer" in summary["stages"][-1] and "flops_ratio" in summary["stages"][-1]

    config = json.loads((out / "config.json").read_text())  # the final model sits in the output folder too
    assert config["model_type"] == "magic-pyramid-bert"
    assert config["pruning_stage"] == "hard" and config["exit_enabled"] and config["skim_enabled"]
    stage1, stage2, stage3, stage4 = (weights(out / n) for n in names)
    threshold = "bert.selector.threshold_offsets"
    assert not torch.equal(stage2[threshold], stage1[threshold])  # soft pruning learns the thresholds
    assert torch.equal(stage3[threshold], stage2[threshold])  # hard pruning: frozen
    assert torch.equal(stage1["exit_heads.0.dense.weight"], stage3["exit_heads.0.dense.weight"])  # unused until stage 4
    for key in stage4:  # the exit-head stage trains the exit heads and nothing else
        assert torch.equal(stage4[key], stage3[key]) != key.startswith("exit_heads."), key

    # a rerun skips every finished stage; an unfinished one (no stage.json) is trained again
    (out / "stage-4-exit-heads" / "stage.json").unlink()
    trained = []
    original = SkimTrainer.train
    monkeypatch.setattr(SkimTrainer, "train", lambda self, **kw: trained.append(self.args.output_dir) or original(self, **kw))
    assert train(tiny_dir, out, "magic-pyramid") == 0
    assert trained == [str(out / "stage-4-exit-heads")]


@pytest.mark.parametrize("method, stages", [("ltp", 3), ("early-exit", 2)])
def test_ltp_and_early_exit_schedules(tiny_dir, tmp_path, method, stages):
    out = tmp_path / method
    assert train(tiny_dir, out, method, "--stage-epochs", ",".join(["1"] * stages)) == 0
    summary = json.loads((out / "schedule.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == list(schedules.SCHEDULES[method])
    assert json.loads((out / "config.json").read_text())["model_type"] == f"{method}-bert"


def test_finetuned_checkpoint_skips_the_finetune_stage(tiny_dir, tmp_path):
    out = tmp_path / "ee"
    assert train(tiny_dir, out, "early-exit", "--finetuned", tiny_dir) == 0
    assert not (out / "stage-1-finetune").exists() and (out / "stage-2-exit-heads" / "stage.json").is_file()


def test_stage_list_errors():
    assert schedules.parse_list("3,1,2,2", 4) == [3.0, 1.0, 2.0, 2.0]
    assert schedules.parse_list("2", 3) == [2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="per stage"):
        schedules.parse_list("3,1", 4)
