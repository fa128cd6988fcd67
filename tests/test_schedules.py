"""The recipe table through `tokenskim train`: every method trains end to end in its stages, each stage trains what it
should and is saved in its own folder, the evaluation split is the one asked for, and a rerun skips finished stages
and redoes only unfinished ones."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from test_trainer import BUNDLED, save_tiny_checkpoint
from transformers import BertTokenizerFast, TrainingArguments

from tokenskim.trainers import cli, data, recipes, train as train_module
from tokenskim.trainers.stages import prepare_stage
from tokenskim.trainers.trainer import SkimTrainer


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bert"), layers=3)


FAST = ["--max-train-samples", "24", "--max-eval-samples", "16", "--max-length", "32", "--max-steps", "2",
        "--per-device-train-batch-size", "8", "--per-device-eval-batch-size", "16", "--learning-rate", "1e-3",
        "--save-strategy", "no", "--eval-strategy", "no", "--logging-steps", "1", "--disable-tqdm", "true",
        "--use-cpu", "true"]
SST2 = ["--task", "sst2", "--train-file", str(BUNDLED / "sst2_train_sample.tsv"),
        "--validation-file", str(BUNDLED / "sst2_dev.tsv")]


def train(tiny_dir, out, method, *extra, data_flags=SST2):
    return cli.main(["train", "--method", method, "--model", tiny_dir, *data_flags, "--output-dir", str(out), *FAST, *extra])


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def stage_names(method):
    return [stage.name for stage in recipes.get_recipe(method).stages]


def test_the_table_holds_seven_methods():
    assert list(recipes.RECIPES) == ["dense", "transkimmer", "ltp", "early-exit", "magic-pyramid", "block-skim", "sttabt"]
    classifiers = [m for m, r in recipes.RECIPES.items() if recipes.SEQUENCE_CLASSIFICATION in r.classes]
    assert classifiers == ["dense", "transkimmer", "ltp", "early-exit", "magic-pyramid", "sttabt"]
    assert stage_names("magic-pyramid") == ["finetune", "soft-pruning", "hard-pruning", "exit-heads"]
    assert stage_names("sttabt") == ["finetune", "approxnet", "masking"]
    config = SimpleNamespace(model_type="roberta")  # only model_type is read
    assert recipes.model_class("ltp", config, recipes.QUESTION_ANSWERING).__name__ == "LTPRobertaForQuestionAnswering"
    with pytest.raises(ValueError, match=r"no sequence-classification head \(it has: question-answering\)"):
        recipes.model_class("block-skim", config)


def check_run(out, method):
    """What every method's run leaves: its stages' evaluations, stage folders, the final model, card and results."""
    names = stage_names(method)
    summary = json.loads((out / "schedule.json").read_text())
    assert summary["method"] == method and [s["stage"] for s in summary["stages"]] == names
    assert all("accuracy" in s and "flops_ratio" in s for s in summary["stages"])
    config = json.loads((out / "config.json").read_text())  # the final model sits in the output folder
    assert config["model_type"] == ("bert" if method == "dense" else f"{method}-bert")
    assert f"tokenskim train --method {method}" in (out / "README.md").read_text()
    results = json.loads((out / "eval_results.json").read_text())
    assert results["method"] == method and results["accuracy"] == summary["stages"][-1]["accuracy"]
    if len(names) > 1:
        assert [p.name for p in sorted(out.glob("stage-*"))] == [f"stage-{i}-{n}" for i, n in enumerate(names, 1)]


# magic-pyramid and sttabt: their own tests below; block-skim (question answering): the last test
@pytest.mark.parametrize("method", ["dense", "transkimmer", "ltp", "early-exit"])
def test_every_method_trains_end_to_end(tiny_dir, tmp_path, method):
    out = tmp_path / method
    assert train(tiny_dir, out, method) == 0
    check_run(out, method)


def test_ltp_recipe_learns_log_relative_thresholds_at_their_own_rate(tiny_dir, tmp_path, monkeypatch):
    """New LTP models train their thresholds in the log-relative space, at 1e-2 in the soft-pruning stage (the only
    one that trains them); the paper's space keeps the model's learning rate unless --selector-learning-rate says."""
    rates = {}
    original = SkimTrainer.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        rates[Path(self.args.output_dir).name] = self.selector_learning_rate

    monkeypatch.setattr(SkimTrainer, "__init__", recording)
    out = tmp_path / "ltp"
    assert train(tiny_dir, out, "ltp") == 0
    assert json.loads((out / "config.json").read_text())["threshold_space"] == "log-relative"
    assert rates == {"stage-1-finetune": None, "stage-2-soft-pruning": 1e-2, "stage-3-hard-pruning": None}
    rates.clear()
    assert train(tiny_dir, tmp_path / "paper", "ltp", "--threshold-space", "attention") == 0
    assert rates["stage-2-soft-pruning"] is None


def test_transkimmer_predictors_train_at_1e_3_with_a_budget_and_at_the_model_rate_without(tiny_dir, tmp_path,
                                                                                          monkeypatch):
    """With a budget and no --selector-learning-rate the predictors train at 1e-3 (the budget recipe's), at any width;
    without a budget at the model's rate (the paper's, whose loss collapses faster predictors); a flag wins."""
    rates = []
    original = SkimTrainer.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        rates.append(self.selector_learning_rate)

    monkeypatch.setattr(SkimTrainer, "__init__", recording)
    for width in ("16", "0"):
        assert train(tiny_dir, tmp_path / f"w{width}", "transkimmer", "--target-keep-ratio", "0.5",
                     "--skim-predictor-size", width) == 0
    assert train(tiny_dir, tmp_path / "paper", "transkimmer") == 0
    assert train(tiny_dir, tmp_path / "given", "transkimmer", "--target-keep-ratio", "0.5",
                 "--selector-learning-rate", "2e-3") == 0
    assert rates == [1e-3, 1e-3, None, 2e-3]


def test_new_transkimmer_models_get_the_recipe_predictors_and_its_own_checkpoints_keep_theirs(tiny_dir, tmp_path):
    """A model the command starts from a plain checkpoint gets the recipe's predictors (none before layer 0, 64 wide);
    a flag overrides them; a Transkimmer checkpoint saved before these fields existed keeps the paper's architecture
    (its config lacks them), so continuing to train it loads every predictor it has."""
    out = tmp_path / "tk"
    assert train(tiny_dir, out, "transkimmer") == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["skim_first_layer"], config["skim_predictor_size"]) == (False, 64)
    assert "bert.selector.predictors.0.1.weight" not in weights(out)
    assert weights(out)["bert.selector.predictors.1.1.weight"].shape[0] == 64
    given = {"skim_first_layer": True, "skim_predictor_size": None}
    assert recipes.starting_hyperparameters("transkimmer", given, tiny_dir) == {"skim_first_layer": True,
                                                                               "skim_predictor_size": 64}
    old = tmp_path / "old-tk"
    paper = recipes.load_model("transkimmer", tiny_dir, {"skim_first_layer": True, "skim_predictor_size": 0}, num_labels=2)
    paper.save_pretrained(old)
    BertTokenizerFast.from_pretrained(tiny_dir).save_pretrained(old)
    saved = json.loads((old / "config.json").read_text())
    del saved["skim_first_layer"], saved["skim_predictor_size"]
    (old / "config.json").write_text(json.dumps(saved))
    assert recipes.starting_hyperparameters("transkimmer", {}, str(old)) == {}
    assert train(str(old), tmp_path / "continued", "transkimmer") == 0
    assert weights(tmp_path / "continued")["bert.selector.predictors.0.1.weight"].shape == (32, 32)


def test_magic_pyramid_stages_train_what_they_should_and_a_rerun_resumes(tiny_dir, tmp_path, monkeypatch):
    rates = {}
    init = SkimTrainer.__init__

    def recording(self, *args, **kwargs):
        init(self, *args, **kwargs)
        rates[Path(self.args.output_dir).name] = self.args.learning_rate

    monkeypatch.setattr(SkimTrainer, "__init__", recording)
    out = tmp_path / "mp"
    assert train(tiny_dir, out, "magic-pyramid", "--final-threshold", "0.2", "--selector-learning-rate", "0.05") == 0
    check_run(out, "magic-pyramid")
    names = ["stage-1-finetune", "stage-2-soft-pruning", "stage-3-hard-pruning", "stage-4-exit-heads"]
    for name in names:
        assert (out / name / "stage.json").is_file() and (out / name / "model.safetensors").is_file()
    summary = json.loads((out / "schedule.json").read_text())
    assert "mean_exit_layer" in summary["stages"][-1]
    assert rates["stage-4-exit-heads"] == 5e-3  # the exit heads' own rate; the other stages take the command's
    assert rates["stage-2-soft-pruning"] == rates["stage-3-hard-pruning"] != 5e-3

    config = json.loads((out / "config.json").read_text())
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


def test_sttabt_stages(tiny_dir, tmp_path):
    """finetune: skimming off; approxnet: ApproxNet alone trains, every token kept, no keep-ratio term; masking:
    everything but ApproxNet trains, with the recipe's keep-ratio term unless a flag sets it. (The tiny ApproxNet's
    attention is near uniform, so every importance is near 1: a keep logit of -13 puts the masks where they move.)"""
    out = tmp_path / "sttabt"
    assert train(tiny_dir, out, "sttabt", "--target-keep-ratio", "0.5", "--keep-logit-init", "-13") == 0
    check_run(out, "sttabt")
    names = ["stage-1-finetune", "stage-2-approxnet", "stage-3-masking"]
    configs = [json.loads((out / n / "config.json").read_text()) for n in names]
    assert [c["skim_enabled"] for c in configs] == [False, True, True]
    assert [c["skim_coefficient"] for c in configs] == [5.0, 0.0, 5.0]  # the recipe's 5, off while ApproxNet learns
    assert {c["target_keep_ratio"] for c in configs} == {0.5} and {c["keep_logit_init"] for c in configs} == {-13.0}
    finetune, approx, masking = (weights(out / n) for n in names)
    for key in approx:
        if key == "bert.selector.keep_logits":
            assert approx[key].tolist() == [10.0] * 3  # every token kept while ApproxNet learns
        else:
            assert torch.equal(approx[key], finetune[key]) != key.startswith("bert.selector.approx."), key
    for key in masking:
        changed = not torch.equal(masking[key], approx[key])
        assert changed != key.startswith("bert.selector.approx."), key
    assert (masking["bert.selector.keep_logits"][1:] + 13.0).abs().min() > 0  # from -13, trained
    assert json.loads((out / "schedule.json").read_text())["stages"][-1]["kept_token_ratio"] <= 1.0


def test_multi_stage_methods_evaluate_on_the_split_asked_for(tiny_dir, tmp_path):
    """`--dataset-name FOLDER --validation-split test` evaluates every stage on the test split."""
    rows = [line.split("\t") for line in (BUNDLED / "sst2_dev.tsv").read_text().splitlines()[1:]]
    folder = tmp_path / "my-dataset"
    folder.mkdir()
    for split, part in (("train", rows[:24]), ("validation", rows[24:44]), ("test", rows[44:50])):
        (folder / f"{split}.csv").write_text("text,label\n" + "".join(f'"{t}",{l}\n' for t, l in part))
    out = tmp_path / "early-exit"
    flags = ["--dataset-name", str(folder), "--validation-split", "test"]
    assert train(tiny_dir, out, "early-exit", data_flags=flags) == 0
    stages = json.loads((out / "schedule.json").read_text())["stages"]
    assert [(s["split"], s["num_examples"]) for s in stages] == [("test", 6)] * 2
    results = json.loads((out / "eval_results.json").read_text())
    assert (results["split"], results["num_examples"]) == ("test", 6)


def test_finetuned_checkpoint_skips_the_finetune_stage(tiny_dir, tmp_path):
    out = tmp_path / "ee"
    assert train(tiny_dir, out, "early-exit", "--finetuned", tiny_dir) == 0
    assert not (out / "stage-1-finetune").exists() and (out / "stage-2-exit-heads" / "stage.json").is_file()


def test_stage_flag_errors(tiny_dir, tmp_path):
    assert train_module.parse_list("3,1,2,2", 4) == [3.0, 1.0, 2.0, 2.0]
    assert train_module.parse_list("2", 3) == [2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="per stage"):
        train_module.parse_list("3,1", 4)
    with pytest.raises(ValueError, match="trains in one stage"):
        train_module.check_stage_flags("transkimmer", tiny_dir, None)
    with pytest.raises(ValueError, match="trains no token selector"):
        train_module.check_stage_flags("early-exit", None, 1e-3)


def qa_rows(tokenizer, n=16):
    """Question/context pairs from the SST-2 sample: the question is the sentence's first two words, the answer its
    third to fifth context tokens."""
    sentences = [line.split("\t")[0] for line in (BUNDLED / "sst2_dev.tsv").read_text().splitlines()[1 : n + 1]]
    rows = []
    for s in sentences:
        encoded = tokenizer(" ".join(s.split()[:2]), s, truncation=True, max_length=32)
        context = encoded["token_type_ids"].index(1)
        rows.append({**encoded, "start_positions": context + 2, "end_positions": context + 4})
    return rows


def test_block_skim_recipe_trains_its_qa_model(tiny_dir, tmp_path):
    """Block-Skim's entry: its QA class from a BERT checkpoint, and its one stage trains the block CNNs with the QA
    loss (the SQuAD data path is not part of `tokenskim train` yet)."""
    recipe = recipes.get_recipe("block-skim")
    model = recipes.load_model("block-skim", tiny_dir, {"block_size": 4, "skim_layers": [0, 1]}, recipes.QUESTION_ANSWERING)
    assert type(model).__name__ == "BlockSkimBertForQuestionAnswering"
    prepare_stage(model, recipe.stages[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tokenizer = BertTokenizerFast.from_pretrained(tiny_dir)
    rows = qa_rows(tokenizer)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, learning_rate=1e-3,
                             report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, prediction_loss_only=True)
    trainer = SkimTrainer(model=model, args=args, train_dataset=rows, eval_dataset=rows, data_collator=data.collator(tokenizer),
                          processing_class=tokenizer, selector_learning_rate=1e-2)
    trainer.train()
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k]) and "running" not in k}
    assert any(k.startswith("bert.selector.predictors.") for k in moved) and "qa_outputs.weight" in moved
    assert "eval_kept_token_ratio" in trainer.evaluate()
