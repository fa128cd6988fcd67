"""`tokenskim train / evaluate / demo` end to end on a tiny random BERT and the bundled SST-2 sample:
the Hub-ready folder, eval_results.json, the model card, resuming, and clear errors."""

import importlib
import json
from pathlib import Path

import pytest
import torch
from transformers import HfArgumentParser
from conftest import run_without_tokenskim
from test_trainer import BUNDLED, save_tiny_checkpoint

from tokenskim.trainers import cli

SST2 = ["--task", "sst2", "--train-file", str(BUNDLED / "sst2_train_sample.tsv"),
        "--validation-file", str(BUNDLED / "sst2_dev.tsv")]
FAST = ["--max-train-samples", "48", "--max-eval-samples", "24", "--per-device-train-batch-size", "8",
        "--per-device-eval-batch-size", "8", "--max-length", "32", "--disable-tqdm", "true", "--use-cpu", "true"]


def subcommand_parser(name: str) -> HfArgumentParser:
    """One subcommand's parser, built the way cli.py builds it (the other subcommands are not needed)."""
    module = importlib.import_module(f"tokenskim.trainers.{name}")
    parser = HfArgumentParser(getattr(module, "DATACLASSES", None), prog=f"tokenskim {name}")
    module.add_arguments(parser)
    return parser


