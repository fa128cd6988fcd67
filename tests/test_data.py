"""Data loading: the shared-data layout (GLUE TSV quirks, headerless CoLA, MRPC's BOM, STS-B regression,
MNLI jsonl, AG News' seeded split), the user's own files, tokenization, dynamic padding, clear errors."""

import json
from pathlib import Path

import pytest
from transformers import BertTokenizerFast

from tokenskim.trainers import data

SHARED = data.default_data_dir()
needs_shared = pytest.mark.skipif(SHARED is None or not (SHARED / "glue").is_dir(), reason="../shared/data not present")


def write(path: Path, text: str, encoding="utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


@pytest.fixture
def fake_data(tmp_path):
    """A miniature ../shared/data with each format quirk."""
    root = tmp_path / "data"
    # QNLI-like stray quotes: with csv quoting on, rows 1 and 2 would merge.
    write(root / "glue/RTE/train.tsv", 'index\tsentence1\tsentence2\tlabel\n0\t"He said so\tNo.\tentailment\n'
          '1\tA "quoted" word\tB\tnot_entailment\n2\tC\tD"\tentailment\n')
    write(root / "glue/RTE/dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\tx\ty\tnot_entailment\n")
    write(root / "glue/CoLA/train.tsv", "gj04\t1\t\tThe sailors rode.\ngj04\t0\t*\tRode sailors the.\n")
    write(root / "glue/CoLA/dev.tsv", "gj04\t1\t\tnull\n")  # "null" is a sentence, not a missing value
    mrpc = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said \"hi.\tHe said hi.\n0\t3\t4\tA\tB\n"
    write(root / "glue/MRPC/train.tsv", "\ufeff" + mrpc)
    write(root / "glue/MRPC/dev.tsv", "\ufeff" + mrpc)
    stsb = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    write(root / "glue/STS-B/train.tsv", stsb + "0\tg\tf\ty\t0\tn\tn\tA man.\tA guy.\t4.250\n1\tg\tf\ty\t1\tn\tn\tX\tY\t0.000\n")
    write(root / "glue/STS-B/dev.tsv", stsb + "0\tg\tf\ty\t0\tn\tn\tA\tB\t2.500\n")
    rows = [{"premise": "p", "hypothesis": "h", "label": lab} for lab in ("neutral", "entailment", "contradiction")]
    write(root / "glue/MNLI/dev_matched.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    ag = "".join(f'"{1 + i % 4}","Title {i}","Body, with a comma {i}"\n' for i in range(40))
    write(root / "ag_news/test.csv", ag)
    return root


def test_glue_tsv_is_read_with_quoting_off(fake_data):
    raw, spec = data.load_task("rte", data_dir=fake_data)
    assert raw["train"].num_rows == 3
    assert raw["train"]["sentence1"] == ['"He said so', 'A "quoted" word', "C"]
    assert raw["train"]["sentence2"][2] == 'D"'
    assert spec.labels == ("entailment", "not_entailment")


def test_cola_has_no_header_and_keeps_literal_null(fake_data):
    raw, spec = data.load_task("cola", data_dir=fake_data)
    assert raw["train"]["sentence"] == ["The sailors rode.", "Rode sailors the."]
    assert raw["train"]["label"] == [1, 0]
    assert raw["validation"]["sentence"] == ["null"]
    assert spec.text_columns == ("sentence",)


def test_mrpc_bom_is_stripped(fake_data):
    raw, spec = data.load_task("mrpc", data_dir=fake_data)
    assert "Quality" in raw["train"].column_names
    assert raw["train"]["#1 String"][0] == 'He said "hi.'
    assert spec.text_columns == ("#1 String", "#2 String")


def test_stsb_is_regression(fake_data, tiny_tokenizer):
    raw, spec = data.load_task("stsb", data_dir=fake_data)
    assert spec.is_regression and spec.num_labels == 1 and spec.id2label is None
    tokenized = data.tokenize(raw, tiny_tokenizer, spec)
    assert tokenized["train"]["labels"] == [4.25, 0.0]


def test_mnli_matched_dev_from_jsonl_and_no_local_train(fake_data, tiny_tokenizer):
    raw, spec = data.load_task("mnli", data_dir=fake_data, splits=("validation",))
    tokenized = data.tokenize(raw, tiny_tokenizer, spec)
    assert tokenized["validation"]["labels"] == [1, 0, 2]  # entailment, neutral, contradiction (GLUE order)
    with pytest.raises(FileNotFoundError, match="no local train split"):
        data.load_task("mnli", data_dir=fake_data)


def test_ag_news_seeded_split_of_its_test_file(fake_data, tiny_tokenizer):
    raw, spec = data.load_task("ag_news", data_dir=fake_data)
    again, _ = data.load_task("ag_news", data_dir=fake_data)
    assert (raw["train"].num_rows, raw["validation"].num_rows) == (32, 8)
    assert raw["validation"]["title"] == again["validation"]["title"]  # fixed seed
    assert not set(raw["train"]["title"]) & set(raw["validation"]["title"])
    labels = data.tokenize(raw, tiny_tokenizer, spec)["train"]["labels"]
    assert set(labels) == {0, 1, 2, 3}  # classes 1-4 -> ids 0-3
    assert spec.id2label[0] == "World"


def test_unknown_task_missing_dir_and_missing_file(fake_data, tmp_path):
    with pytest.raises(ValueError, match="unknown task 'sst5'.*known tasks: cola, sst2"):
        data.get_task("sst5")
    with pytest.raises(FileNotFoundError, match="data directory not found"):
        data.load_task("rte", data_dir=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="data file not found: .*SST-2/train.tsv"):
        data.load_task("sst2", data_dir=fake_data)
    with pytest.raises(FileNotFoundError, match="data file not found"):
        data.load_task(train_file=tmp_path / "missing.csv", validation_file=tmp_path / "missing.csv")


def test_aliases():
    assert data.get_task("SST-2").name == "sst2"
    assert data.get_task("STS-B").name == "stsb"


def test_default_data_dir_env_override_and_offline_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENSKIM_DATA_DIR", str(tmp_path))
    assert data.default_data_dir() == tmp_path
    monkeypatch.setattr(data, "default_data_dir", lambda: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="no local data: pass --data-dir"):
        data.load_task("sst2")


def test_known_task_falls_back_to_the_hub_when_online(monkeypatch):
    calls = []
    monkeypatch.setattr(data, "default_data_dir", lambda: None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(data.datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or
                        data.datasets.Dataset.from_dict({"sentence": ["a"], "label": [1]}))
    raw, spec = data.load_task("sst2")
    assert calls == [(("nyu-mll/glue", "sst2"), {"split": "train"}), (("nyu-mll/glue", "sst2"), {"split": "validation"})]
    assert raw["validation"].num_rows == 1


def test_hub_glue_copies_are_renamed_and_their_class_ids_accepted(monkeypatch, tiny_tokenizer):
    monkeypatch.setattr(data, "default_data_dir", lambda: None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    hub_mrpc = {"sentence1": ["a"], "sentence2": ["b"], "label": [1], "idx": [0]}
    monkeypatch.setattr(data.datasets, "load_dataset", lambda *a, **k: data.datasets.Dataset.from_dict(hub_mrpc))
    raw, spec = data.load_task("mrpc")
    assert {"#1 String", "#2 String", "Quality"} <= set(raw["train"].column_names)
    hub_rte = {"sentence1": ["a", "c"], "sentence2": ["b", "d"], "label": [1, 0], "idx": [0, 1]}
    monkeypatch.setattr(data.datasets, "load_dataset", lambda *a, **k: data.datasets.Dataset.from_dict(hub_rte))
    raw, spec = data.load_task("rte")
    assert data.tokenize(raw, tiny_tokenizer, spec)["train"]["labels"] == [1, 0]  # ids kept; names map the same


def test_hub_dataset_name_with_its_own_validation_split(monkeypatch):
    calls = []
    monkeypatch.setattr(data.datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or
                        data.datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}))
    raw, spec = data.load_task(dataset_name="stanfordnlp/imdb", validation_split="test")
    assert [k["split"] for _, k in calls] == ["train", "test"]
    assert spec.labels == (0, 1) and spec.text_columns == ("text",)


# ----------------------------------------------------------------------------------------------------
# The user's own files


def test_custom_csv_with_string_labels(tmp_path, tiny_tokenizer):
    write(tmp_path / "train.csv", 'review,stars\n"great, really",good\nawful,bad\nok,good\n')
    write(tmp_path / "dev.csv", "review,stars\nfine,good\n")
    raw, spec = data.load_task(train_file=tmp_path / "train.csv", validation_file=tmp_path / "dev.csv",
                               text_columns=("review",), label_column="stars")
    assert spec.labels == ("bad", "good") and spec.name == "custom"
    tokenized = data.tokenize(raw, tiny_tokenizer, spec)
    assert tokenized["train"]["labels"] == [1, 0, 1]
    assert tokenized["validation"]["labels"] == [1]


def test_custom_jsonl_pair_and_regression_inference(tmp_path, tiny_tokenizer):
    rows = [{"a": "x", "b": "y", "score": 0.5}, {"a": "z", "b": "w", "score": 3.0}]
    write(tmp_path / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    raw, spec = data.load_task(train_file=tmp_path / "train.jsonl", validation_file=tmp_path / "train.jsonl",
                               text_columns=("a", "b"), label_column="score")
    assert spec.is_regression
    enc = data.tokenize(raw, tiny_tokenizer, spec)["train"]
    assert 1 in enc["token_type_ids"][0]  # a pair: second segment marked


def test_custom_tsv_is_read_without_quoting(tmp_path):
    write(tmp_path / "t.tsv", 'text\tlabel\n"starts with a quote\t1\nplain\t0\n')
    raw, _ = data.load_task(train_file=tmp_path / "t.tsv", validation_file=tmp_path / "t.tsv")
    assert raw["train"]["text"] == ['"starts with a quote', "plain"]


def test_bad_columns_and_labels_are_errors(tmp_path):
    write(tmp_path / "t.csv", "text,label\na,1\nb,1\n")
    files = dict(train_file=tmp_path / "t.csv", validation_file=tmp_path / "t.csv")
    with pytest.raises(ValueError, match=r"column\(s\) \['sentence'\] not found; the data has columns \['text', 'label'\]"):
        data.load_task(**files, text_columns=("sentence",))
    with pytest.raises(ValueError, match="single value"):
        data.load_task(**files)
    with pytest.raises(ValueError, match="one text column or a pair"):
        data.load_task(**files, text_columns=("a", "b", "c"))
    with pytest.raises(ValueError, match="unsupported file type"):
        data.load_task(train_file=tmp_path / "t.xlsx", validation_file=tmp_path / "t.xlsx")
    with pytest.raises(ValueError, match="no validation data"):
        data.load_task(train_file=tmp_path / "t.csv")
    write(tmp_path / "u.csv", "text,label\na,1\nb,\n")
    with pytest.raises(ValueError, match="empty values"):
        data.load_task(train_file=tmp_path / "u.csv", validation_file=tmp_path / "u.csv")


def test_label_outside_the_task_is_an_error(tmp_path, tiny_tokenizer):
    write(tmp_path / "t.tsv", "sentence\tlabel\na\t1\nb\t7\n")
    raw, spec = data.load_task("sst2", train_file=tmp_path / "t.tsv", validation_file=tmp_path / "t.tsv")
    with pytest.raises(ValueError, match="label 7 is not one of the task's labels"):
        data.tokenize(raw, tiny_tokenizer, spec)


# ----------------------------------------------------------------------------------------------------
# Tokenization and padding


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    words = "a b c x y z w he said hi the man guy great really awful ok fine plain".split()
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    return BertTokenizerFast(vocab_file=str(path))


def test_tokenize_truncates_without_padding_and_collator_pads_per_batch(tmp_path, tiny_tokenizer):
    write(tmp_path / "t.csv", "text,label\n" + "a b c a b c a b c,1\na,0\nx y,1\n")
    raw, spec = data.load_task(train_file=tmp_path / "t.csv", validation_file=tmp_path / "t.csv")
    enc = data.tokenize(raw, tiny_tokenizer, spec, max_length=6)["train"]
    assert [len(ids) for ids in enc["input_ids"]] == [6, 3, 4]  # truncated to 6, the rest unpadded
    batch = data.collator(tiny_tokenizer)([enc[1], enc[2]])
    assert batch["input_ids"].shape == (2, 4)  # padded to the batch's longest, not to max_length
    assert batch["attention_mask"].sum().item() == 7
    assert batch["labels"].tolist() == [0, 1]


def test_subsample_is_seeded():
    ds = data.datasets.Dataset.from_dict({"x": list(range(100))})
    assert data.subsample(ds, 10)["x"] == data.subsample(ds, 10)["x"]
    assert data.subsample(ds, 10)["x"] != list(range(10))
    assert data.subsample(ds, None).num_rows == 100
    with pytest.raises(ValueError):
        data.subsample(ds, 0)


# ----------------------------------------------------------------------------------------------------
# The real shared data, when present


@needs_shared
@pytest.mark.parametrize(
    "task,splits,rows",
    [
        ("cola", ("train", "validation"), (8551, 1043)),
        ("mrpc", ("train", "validation"), (3668, 408)),
        ("stsb", ("train", "validation"), (5749, 1500)),
        ("rte", ("train", "validation"), (2490, 277)),
        ("wnli", ("train", "validation"), (635, 71)),
        ("qnli", ("validation",), (5463,)),
        ("mnli", ("validation",), (9815,)),
        ("sst2", ("validation",), (872,)),
        ("ag_news", ("train", "validation"), (6080, 1520)),
    ],
)
def test_shared_data_row_counts(task, splits, rows):
    raw, _ = data.load_task(task, data_dir=SHARED, splits=splits)
    assert tuple(raw[s].num_rows for s in splits) == rows


@needs_shared
def test_bundled_sst2_dev_is_the_shared_dev_set():
    bundled = Path(data.__file__).parent / "data" / "sst2_dev.tsv"
    assert bundled.read_bytes() == (SHARED / "glue/SST-2/dev.tsv").read_bytes()


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("task,rows", [("sst2", (67349, 872)), ("imdb", (25000, 25000)), ("20newsgroups", (11314, 7532))])
def test_shared_data_large_row_counts(task, rows):
    raw, _ = data.load_task(task, data_dir=SHARED)
    assert (raw["train"].num_rows, raw["validation"].num_rows) == rows
