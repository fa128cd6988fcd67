"""The tasks tokenskim knows by name: what their rows look like, which head they need, how they are scored, and
where their files live (locally under the data directory, or on the Hub). `data.py` reads them."""

import csv
from dataclasses import dataclass, field

from .errors import UsageError


SPLITS = ("train", "validation")
# The model head a task needs (TaskSpec.head); sequence classification covers regression.
SEQUENCE_CLASSIFICATION = "sequence-classification"
QUESTION_ANSWERING = "question-answering"

# GLUE TSVs contain stray `"` (QNLI, MRPC): they must be read with quoting off, as the GLUE processors do.
GLUE_TSV = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
# Text such as "null" or "NA" is a sentence, not a missing value.
NO_NA = {"keep_default_na": False}


@dataclass(frozen=True)
class LocalFile:
    """One split of a task as a file under the data directory, and how to read it.

    builder: a `datasets` packaged builder ("csv" or "json"); read: its options (delimiter, quoting,
    column names, encoding).
    """

    path: str
    builder: str = "csv"
    read: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """What a task's rows look like and how it is scored.

    head: the model head the task needs, SEQUENCE_CLASSIFICATION (classification or regression) or
        QUESTION_ANSWERING (extractive QA: rows in SQuAD's columns, see squad.py).
    text_columns: one column, or a pair for sentence-pair tasks.
    labels: the raw label values in id order (as they appear in the local files), or None for regression.
    label_names: human-readable names in the same order (the model's `id2label`); defaults to the labels.
    local: split -> LocalFile under the data directory. A split with no file cannot be read locally.
    split_from: for tasks with a single local split (AG News: test only), (split, eval fraction, seed):
        that split is divided into train and validation with a fixed seed.
    hub: (dataset name, config or None, {our split: hub split}[, {hub column: our column}]) to use when no
        local data exists and the Hub is reachable. Hub labels may be class ids where the local files have
        names (GLUE on the Hub): ids follow the order of `labels`.
    """

    name: str
    text_columns: tuple
    label_column: str = "label"
    labels: tuple | None = (0, 1)
    label_names: tuple | None = None
    local: dict = field(default_factory=dict)
    split_from: tuple | None = None
    hub: tuple | None = None
    head: str = SEQUENCE_CLASSIFICATION

    @property
    def is_qa(self) -> bool:
        return self.head == QUESTION_ANSWERING

    @property
    def is_regression(self) -> bool:
        return self.labels is None and not self.is_qa

    @property
    def num_labels(self) -> int:
        if self.is_qa:
            return 2  # start and end logits, as transformers' QA heads
        return 1 if self.is_regression else len(self.labels)

    @property
    def id2label(self) -> dict | None:
        if self.is_regression or self.is_qa:
            return None
        return {i: str(name) for i, name in enumerate(self.label_names or self.labels)}


def _glue(folder, train="train.tsv", validation="dev.tsv", **read):
    read = {**GLUE_TSV, **NO_NA, **read}
    files = {"train": train, "validation": validation}
    return {split: LocalFile(f"glue/{folder}/{name}", "csv", read) for split, name in files.items() if name}


def _glue_hub(config, validation="validation", renames=None):
    return ("nyu-mll/glue", config, {"train": "train", "validation": validation}, renames or {})


NLI = ("entailment", "not_entailment")

