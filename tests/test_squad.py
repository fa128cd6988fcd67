"""Extractive QA through the common pipeline: SQuAD reading and the split by article, windowed features (offsets,
stride, answers at window edges), post-processing to text answers, the official EM/F1 against hand-computed
values, and `tokenskim train --task squad` (dense, Transkimmer, Block-Skim) then `tokenskim evaluate` / `explain`
on a tiny random BERT and a tiny SQuAD file written here."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from test_trainer import save_tiny_checkpoint
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, BertTokenizerFast

from tokenskim.trainers import cli, data, metrics, records, squad
from tokenskim.trainers import explain as ex

# ----------------------------------------------------------------------------------------------------
# Fixtures: a tiny BERT whose vocabulary holds the fixture's words, and SQuAD files in the official layout


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = Path(save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-qa-bert")))
    # A tokenizer that knows the vocabulary file's words (under transformers 5, `vocab_file=` alone is not read)
    BertTokenizerFast(vocab=str(path / "vocab.txt")).save_pretrained(path)
    return str(path)


def vocabulary_words(tiny_dir) -> list:
    """Words of the tiny vocabulary that tokenize to themselves (one token each)."""
    words = (Path(tiny_dir) / "vocab.txt").read_text().split()
    return [w for w in words[5:] if w.isalpha() and w not in ("a", "an", "the")]


def write_squad(path, words, articles=5, version_2=False, seed=0) -> Path:
    """A SQuAD-format file: `articles` x 2 paragraphs of 25-45 words, 2 answerable questions each (answers of
    1-3 words at random places), and with `version_2` one unanswerable question per paragraph."""
    rng = random.Random(seed)
    out = []
    for a in range(articles):
        paragraphs = []
        for p in range(2):
            tokens = [rng.choice(words) for _ in range(rng.randint(25, 45))]
            context = " ".join(tokens)
            qas = []
            for q in range(2):
                i, n = rng.randrange(len(tokens) - 3), rng.randint(1, 3)
                text = " ".join(tokens[i : i + n])
                start = len(" ".join(tokens[:i])) + (1 if i else 0)
                qas.append({"id": f"{a}-{p}-{q}", "question": f" what {tokens[i]} is", "answers": [{"text": text, "answer_start": start}]})
            if version_2:
                qas.append({"id": f"{a}-{p}-x", "question": "who", "answers": [], "is_impossible": True,
                            "plausible_answers": [{"text": tokens[0], "answer_start": 0}]})
            paragraphs.append({"context": context, "qas": qas})
        out.append({"title": f"article {a}", "paragraphs": paragraphs})
    Path(path).write_text(json.dumps({"version": "v2.0" if version_2 else "1.1", "data": out}))
    return Path(path)


@pytest.fixture(scope="module")
def squad_file(tiny_dir, tmp_path_factory):
    return write_squad(tmp_path_factory.mktemp("squad") / "dev.json", vocabulary_words(tiny_dir))


# ----------------------------------------------------------------------------------------------------
# Reading and the split by article


def test_read_squad_file_flattens_articles_and_marks_unanswerable_questions(tiny_dir, tmp_path):
    path = write_squad(tmp_path / "v2.json", vocabulary_words(tiny_dir), articles=2, version_2=True)
    ds = squad.read_squad_file(path)
    raw = json.loads(path.read_text())["data"]
    assert ds.num_rows == 2 * 2 * 3 and ds.column_names == list(squad.COLUMNS)
    first = raw[0]["paragraphs"][0]
    row = ds[0]
    assert (row["id"], row["title"], row["context"]) == ("0-0-0", "article 0", first["context"])
    assert row["answers"] == {"text": [first["qas"][0]["answers"][0]["text"]],
                              "answer_start": [first["qas"][0]["answers"][0]["answer_start"]]}
    assert ds[2]["id"] == "0-0-x" and ds[2]["answers"] == {"text": [], "answer_start": []}
    (tmp_path / "flat.json").write_text(json.dumps([{"question": "q"}]))
    with pytest.raises(ValueError, match="not in SQuAD format"):
        squad.read_squad_file(tmp_path / "flat.json")


def old_split_articles(articles, eval_fraction=0.2, seed=0):
    """The split of the former trainers/qa.py, which produced results/blockskim_squad/ (the reference)."""
    order = list(range(len(articles)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(articles) * eval_fraction))
    return [articles[i] for i in order[n_eval:]], [articles[i] for i in order[:n_eval]]


@pytest.mark.parametrize("fraction,seed", [(0.2, 0), (0.4, 3)])
def test_split_by_article_is_the_former_split(squad_file, fraction, seed):
    articles = json.loads(squad_file.read_text())["data"]
    train, validation = squad.split_by_article(squad.read_squad_file(squad_file), fraction, seed)
    old_train, old_eval = old_split_articles(articles, fraction, seed)
    assert sorted(set(validation["title"])) == sorted(a["title"] for a in old_eval)
    assert sorted(set(train["title"])) == sorted(a["title"] for a in old_train)
    assert train.num_rows + validation.num_rows == 5 * 2 * 2
    assert not set(train["context"]) & set(validation["context"])


def test_article_split_of_the_local_dev_file_is_the_reported_one():
    path = (data.default_data_dir() or Path("/nonexistent")) / "squad" / "dev-v1.1.json"
    if not path.is_file():
        pytest.skip("the local SQuAD v1.1 dev file is not here")
    train, validation = squad.split_by_article(squad.read_squad_file(path), 0.2, 0)
    assert set(validation["title"]) == {  # results/blockskim_squad/README.md
        "Warsaw", "Economic_inequality", "Yuan_dynasty", "Super_Bowl_50", "Black_Death", "Victoria_and_Albert_Museum",
        "Apollo_program", "Oxygen", "Southern_California", "Civil_disobedience"}
    assert (train.num_rows, validation.num_rows) == (7719, 2851)


def test_load_task_reads_squad_from_files_the_data_dir_and_the_article_split(squad_file, tmp_path):
    raw, spec = data.load_task("squad", validation_file=squad_file, article_split=(0.4, 0))
    assert spec.is_qa and spec.num_labels == 2 and not spec.is_regression
    assert (raw["train"].num_rows, raw["validation"].num_rows) == (12, 8)
    raw, _ = data.load_task("squad", train_file=squad_file, validation_file=squad_file)
    assert raw["train"].num_rows == raw["validation"].num_rows == 20
    (tmp_path / "squad").mkdir()
    (tmp_path / "squad" / "dev-v2.0.json").write_text(squad_file.read_text())
    raw, spec = data.load_task("squad_v2", data_dir=tmp_path, splits=("validation",))
    assert spec.name == "squad_v2" and raw["validation"].num_rows == 20
    with pytest.raises(FileNotFoundError, match="--article-split"):
        data.load_task("squad_v2", data_dir=tmp_path)
    raw, _ = data.load_task("squad_v2", data_dir=tmp_path, article_split=(0.2, 0))  # the local dev file, split
    assert raw["validation"].num_rows == 4
    with pytest.raises(ValueError, match="--task squad or squad_v2"):
        data.load_task("sst2", validation_file=squad_file, article_split=(0.2, 0))
    with pytest.raises(ValueError, match="drop --train-file"):
        data.load_task("squad", train_file=squad_file, validation_file=squad_file, article_split=(0.2, 0))
    assert squad.parse_article_split("0.2") == (0.2, 0) and squad.parse_article_split("0.25:7") == (0.25, 7)
    with pytest.raises(ValueError, match="between 0 and 1"):
        squad.parse_article_split("1.5")


# ----------------------------------------------------------------------------------------------------
# Features


def test_answer_positions_inside_across_and_outside_a_window():
    # context "ab cd ef": tokens [CLS] q [SEP] ab cd ef [SEP] -> offsets None outside the context
    offsets = [None, None, None, (0, 2), (3, 5), (6, 8), None]
    answer = lambda text, start: {"text": [text], "answer_start": [start]}  # noqa: E731
    assert squad.answer_positions(offsets, answer("cd", 3)) == (4, 4)
    assert squad.answer_positions(offsets, answer("ef", 6)) == (5, 5)  # the window's last context token
    assert squad.answer_positions(offsets, answer("d ef", 4)) == (4, 5)  # starts inside a token
    assert squad.answer_positions(offsets, answer("ef gh", 6)) == (0, 0)  # runs past the window: CLS
    assert squad.answer_positions(offsets[:4] + [None] * 3, answer("cd", 3)) == (0, 0)  # not in this window
    assert squad.answer_positions(offsets, {"text": [], "answer_start": []}) == (0, 0)  # unanswerable


def test_features_windows_overlap_by_the_stride_and_place_answers_at_window_edges(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    words = vocabulary_words(tiny_dir)[:40]  # 40 distinct one-token words: word i is context token i
    context = " ".join(words)
    start_of = lambda i: len(" ".join(words[:i])) + (1 if i else 0)  # noqa: E731
    span = lambda i, j: {"text": [" ".join(words[i : j + 1])], "answer_start": [start_of(i)]}  # noqa: E731
    question = " ".join(words[:3])  # 3 tokens: [CLS] + 3 + [SEP] = 5 tokens before the context
    # max length 24: 18 context tokens per window; stride 6: windows start at words 0, 12, 24
    answers = {"edge": span(17, 17), "across": span(16, 19), "start": span(12, 13)}
    rows = {"id": list(answers), "question": [question] * 3, "context": [context] * 3, "answers": list(answers.values())}
    f = squad.encode_features(rows, tokenizer, max_length=24, doc_stride=6, with_metadata=True)
    assert f["example_id"] == [k for k in answers for _ in range(3)]
    first_word = [0, 12, 24]
    for i, ids in enumerate(f["input_ids"]):
        window = i % 3
        n = min(18, 40 - first_word[window])
        assert len(ids) == 5 + n + 1
        expected = [None] * 5 + [(start_of(w), start_of(w) + len(words[w])) for w in range(first_word[window], first_word[window] + n)] + [None]
        assert f["offset_mapping"][i] == expected
        assert tokenizer.convert_ids_to_tokens(ids[5:-1]) == words[first_word[window] : first_word[window] + n]
    expected_positions = {  # 5 + (word - the window's first word), or CLS when the window does not hold it whole
        "edge": [(22, 22), (10, 10), (0, 0)],
        "across": [(0, 0), (9, 12), (0, 0)],
        "start": [(17, 18), (5, 6), (0, 0)],
    }
    positions = list(zip(f["start_positions"], f["end_positions"]))
    assert positions == [p for k in answers for p in expected_positions[k]]


def test_featurize_keeps_metadata_for_evaluation_only_and_checks_the_stride(squad_file, tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    raw, _ = data.load_task("squad", validation_file=squad_file, article_split=(0.4, 0))
    features = squad.featurize(raw, tokenizer, max_length=32, doc_stride=8)
    assert "example_id" not in features["train"].column_names
    assert {"example_id", "offset_mapping", "start_positions"} <= set(features["validation"].column_names)
    assert features["validation"].num_rows > raw["validation"].num_rows  # long contexts made several windows
    with pytest.raises(ValueError, match="--doc-stride 32 must be below"):
        squad.featurize(raw, tokenizer, max_length=32, doc_stride=32)


# ----------------------------------------------------------------------------------------------------
# Post-processing


def test_skipped_sentinel_is_finite_in_float16_and_above_every_dtype_minimum():
    assert np.isfinite(np.float16(squad.SKIPPED_LOGIT))
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        assert torch.finfo(dtype).min <= squad.SKIPPED_LOGIT


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_best_span_takes_context_positions_the_model_did_not_skip(dtype):
    offsets = [None, None, (0, 2), (3, 5), (6, 8), (9, 11), None]
    low = np.finfo(dtype).min  # what Block-Skim writes at skipped positions
    start = np.array([9, 0, 1, 5, 2, low, 0], dtype=dtype)  # CLS is best but not context; position 5 skipped
    end = np.array([9, 0, 0, 1, 4.5, low, 8], dtype=dtype)  # position 6 is [SEP]
    assert squad.best_span(start, end, offsets) == (9.5, 3, 4)  # 5 + 4.5
    assert squad.best_span(start, end, offsets, max_answer_length=1) == (6.5, 4, 4)  # 2 + 4.5 beats 5 + 1 and 1 + 0
    assert squad.best_span(start, end, offsets, n_best_size=1) == (9.5, 3, 4)
    assert squad.best_span(start, end, offsets, n_best_size=1, max_answer_length=1) is None  # (3, 4) is too long
    end_before = np.array([0, 0, 7, 0, 0, 0, 0], dtype=dtype)  # the best end precedes every good start
    assert squad.best_span(start, end_before, offsets) == (8.0, 2, 2)  # 1 + 7
    padded = np.concatenate([start, np.full(3, -100, dtype=dtype)])  # Trainer pads batches with -100
    assert squad.best_span(padded, np.concatenate([end, np.zeros(3, dtype=dtype)]), offsets) == (9.5, 3, 4)
    all_skipped = np.array([1, 1, low, low, low, low, 0], dtype=dtype)
    assert squad.best_span(all_skipped, all_skipped, offsets) is None


def test_postprocess_takes_the_best_window_and_the_no_answer_threshold():
    context = "one two three four"
    examples = {"id": ["q"], "context": [context]}
    # two windows of the same question: [CLS] x [SEP] one two [SEP] and [CLS] x [SEP] three four [SEP]
    features = {"example_id": ["q", "q"], "offset_mapping": [
        [None, None, None, (0, 3), (4, 7), None], [None, None, None, (8, 13), (14, 18), None]]}
    start = np.array([[2.0, 0, 0, 1.0, 0, 0], [1.0, 0, 0, 0, 3.0, 0]])
    end = np.array([[2.0, 0, 0, 0, 1.5, 0], [2.0, 0, 0, 0, 1.0, 0]])
    # window 1: "one two" 1 + 1.5 = 2.5; window 2: "four" 3 + 1 = 4; null scores 4 and 3, the lowest 3
    assert squad.postprocess(examples, features, start, end) == {"q": "four"}
    assert squad.postprocess(examples, features, start, end, version_2=True) == {"q": "four"}  # 3 - 4 < 0
    loose = squad.QAOptions(null_score_diff_threshold=-1.5)  # "no answer" once null - best > -1.5: 3 - 4 is
    assert squad.postprocess(examples, features, start, end, version_2=True, options=loose) == {"q": ""}
    middle = squad.QAOptions(null_score_diff_threshold=-0.5)  # the lowest null score counts: 3 - 4 < -0.5 < 4 - 4
    assert squad.postprocess(examples, features, start, end, version_2=True, options=middle) == {"q": "four"}
    short = squad.QAOptions(max_answer_length=1)
    assert squad.postprocess(examples, features, start, np.array([[2.0, 0, 0, 0, 1.5, 0], [2.0, 0, 0, 0, 0, 0]]),
                             options=short) == {"q": "four"}


# ----------------------------------------------------------------------------------------------------
# Official SQuAD metrics, against hand-computed values


def test_normalize_answer_as_the_official_script():
    assert metrics.normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert metrics.normalize_answer("an apple, a pear") == "apple pear"
    assert metrics.normalize_answer("Theory") == "theory"  # articles only as whole words


def test_squad_v1_exact_match_and_f1():
    references = {"a": ["Denver Broncos"], "b": ["the Broncos", "Carolina Panthers won"], "c": ["x"]}
    predictions = {"a": "the Denver Broncos", "b": "Broncos win"}  # "c" has none: it scores 0
    # a: EM 1, F1 1; b: EM 0, F1 max(P 1/2 R 1 -> 2/3, 0) = 2/3; c: 0 and 0
    scores = metrics.squad_v1(predictions, references)
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    assert metrics.answer_f1("", "the") == 0.0 and metrics.answer_exact_match("", "the") == 1.0  # v1.1: F1 0


def test_squad_v2_exact_match_f1_and_the_answerable_groups():
    references = {"a": ["Denver Broncos"], "n": [], "m": [], "t": ["The"]}
    predictions = {"a": "Denver", "n": "", "m": "something", "t": ""}
    # a: EM 0, F1 2/3 (P 1, R 1/2); n: 1, 1; m: 0, 0; t: "The" normalises to nothing -> compared with "": 1, 1
    scores = metrics.squad_v2(predictions, references)
    assert scores["exact_match"] == pytest.approx(100 * 2 / 4)
    assert scores["f1"] == pytest.approx(100 * (2 / 3 + 1 + 0 + 1) / 4)
    assert scores["HasAns_total"] == 2 and scores["NoAns_total"] == 2
    assert scores["HasAns_exact_match"] == pytest.approx(50) and scores["HasAns_f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert scores["NoAns_exact_match"] == pytest.approx(50) and scores["NoAns_f1"] == pytest.approx(50)
    assert "NoAns_f1" not in metrics.squad_v2({"a": "x"}, {"a": ["x"]})  # no unanswerable question: no group


# ----------------------------------------------------------------------------------------------------
# tokenskim train / evaluate / explain


FAST = ["--max-length", "32", "--doc-stride", "8", "--per-device-train-batch-size", "8", "--per-device-eval-batch-size",
        "8", "--max-steps", "4", "--learning-rate", "1e-3", "--disable-tqdm", "true", "--use-cpu", "true", "--seed", "0"]
METHOD_FLAGS = {"dense": [], "transkimmer": ["--skim-coefficient", "0.3"],
                # blocks of 8 tokens; tau 0.99: the barely trained CNN skips blocks at evaluation
                "block-skim": ["--block-size", "8", "--skim-threshold", "0.99"],
                # the staged QA path: finetune, soft-pruning, hard-pruning (--max-steps each), the last copied to out/
                "ltp": ["--final-threshold", "0.05"]}


@pytest.fixture(scope="module")
def trained(tiny_dir, squad_file, tmp_path_factory):
    """method -> the output folder of `tokenskim train --task squad` on the article split of the tiny file."""
    runs = {}
    for method, flags in METHOD_FLAGS.items():
        out = tmp_path_factory.mktemp("qa-run") / method
        argv = ["train", "--method", method, "--model", tiny_dir, "--task", "squad", "--validation-file", str(squad_file),
                "--article-split", "0.4", "--output-dir", str(out), *FAST, *flags]
        assert cli.main(argv) == 0
        runs[method] = out
    return runs


def reference_scores(folder, squad_file) -> dict:
    """EM/F1 with every window run alone (no padding, no Trainer), post-processed and scored: the reference the
    pipeline's batched evaluation must match."""
    model = AutoModelForQuestionAnswering.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    raw, _ = data.load_task("squad", validation_file=squad_file, article_split=(0.4, 0), splits=("validation",))
    features = squad.featurize(raw, tokenizer, max_length=32, doc_stride=8)["validation"]
    starts, ends = [], []
    with torch.no_grad():
        for f in features:
            out = model(input_ids=torch.tensor([f["input_ids"]]), token_type_ids=torch.tensor([f["token_type_ids"]]))
            starts.append(out.start_logits[0].numpy())
            ends.append(out.end_logits[0].numpy())
    predicted = squad.postprocess(raw["validation"], features, starts, ends)
    return metrics.squad_v1(predicted, squad.references(raw["validation"]))