def command(name: str, argv: list):
    """Runs one subcommand module the way cli.py does, errors raised rather than reported."""
    module = importlib.import_module(f"tokenskim.trainers.{name}")
    return module.run(subcommand_parser(name).parse_args(argv))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def trained(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "transkimmer-sst2"
    argv = ["train", "--method", "transkimmer", "--model", tiny_dir, *SST2, *FAST, "--output-dir", str(out),
            "--num-train-epochs", "1", "--skim-coefficient", "0.3", "--selector-learning-rate", "1e-3", "--seed", "1"]
    assert cli.main(argv) == 0  # the real entry point
    return out


def test_train_writes_a_hub_ready_folder(trained):
    files = {p.name for p in trained.iterdir()}
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "README.md",
                 "eval_results.json", "transkimmer.py", "engine.py"):
        assert name in files, name
    config = json.loads((trained / "config.json").read_text())
    assert config["model_type"] == "transkimmer-bert"
    assert config["skim_coefficient"] == 0.3
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert {"AutoConfig", "AutoModel", "AutoModelForSequenceClassification"} <= set(config["auto_map"])
    tokenizer_config = json.loads((trained / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == 128  # the model's positions, not the training length
    assert config["training_max_length"] == 32  # which evaluation reuses


def test_eval_results_and_model_card_carry_the_real_numbers(trained):
    results = json.loads((trained / "eval_results.json").read_text())
    for key in ("accuracy", "kept_token_ratio", "flops_ratio"):
        assert isinstance(results[key], float), key
    assert results["task"] == "sst2" and results["num_examples"] == 24 and results["method"] == "transkimmer"
    card = (trained / "README.md").read_text()
    assert card.startswith("---\n") and "model-index:" in card
    assert f"| accuracy | {results['accuracy']:.4f} |" in card
    assert f"| flops_ratio | {results['flops_ratio']:.4f} |" in card
    assert "tokenskim train --method transkimmer" in card and "--skim-coefficient 0.3" in card
    assert "trust_remote_code=True" in card
    assert "$" not in card.split("```bash")[0]  # every placeholder filled


def test_evaluate_reproduces_the_training_evaluation(trained, tmp_path):
    out = tmp_path / "eval"
    assert command("evaluate", ["--model", str(trained), *SST2[:2], "--validation-file", SST2[-1],
                                "--max-eval-samples", "24", "--seed", "1", "--output-dir", str(out)]) == 0
    again = json.loads((out / "eval_results.json").read_text())
    first = json.loads((trained / "eval_results.json").read_text())
    assert again["max_length"] == 32
    for key in ("accuracy", "kept_token_ratio", "flops_ratio", "loss"):
        assert again[key] == pytest.approx(first[key], rel=1e-5), key


def test_saved_folder_loads_without_tokenskim(trained):
    code = f"""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(trained)!r}, trust_remote_code=True)
        model = AutoModelForSequenceClassification.from_pretrained({str(trained)!r}, trust_remote_code=True).eval()
        batch = tok(["a charming journey", "bleak"], padding=True, return_tensors="pt")
        print("RESULT", type(model).__name__, model(**batch).logits.tolist())
    """
    last = [line for line in run_without_tokenskim(code).splitlines() if line.startswith("RESULT ")][-1]
    out = last.split(maxsplit=2)[1:]
    assert out[0] == "TranskimmerBertForSequenceClassification"
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained)
    model = AutoModelForSequenceClassification.from_pretrained(trained).eval()
    with torch.no_grad():
        expected = model(**tok(["a charming journey", "bleak"], padding=True, return_tensors="pt")).logits
    assert torch.allclose(torch.tensor(json.loads(out[1])), expected, atol=1e-5)


def test_dense_baseline_and_custom_csv(tiny_dir, tmp_path):
    rows = "text,sentiment\n" + "".join(f"{t},{s}\n" for t, s in [("a charming journey", "pos"), ("bleak", "neg")] * 12)
    (tmp_path / "mine.csv").write_text(rows)
    out = tmp_path / "dense"
    files = ["--train-file", str(tmp_path / "mine.csv"), "--validation-file", str(tmp_path / "mine.csv"),
             "--text-column", "text", "--label-column", "sentiment"]
    assert command("train", ["--method", "dense", "--model", tiny_dir, *files, "--output-dir", str(out),
                             "--max-steps", "2", "--per-device-train-batch-size", "8", "--disable-tqdm", "true"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert" and config["label2id"] == {"neg": 0, "pos": 1}
    results = json.loads((out / "eval_results.json").read_text())
    assert results["kept_token_ratio"] == 1.0 and results["flops_ratio"] == 1.0 and "f1" in results
    assert "trust_remote_code" not in (out / "README.md").read_text()
    # evaluation maps the file's labels through the model's label2id
    assert command("evaluate", ["--model", str(out), *files, "--output-dir", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "eval_results.json").read_text())["accuracy"] == results["accuracy"]


def test_resume_from_checkpoint(tiny_dir, tmp_path, monkeypatch):
    out = tmp_path / "resume"
    base = ["--model", tiny_dir, *SST2, *FAST, "--output-dir", str(out), "--save-strategy", "steps",
            "--save-steps", "2", "--eval-strategy", "no"]
    assert command("train", [*base, "--max-steps", "2"]) == 0
    assert (out / "checkpoint-2").is_dir() and (out / "stage.json").is_file()

    # a finished run is not trained again
    from tokenskim.trainers.trainer import SkimTrainer

    trained = []
    original = SkimTrainer.train
    monkeypatch.setattr(SkimTrainer, "train", lambda self, **kw: trained.append(kw) or original(self, **kw))
    assert command("train", [*base, "--max-steps", "2"]) == 0
    assert trained == []

    # one interrupted after checkpoint-2 (no stage.json) continues from it
    (out / "stage.json").unlink()
    assert command("train", [*base, "--max-steps", "4", "--resume-from-checkpoint", "auto"]) == 0
    assert trained == [{"resume_from_checkpoint": str(out / "checkpoint-2")}]
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps == sorted(set(steps))  # steps 1-2 come from the first run, not trained twice


@pytest.mark.parametrize(
    "argv,error,match",
    [
        (["--task", "sst5"], ValueError, "unknown task 'sst5'"),
        (["--train-file", "nope.csv", "--validation-file", "nope.csv"], FileNotFoundError, "data file not found"),
        ([*SST2, "--text-columns", "review"], ValueError, r"column\(s\) \['review'\] not found"),
        ([*SST2, "--method", "dense", "--skim-coefficient", "1"], ValueError, "--skim-coefficient do.* not apply"),
        ([*SST2, "--resume-from-checkpoint", "/no/such/ckpt"], FileNotFoundError, "checkpoint folder not found"),
        ([*SST2, "--method", "block-skim"], ValueError, "block-skim has no sequence-classification head"),
        ([*SST2, "--method", "early-exit", "--selector-learning-rate", "1e-3"], ValueError, "trains no token selector"),
        ([*SST2, "--finetuned", "some/checkpoint"], ValueError, "transkimmer trains in one stage"),
        ([*SST2, "--method", "ltp", "--stage-epochs", "1,2"], ValueError, "one of epochs per stage"),
        ([*SST2, "--method", "dense", "--distill-from", "t"], ValueError, "never trains under skimming"),
        ([*SST2, "--distill-from", "t", "--distill-alpha", "1.5"], ValueError, "--distill-alpha takes 0..1"),
    ],
)
def test_clear_errors(tiny_dir, tmp_path, argv, error, match):
    with pytest.raises(error, match=match):
        command("train", ["--model", tiny_dir, "--output-dir", str(tmp_path / "x"), *argv])


def test_evaluate_rejects_a_model_of_another_task(trained, tmp_path):
    (tmp_path / "d.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(ValueError, match="needs 3"):
        command("evaluate", ["--model", str(trained), "--task", "mnli", "--validation-file", str(tmp_path / "d.tsv"),
                             "--text-columns", "sentence1,sentence2"])


def test_training_arguments_pass_through():
    parser = subcommand_parser("train")
    args = parser.parse_args(["--model", "m", "--output-dir", "o", "--gradient-accumulation-steps", "4",
                              "--lr_scheduler_type", "cosine", "--skim-coefficient", "2"])
    assert args.gradient_accumulation_steps == 4 and args.lr_scheduler_type == "cosine"
    assert args.skim_coefficient == 2.0 and args.learning_rate == 2e-5 and args.eval_strategy == "epoch"


def test_model_card_command_lists_the_options_that_differ_from_defaults():
    from tokenskim.trainers import modelcard

    parser = subcommand_parser("train")
    args = parser.parse_args(["--model", "m", "--output-dir", "o", "--logging-steps", "100", "--text-columns", "a,b",
                              "--learning_rate", "3e-5", "--seed", "42"])
    assert modelcard.command_line("tokenskim train", parser, args) == (
        "tokenskim train --method transkimmer --model m --text-columns a,b --output-dir o --learning-rate 3e-05 "
        "--logging-steps 100"
    )


def test_demo_runs_end_to_end_on_a_tiny_model(tiny_dir, tmp_path, capsys):
    out = tmp_path / "demo"
    assert command("demo", ["--model", tiny_dir, "--output-dir", str(out), "--train-samples", "32",
                            "--epochs", "1", "--skim-epochs", "1", "--batch-size", "16", "--timing-repeats", "1",
                            "--max-length", "32"]) == 0
    printed = capsys.readouterr().out
    assert "speedup" in printed and "transkimmer" in printed
    report = json.loads((out / "demo_results.json").read_text())
    dense, dense_sorted, skim = report["rows"]
    assert dense["model"] == "dense" and dense["flops_ratio"] == 1.0 and dense["speedup"] == 1.0
    assert dense_sorted["model"] == "dense_sorted" and dense_sorted["speedup_vs_sorted"] == 1.0
    assert skim["seconds"] > 0 and 0 < skim["kept_token_ratio"] <= 1 and report["engine_off_seconds"] > 0
    assert "from never computing padding" in printed
    assert report["dev_rows"] == 872
    for name in ("dense", "transkimmer"):
        assert (out / name / "README.md").is_file() and (out / name / "model.safetensors").is_file()
    config = json.loads((out / "transkimmer" / "config.json").read_text())
    assert (config["skim_first_layer"], config["skim_predictor_size"]) == (False, 64)  # the recipe's predictors


@pytest.mark.slow
def test_demo_with_the_packaged_minilm(tmp_path):
    """The README's command with its defaults (the real MiniLM): minutes on 2 CPU cores."""
    assert cli.main(["demo", "--output-dir", str(tmp_path / "demo")]) == 0
    report = json.loads((tmp_path / "demo" / "demo_results.json").read_text())
    dense, _, skim = report["rows"]
    # the demo's promise: the skimming model within 1.5 points of dense at 2x fewer FLOPs or better
    assert dense["accuracy"] > 0.8 and skim["accuracy"] >= dense["accuracy"] - 0.015 and skim["flops_ratio"] >= 2.0
    assert report["wall_clock_minutes"] < 15


def test_calibrate_search_finds_the_smallest_knob_that_reaches_the_target():
    from tokenskim.trainers.calibrate import search

    def evaluate(scale):  # FLOPs ratio grows with the knob; accuracy falls
        return {"flops_ratio": 1.0 + scale, "accuracy": 1.0 - scale / 10}

    chosen, points = search(evaluate, "threshold_scale", target_flops=3.0)
    assert chosen == pytest.approx(2.0, abs=8.0 / 5 / 2**6 + 1e-5)  # grid step 1.6, halved 6 times
    assert chosen >= 2.0
    assert all(r["flops_ratio"] < 3.0 for value, r in points if value < chosen)
    assert search(evaluate, "threshold_scale", target_flops=100.0)[0] is None  # out of reach


def test_calibrate_joint_search_picks_the_best_pair_that_reaches_the_target():
    from tokenskim.trainers.calibrate import joint_search

    def evaluate(scale, tau):  # both knobs save FLOPs; accuracy is best with a little of each
        return {"flops_ratio": 1.0 + scale + 2 * tau, "accuracy": 1.0 - 0.1 * (scale - 1.5) ** 2 - 0.04 * tau}

    chosen, points = joint_search(evaluate, ("threshold_scale", "exit_threshold"), 1.0, 3.0, "accuracy")
    alone = [scale for (scale, tau), r in points if tau == 0.0 and r["flops_ratio"] >= 3.0]
    assert min(alone) == pytest.approx(2.0, abs=0.03)  # pruning alone reaches 3x at scale 2
    outers = sorted({scale for (scale, tau), _ in points if tau > 0})
    assert outers == pytest.approx([1.0, 1.25, 1.5, 1.75], abs=0.01)  # from the trained value towards it
    at = dict(points)
    assert at[chosen]["flops_ratio"] >= 3.0 and chosen[0] == pytest.approx(1.5, abs=0.01)
    # the best of the pairs that reach the target with the least exiting at each scale
    reaching = {scale: min(t for (s2, t), r in points if s2 == scale and r["flops_ratio"] >= 3.0)
                for scale in outers}
    assert at[chosen]["accuracy"] == max(at[(s2, t)]["accuracy"] for s2, t in reaching.items())
    assert joint_search(evaluate, ("threshold_scale", "exit_threshold"), 1.0, 100.0, "accuracy")[0] is None


def test_hold_out_sets_aside_the_same_rows_whatever_the_seed():
    import datasets

    from tokenskim.trainers import data

    ds = datasets.Dataset.from_dict({"i": list(range(100))})
    rest, held = (list(part["i"]) for part in data.hold_out(ds, 20))
    assert len(held) == 20 and len(rest) == 80 and sorted(held + rest) == list(range(100))
    assert held == sorted(held) and held != list(range(20))  # seeded, in the original order
    assert set(data.hold_out(ds, 10)[1]["i"]) < set(held)  # fewer held-out rows: a subset of these
    assert data.hold_out(ds, None) == (ds, None)
    with pytest.raises(data.UsageError, match="between 1 and 99"):
        data.hold_out(ds, 100)


def test_train_never_reads_the_held_out_rows(tiny_dir, tmp_path, monkeypatch):
    import collections

    from tokenskim.trainers import data, train

    class Stop(Exception):
        pass

    seen = {}

    def recipe(method, model, raw, *args, **kwargs):
        seen["train"] = raw["train"]
        raise Stop

    monkeypatch.setattr(train, "train_recipe", recipe)
    with pytest.raises(Stop):
        command("train", ["--method", "dense", "--model", tiny_dir, *SST2, "--holdout-samples", "16",
                          "--output-dir", str(tmp_path / "out")])
    full = data.load_task(task="sst2", train_file=str(BUNDLED / "sst2_train_sample.tsv"),
                          validation_file=str(BUNDLED / "sst2_dev.tsv"))[0]["train"]
    held = data.hold_out(full, 16)[1]
    rows = lambda ds: collections.Counter(zip(ds["sentence"], ds["label"]))  # noqa: E731
    assert seen["train"].num_rows == full.num_rows - 16
    assert rows(seen["train"]) + rows(held) == rows(full)


def test_calibrate_joint_knobs_of_a_magic_pyramid_folder(tiny_dir, tmp_path):
    """`--knob threshold_scale,exit_threshold` writes both chosen values into config.json."""
    from tokenskim.modeling import MagicPyramidBertConfig, MagicPyramidBertForSequenceClassification
    from transformers import AutoTokenizer

    folder = tmp_path / "pyramid"
    stock = json.loads((Path(tiny_dir) / "config.json").read_text())
    fields = {k: v for k, v in stock.items() if k not in ("model_type", "architectures", "transformers_version")}
    fields.update(initializer_range=0.3, final_threshold=0.1, exit_threshold=0.3)  # tokens pruned, rows exiting
    config = MagicPyramidBertConfig(**fields)
    torch.manual_seed(0)
    MagicPyramidBertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(folder)
    argv = ["--model", str(folder), *SST2, "--knob", "threshold_scale,exit_threshold", "--target-flops", "1.5",
            "--calibration-split", "holdout", "--holdout-samples", "16", "--batch-size", "8",
            "--max-length", "32", "--max-metric-drop", "1"]
    assert command("calibrate", argv) == 0
    record = json.loads((folder / "calibration.json").read_text())
    scale, tau = record["chosen"]
    saved = json.loads((folder / "config.json").read_text())
    assert (saved["threshold_scale"], saved["exit_threshold"]) == (scale, tau)
    point = next(p for p in record["points"] if (p["threshold_scale"], p["exit_threshold"]) == (scale, tau))
    assert point["flops_ratio"] >= 1.5
    assert (folder / "calibration.png").stat().st_size > 0


def test_calibrate_writes_the_chosen_threshold_and_its_curve(trained, tmp_path):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(trained, folder)
    argv = ["--model", str(folder), *SST2, "--target-flops", "1.3", "--calibration-split", "validation",
            "--max-calibration-samples", "24", "--batch-size", "8"]
    # the guard: a chosen value that must score 1.0 above the trained one is refused, and the config stays
    config = (folder / "config.json").read_text()
    assert command("calibrate", argv + ["--max-metric-drop", "-1"]) == 1
    assert (folder / "config.json").read_text() == config
    assert command("calibrate", argv + ["--max-metric-drop", "1"]) == 0
    record = json.loads((folder / "calibration.json").read_text())
    chosen = record["chosen"]
    assert record["knob"] == "keep_threshold" and chosen is not None
    assert 0.0 <= record["trained_metric"] <= 1.0
    assert json.loads((folder / "config.json").read_text())["keep_threshold"] == chosen
    at = {p["keep_threshold"]: p for p in record["points"]}
    assert at[chosen]["flops_ratio"] >= 1.3
    assert all(p["flops_ratio"] < 1.3 for value, p in at.items() if value < chosen)
    assert (folder / "calibration.png").stat().st_size > 0
    from transformers import AutoModelForSequenceClassification

    reloaded = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    assert reloaded.config.keep_threshold == chosen


def test_evaluate_never_overwrites_the_training_record(trained, capsys):
    record = (trained / "eval_results.json").read_text()
    assert cli.main(["evaluate", "--model", str(trained), *SST2[:2], "--validation-file", SST2[-1],
                     "--max-eval-samples", "8"]) == 0
    assert (trained / "eval_results.json").read_text() == record
    separate = trained / "eval_results_sst2_validation.json"
    assert json.loads(separate.read_text())["num_examples"] == 8
    assert f"wrote {separate}" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_a_config_file_sets_flags_and_the_command_line_wins(tmp_path, suffix):
    values = {"method": "dense", "model": "some/model", "task": "sst2", "learning_rate": 3e-5, "output_dir": "out",
              "num_train_epochs": 2, "bf16": False, "use_cpu": True, "label_names": ["labels", "ids"], "max_length": None}
    path = tmp_path / f"config.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps(values))
        argv = ["train", "--config", str(path), "--seed", "7", "--learning-rate", "1e-4"]
    else:
        import yaml

        path.write_text(yaml.safe_dump(values))
        argv = ["train", str(path), "--seed", "7", "--learning-rate", "1e-4"]
    args, _ = cli.parse_args(argv)
    assert (args.method, args.model, args.task, args.output_dir) == ("dense", "some/model", "sst2", "out")
    assert args.num_train_epochs == 2.0 and args.use_cpu is True and args.bf16 is False and args.label_names == ["labels", "ids"]
    assert args.seed == 7 and args.learning_rate == 1e-4  # given on the command line: wins over the file
    assert args.max_length is None and args.eval_strategy == "epoch"  # untouched: our defaults


def test_push_uploads_the_folder_through_hfapi(trained, capsys):
    from unittest import mock

    with mock.patch("tokenskim.trainers.push.HfApi") as api_class:
        api_class.return_value.upload_folder.return_value = mock.Mock(commit_url="https://hf.co/me/tk/commit/1")
        assert cli.main(["push", str(trained), "--repo-id", "me/tk", "--private", "--token", "hf_x"]) == 0
    api_class.assert_called_once_with(token="hf_x")
    api = api_class.return_value
    api.create_repo.assert_called_once_with("me/tk", repo_type="model", private=True, exist_ok=True)
    upload = api.upload_folder.call_args.kwargs
    assert upload["repo_id"] == "me/tk" and upload["folder_path"] == str(trained) and upload["repo_type"] == "model"
    assert "checkpoint-*" in upload["ignore_patterns"]
    assert "https://hf.co/me/tk/commit/1" in capsys.readouterr().out


def test_the_saved_folder_works_in_a_pipeline_without_length_warnings(trained, capfd):
    import warnings

    from transformers import pipeline

    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        classify = pipeline("text-classification", model=str(trained), trust_remote_code=True, device="cpu")
        text = " ".join(["the"] * 125)  # 127 tokens with [CLS] and [SEP]: over the training length, within 128
        assert len(classify.tokenizer(text)["input_ids"]) == 127
        result = classify(text)
    assert result[0]["label"] in ("negative", "positive")
    logged = capfd.readouterr().err
    messages = [str(w.message) for w in caught] + [logged]
    assert not any("sequence length" in m or "indexing errors" in m or "> 32" in m for m in messages), messages