TASKS = {
    "cola": TaskSpec(
        "cola", ("sentence",), labels=(0, 1), label_names=("unacceptable", "acceptable"),
        local=_glue("CoLA", column_names=["source", "label", "author_label", "sentence"]), hub=_glue_hub("cola"),
    ),
    "sst2": TaskSpec(
        "sst2", ("sentence",), labels=(0, 1), label_names=("negative", "positive"),
        local=_glue("SST-2"), hub=_glue_hub("sst2"),
    ),
    "mrpc": TaskSpec(
        "mrpc", ("#1 String", "#2 String"), label_column="Quality", labels=(0, 1),
        label_names=("not_equivalent", "equivalent"),
        local=_glue("MRPC", encoding="utf-8-sig"),  # the MRPC files start with a BOM
        hub=_glue_hub("mrpc", renames={"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"}),
    ),
    "stsb": TaskSpec(
        "stsb", ("sentence1", "sentence2"), label_column="score", labels=None,
        local=_glue("STS-B"), hub=_glue_hub("stsb", renames={"label": "score"}),
    ),
    "qqp": TaskSpec(
        "qqp", ("question1", "question2"), labels=(0, 1), label_names=("not_duplicate", "duplicate"),
        local={}, hub=_glue_hub("qqp"),  # QQP is not in ../shared/data (too large)
    ),
    "mnli": TaskSpec(
        "mnli", ("premise", "hypothesis"), labels=("entailment", "neutral", "contradiction"),
        local={"validation": LocalFile("glue/MNLI/dev_matched.jsonl", "json")},  # matched dev only
        hub=_glue_hub("mnli", validation="validation_matched"),
    ),
    "qnli": TaskSpec(
        "qnli", ("question", "sentence"), labels=NLI, local=_glue("QNLI", train=None), hub=_glue_hub("qnli"),
    ),
    "rte": TaskSpec("rte", ("sentence1", "sentence2"), labels=NLI, local=_glue("RTE"), hub=_glue_hub("rte")),
    "wnli": TaskSpec(
        "wnli", ("sentence1", "sentence2"), labels=(0, 1), label_names=("not_entailment", "entailment"),
        local=_glue("WNLI"), hub=_glue_hub("wnli"),
    ),
    "imdb": TaskSpec(
        "imdb", ("text",), labels=(0, 1), label_names=("neg", "pos"),
        local={
            "train": LocalFile("imdb/train.csv", "csv", NO_NA),
            "validation": LocalFile("imdb/test.csv", "csv", NO_NA),  # IMDB has no dev set; test is the standard eval
        },
        hub=("stanfordnlp/imdb", None, {"train": "train", "validation": "test"}),
    ),
    "20newsgroups": TaskSpec(
        "20newsgroups", ("text",), labels=tuple(range(20)),
        label_names=(
            "alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware",
            "comp.sys.mac.hardware", "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles",
            "rec.sport.baseball", "rec.sport.hockey", "sci.crypt", "sci.electronics", "sci.med", "sci.space",
            "soc.religion.christian", "talk.politics.guns", "talk.politics.mideast", "talk.politics.misc",
            "talk.religion.misc",
        ),
        local={
            "train": LocalFile("20newsgroups/train.jsonl", "json"),
            "validation": LocalFile("20newsgroups/test.jsonl", "json"),
        },
        hub=("SetFit/20_newsgroups", None, {"train": "train", "validation": "test"}),
    ),
    "ag_news": TaskSpec(
        "ag_news", ("title", "description"), labels=(1, 2, 3, 4), label_names=("World", "Sports", "Business", "Sci/Tech"),
        # Only AG News' test split is local (train.csv is too large for the snapshot): it is split 80/20
        # into train and validation with seed 42. Numbers on it are not comparable to the official test set.
        local={"test": LocalFile("ag_news/test.csv", "csv", {**NO_NA, "column_names": ["label", "title", "description"]})},
        split_from=("test", 0.2, 42),
        hub=None,  # the Hub copy has one "text" column and labels 0-3; use --dataset-name fancyzhx/ag_news
    ),
    # Only the dev files are local: train with the Hub, your own files, or --article-split of the dev file.
    "squad": TaskSpec(
        "squad", ("question", "context"), label_column="answers", labels=None, head=QUESTION_ANSWERING,
        local={"validation": LocalFile("squad/dev-v1.1.json", "squad")},
        hub=("rajpurkar/squad", None, {"train": "train", "validation": "validation"}),
    ),
    "squad_v2": TaskSpec(
        "squad_v2", ("question", "context"), label_column="answers", labels=None, head=QUESTION_ANSWERING,
        local={"validation": LocalFile("squad/dev-v2.0.json", "squad")},
        hub=("rajpurkar/squad_v2", None, {"train": "train", "validation": "validation"}),
    ),
}
ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "20news": "20newsgroups", "agnews": "ag_news", "ag-news": "ag_news",
           "squad1": "squad", "squad_v1": "squad", "squad-v2": "squad_v2", "squad2": "squad_v2"}


def get_task(name: str) -> TaskSpec:
    """The spec of a known task; a clear error listing the known ones otherwise."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise UsageError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)} (or give --train-file/--validation-file)")
    return TASKS[key]