@pytest.mark.parametrize("method", list(METHOD_FLAGS))
def test_train_squad_writes_a_hub_folder_whose_scores_match_a_reference(trained, squad_file, method):
    out = trained[method]
    config = json.loads((out / "config.json").read_text())
    assert "QuestionAnswering" in config["architectures"][0]
    assert config["training_max_length"] == 32 and config["training_doc_stride"] == 8
    if method != "dense":
        assert "AutoModelForQuestionAnswering" in config["auto_map"]
    results = json.loads((out / "eval_results.json").read_text(), parse_constant=not_json)
    assert results["task"] == "squad" and results["method"] == method and results["num_examples"] == 8
    assert results["doc_stride"] == 8
    reference = reference_scores(out, squad_file)
    assert results["f1"] == pytest.approx(reference["f1"]) and results["exact_match"] == pytest.approx(reference["exact_match"])
    if method == "block-skim":
        assert results["kept_token_ratio"] < 1.0  # blocks were skipped, and the scores still match
    card = (out / "README.md").read_text()
    assert "pipeline_tag: question-answering" in card and f"| f1 | {results['f1']:.4f} |" in card
    assert f"tokenskim train --method {method}" in card and "--article-split 0.4" in card
    assert "$" not in card.split("```bash")[0]  # every placeholder filled


