"""`tokenskim bench` on extractive-QA checkpoints: the windows of SQuAD questions are the examples, every variant's
metric is SQuAD's EM/F1 post-processed as `tokenskim evaluate` does, the stock dense QA model reads the same
weights. Tiny random BERTs (a Block-Skim one whose random CNN skips blocks, a stock dense one) on a tiny SQuAD
file written by the tests; speed is never asserted."""

import argparse
import collections
import json
from pathlib import Path

import pytest
import torch
from test_bench import _one_thread  # noqa: F401  (autouse fixture)
from test_squad import vocabulary_words, write_squad
from test_trainer import save_tiny_checkpoint
from transformers import (AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer, BertForQuestionAnswering,
                          BertTokenizerFast)

from tokenskim.modeling import (BlockSkimBertForQuestionAnswering, LTPBertForQuestionAnswering,
                                TranskimmerBertForQuestionAnswering)
from tokenskim.trainers import cli, data, evaluate, squad
from tokenskim.trainers.bench.inputs import make_batches
from tokenskim.trainers.bench.passes import run_pass
from tokenskim.trainers.bench.qa import load_qa_bench_data
from tokenskim.trainers.bench.runner import benchmark
from tokenskim.trainers.bench.variants import load_variants

MAX_LENGTH, STRIDE = 32, 8  # what the tiny checkpoints say they were trained with


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = Path(save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bert")))
    BertTokenizerFast(vocab=str(path / "vocab.txt")).save_pretrained(path)  # knows the vocabulary's words
    return path


@pytest.fixture(scope="module")
def squad_file(tiny_dir, tmp_path_factory):
    return write_squad(tmp_path_factory.mktemp("squad") / "dev.json", vocabulary_words(str(tiny_dir)))


def save_qa_checkpoint(cls, tiny_dir, path, **config) -> str:
    """`tiny_dir`'s backbone under the QA class `cls` (a random QA head), with its tokenizer and training length."""
    torch.manual_seed(0)
    model = cls.from_pretrained(tiny_dir, **config)
    model.config.training_max_length, model.config.training_doc_stride = MAX_LENGTH, STRIDE
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def block_skim(tiny_dir, tmp_path_factory):
    # blocks of 8 tokens; tau 0.99: the random CNN's P(keep) falls below it for many blocks
    return save_qa_checkpoint(BlockSkimBertForQuestionAnswering, tiny_dir, tmp_path_factory.mktemp("qa") / "block-skim",
                              block_size=8, skim_threshold=0.99)


@pytest.fixture(scope="module")
def dense(tiny_dir, tmp_path_factory):
    return save_qa_checkpoint(BertForQuestionAnswering, tiny_dir, tmp_path_factory.mktemp("qa") / "dense")


def qa_flags(**overrides):
    """The flags `squad.add_arguments` gives (their defaults), as bench and evaluate read them."""
    parser = argparse.ArgumentParser()
    squad.add_arguments(parser)
    return argparse.Namespace(**{**vars(parser.parse_args([])), **overrides})


def evaluated(model, squad_file, tmp_path) -> dict:
    """`tokenskim evaluate` on the same questions (the article split's evaluation part)."""
    out = tmp_path / Path(model).name
    assert cli.main(["evaluate", "--model", model, "--task", "squad", "--validation-file", str(squad_file),
                     "--article-split", "0.4", "--output-dir", str(out)]) == 0
    return json.loads((out / "eval_results.json").read_text())


def test_bench_qa_runs_every_variant_and_scores_as_evaluate(block_skim, dense, squad_file, tmp_path):
    out = tmp_path / "bench"
    assert cli.main(["bench", "--model", block_skim, "--model", dense, "--task", "squad", "--validation-file",
                     str(squad_file), "--article-split", "0.4", "--batch-sizes", "1,4", "--variants",
                     "dense,dense_sorted,engine_off,skim", "--repeats", "1", "--warmup", "0", "--threads", "1",
                     "--no-memory", "--no-plots", "--no-progress", "--output-dir", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    records = {(Path(r["model"]).name, r["batch_size"], r["variant"]): r for r in report["records"]}
    assert sorted(records) == sorted([("block-skim", bs, v) for bs in (1, 4) for v in
                                      ("dense", "dense_sorted", "engine_off", "skim")] +
                                     [("dense", bs, v) for bs in (1, 4) for v in ("dense", "dense_sorted")])
    for model in (block_skim, dense):
        reference = evaluated(model, squad_file, tmp_path)
        name = Path(model).name
        as_saved = "skim" if name == "block-skim" else "dense"  # the variant that runs the checkpoint as evaluate does
        for (m, bs, variant), r in records.items():
            if m != name:
                continue
            # the model's training length and stride; the windows of all 8 evaluation questions
            assert (r["max_length"], r["doc_stride"], r["num_questions"]) == (MAX_LENGTH, STRIDE, 8)
            assert r["num_examples"] > 8 and r["metric_name"] == "f1"
            assert {"f1", "exact_match"} <= r["metric"].keys() and r["metric_value"] == r["metric"]["f1"]
            if variant == as_saved:
                for key in ("f1", "exact_match"):  # the answers evaluate post-processes, from the same model
                    assert r["metric"][key] == pytest.approx(reference[key]), (name, bs, variant, key)
                for key in ("kept_token_ratio", "flops_ratio"):
                    assert r[key] == pytest.approx(reference[key]), (name, bs, variant, key)
            if variant in ("dense_sorted", "engine_off"):  # stock computation: the logits of dense
                assert r["max_abs_logit_diff_vs_dense"] < 1e-5 and r["prediction_agreement_vs_dense"] == 1.0
                assert r["metric"] == pytest.approx(records[(m, bs, "dense")]["metric"])
            if variant != "skim":
                assert r["flops_ratio"] == pytest.approx(1.0) and r["kept_token_ratio"] == 1.0
    skim = [r for r in report["records"] if r["variant"] == "skim"]
    assert all(r["kept_token_ratio"] < 0.9 and r["flops_ratio"] > 1.1 for r in skim)  # blocks were skipped
    assert skim[0]["kept_token_ratio"] == skim[1]["kept_token_ratio"]  # batching does not change decisions
    assert "windows of 8 questions: 32 tokens, stride 8" in (out / "bench.md").read_text()


def test_max_examples_takes_whole_questions_and_scores_them_as_evaluate(block_skim, squad_file):
    tokenizer = AutoTokenizer.from_pretrained(block_skim)
    questions = data.load_task("squad", validation_file=squad_file, splits=("validation",))[0]["validation"]
    windows_of = squad.featurize({"validation": questions}, tokenizer, MAX_LENGTH, STRIDE)["validation"]
    count = collections.Counter(windows_of["example_id"])
    for budget in (1, 15):
        qa = load_qa_bench_data("squad", qa_flags(), max_windows=budget, seed=3, validation_file=str(squad_file))
        assert list(qa.questions["id"]) == list(questions.shuffle(seed=3)["id"])  # seeded as classification rows are
        report = benchmark([block_skim], qa, [4], variants=("skim",), repeats=1, warmup=0, memory=False,
                           progress=False, log=None)
        (record,) = report["records"]
        chosen = qa.questions.select(range(record["num_questions"]))
        windows = sum(count[q] for q in chosen["id"])
        assert record["num_examples"] == windows  # every window of each chosen question, no other
        if budget == 1:  # a question with more windows than the budget: the first question alone
            assert record["num_questions"] == 1 and windows > 1
        else:  # the longest run of questions within the budget
            assert windows <= budget < windows + count[qa.questions["id"][record["num_questions"]]]
        model = AutoModelForQuestionAnswering.from_pretrained(block_skim).eval()
        spec = data.get_task("squad")
        reference = evaluate.evaluate_model(model, tokenizer, chosen, spec, batch_size=32, max_length=MAX_LENGTH,
                                            qa_options=squad.QAOptions(doc_stride=STRIDE))
        for key in ("f1", "exact_match"):
            assert record["metric"][key] == pytest.approx(reference[key]), (budget, key)
        for key in ("kept_token_ratio", "flops_ratio"):
            assert record[key] == pytest.approx(reference[key]), (budget, key)


def test_squad_v2_scores_unanswerable_questions_as_evaluate(block_skim, tiny_dir, tmp_path):
    path = write_squad(tmp_path / "v2.json", vocabulary_words(str(tiny_dir)), articles=2, version_2=True)
    qa = load_qa_bench_data("squad_v2", qa_flags(), validation_file=str(path))
    report = benchmark([block_skim], qa, [4], variants=("skim",), repeats=1, warmup=0, memory=False, progress=False,
                       log=None)
    (record,) = report["records"]
    model = AutoModelForQuestionAnswering.from_pretrained(block_skim).eval()
    reference = evaluate.evaluate_model(model, AutoTokenizer.from_pretrained(block_skim), qa.questions,
                                        data.get_task("squad_v2"), max_length=MAX_LENGTH,
                                        qa_options=squad.QAOptions(doc_stride=STRIDE))
    assert record["num_questions"] == 12 and record["metric"]["NoAns_total"] == 4
    for key in ("f1", "exact_match", "HasAns_f1", "NoAns_f1"):
        assert record["metric"][key] == pytest.approx(reference[key]), key


@pytest.mark.parametrize("cls,config", [
    (BlockSkimBertForQuestionAnswering, {"block_size": 8}),
    (TranskimmerBertForQuestionAnswering, {}),
    (LTPBertForQuestionAnswering, {}),
])
def test_every_qa_family_gives_a_stock_dense_variant_with_its_weights(cls, config, tiny_dir, squad_file, tmp_path):
    folder = save_qa_checkpoint(cls, tiny_dir, tmp_path / cls.__name__, **config)
    models, info = load_variants(folder, head=data.QUESTION_ANSWERING)
    assert type(models["dense"]) is BertForQuestionAnswering and info["dense_load"]["missing_keys"] == []
    assert all(".selector." in k for k in info["dense_load"]["unexpected_keys"])
    assert type(models["skim"]) is cls and models["engine_off"].skim_model.skim_enabled is False
    qa = load_qa_bench_data("squad", qa_flags(), validation_file=str(squad_file))
    examples = qa.encode(AutoTokenizer.from_pretrained(folder), AutoConfig.from_pretrained(folder), MAX_LENGTH)
    batches = make_batches(examples.features, 8, pad_token_id=0)
    n = len(examples.features)
    dense_pass, off_pass = (run_pass(models[k], batches, n) for k in ("dense", "engine_off"))
    assert dense_pass.logits.shape == (n, MAX_LENGTH, 2)
    assert torch.allclose(off_pass.logits, dense_pass.logits, atol=1e-5)  # decisions off: the stock model
    assert examples.score(off_pass) == examples.score(dense_pass)


@pytest.mark.parametrize("argv,match", [
    (["--task", "sst2"], "the model answers questions"),
    (["--task", "squad", "--equal-lengths"], "QA windows keep their offsets whole"),
])
def test_bench_qa_usage_errors(block_skim, squad_file, tmp_path, argv, match, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--model", block_skim, "--validation-file", str(squad_file), "--output-dir", str(tmp_path),
                  *argv])
    assert exit_.value.code == 2 and match in capsys.readouterr().err


def test_bench_rejects_a_classification_model_on_squad(tiny_dir, squad_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--model", str(tiny_dir), "--task", "squad", "--validation-file", str(squad_file),
                  "--output-dir", str(tmp_path)])
    assert exit_.value.code == 2 and "no question-answering head" in capsys.readouterr().err