def not_json(constant):
    raise AssertionError(f"the file holds {constant}, which is not JSON")


def test_results_stay_json_when_the_evaluation_loss_is_infinite(tmp_path):
    # a QA model that skipped a reference answer's position gives it the lowest logit: an infinite loss
    path = records.write_results(tmp_path, {"loss": float("inf"), "f1": 50.0})
    assert json.loads(path.read_text(), parse_constant=not_json) == {"loss": None, "f1": 50.0}


def test_evaluate_reproduces_the_training_evaluation(trained, squad_file, tmp_path):
    folder = trained["block-skim"]
    assert cli.main(["evaluate", "--model", str(folder), "--task", "squad", "--validation-file", str(squad_file),
                     "--article-split", "0.4", "--output-dir", str(tmp_path)]) == 0  # stride and length: the model's
    evaluated = json.loads((tmp_path / "eval_results.json").read_text())
    trained_record = json.loads((folder / "eval_results.json").read_text())
    for key in ("f1", "exact_match", "kept_token_ratio", "flops_ratio"):
        assert evaluated[key] == pytest.approx(trained_record[key]), key
    assert (evaluated["max_length"], evaluated["doc_stride"]) == (32, 8)


def test_explain_shows_the_blocks_a_qa_model_skipped(trained, squad_file, tmp_path):
    paragraph = json.loads(squad_file.read_text())["data"][0]["paragraphs"][0]
    question, context = paragraph["qas"][0]["question"], paragraph["context"]
    res = ex.explain(str(trained["block-skim"]), [question], [context], output_dir=str(tmp_path))
    e = res["explanations"][0]
    assert e.label in context and e.probability is None
    skipped = [i for i, stage in enumerate(e.drop_stage) if stage != "kept"]
    assert skipped and min(skipped) >= 8  # the first block of 8 holds the question: never skipped
    for block in {i // 8 for i in skipped}:  # whole blocks leave together, after the skim layer's attention
        members = range(8 * block, min(8 * block + 8, len(e.tokens)))
        assert {(e.drop_stage[i], e.drop_layer[i]) for i in members} == {(ex.AFTER, e.drop_layer[8 * block])}
    with pytest.raises(ValueError, match="needs a context"):
        ex.explain(str(trained["block-skim"]), [question], output_dir=str(tmp_path))


@pytest.mark.parametrize("argv,match", [
    (["--method", "early-exit", "--task", "squad"], "--method early-exit has no question-answering head"),
    (["--method", "block-skim", "--task", "sst2"], "--method block-skim has no sequence-classification head"),
])
def test_methods_without_the_tasks_head_fail_clearly(tiny_dir, tmp_path, argv, match, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--model", tiny_dir, "--output-dir", str(tmp_path), *argv])
    assert exit_.value.code == 2 and match in capsys.readouterr().err


def test_evaluate_rejects_a_classification_model_on_squad(tiny_dir, squad_file, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["evaluate", "--model", tiny_dir, "--task", "squad", "--validation-file", str(squad_file)])
    assert exit_.value.code == 2 and "no question-answering head" in capsys.readouterr().err
