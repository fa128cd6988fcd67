"""Extractive QA checkpoints in the benchmark (`--task squad` / `squad_v2`, or a SQuAD-format file).

The benchmark's examples are the windows of the questions' contexts, made as train and evaluate make them
(`squad.featurize`: stride, offsets, the question first); each variant's metric is SQuAD's EM/F1 (v2.0: its
metrics) over its start/end logits, post-processed to text answers as `tokenskim evaluate` does
(`squad.postprocess`). A question is scored only when all of its windows ran: `--max-examples N` takes whole
questions, in a seeded random order, up to N windows. Across variants, `prediction_agreement_vs_dense` compares
the questions' answer texts and `max_abs_logit_diff_vs_dense` the start/end logits of the positions both computed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import datasets

from .. import data as task_data
from .. import metrics, squad
from ..errors import UsageError
from .inputs import EncodedExamples

MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")  # of a window's columns, what the model reads


@dataclass
class QABenchData:
    """Questions to benchmark on, as rows in SQuAD's columns (`squad.COLUMNS`), in benchmark order.

    qa_flags: the flags of `squad.add_arguments` (an argparse Namespace): doc stride (None: the one each model
        was trained with, `squad.options_from_args`), n-best size, longest answer, no-answer threshold.
    max_windows: at most this many windows, in whole questions taken in order (None: every question).
    """

    questions: datasets.Dataset
    qa_flags: object
    max_windows: int | None = None
    version_2: bool = False
    task: str = "squad"
    source: str = ""
    metric_name: ClassVar[str] = "f1"
    regression: ClassVar[bool] = False
    head: ClassVar[str] = task_data.QUESTION_ANSWERING

    def encode(self, tokenizer, config, max_length: int) -> EncodedExamples:
        """The windows of the questions for a model with `config` (its training stride unless one is given),
        `max_length` tokens each, scored with SQuAD's metric over the questions they cover."""
        options = squad.options_from_args(self.qa_flags, config)
        split = datasets.DatasetDict({"validation": self.questions})
        windows = squad.featurize(split, tokenizer, max_length, options.doc_stride)["validation"]
        questions, windows = whole_questions(self.questions, windows, self.max_windows)
        features = windows.select_columns([c for c in MODEL_INPUTS if c in windows.column_names]).to_list()
        metadata = windows.select_columns(["example_id", "offset_mapping"])
        gold = squad.references(questions)

        def score(result):  # a pass's logits [windows, tokens, 2] -> answer per question, SQuAD scores
            start, end = result.logits[..., 0].numpy(), result.logits[..., 1].numpy()
            answers = squad.postprocess(questions, metadata, start, end, self.version_2, options)
            scores = metrics.squad_v2(answers, gold) if self.version_2 else metrics.squad_v1(answers, gold)
            return [answers[i] for i in questions["id"]], scores

        settings = {"doc_stride": options.doc_stride, "num_questions": questions.num_rows}
        return EncodedExamples(features, score, settings)


def whole_questions(questions: datasets.Dataset, windows: datasets.Dataset, max_windows: int | None) -> tuple:
    """`(questions, windows)`: the longest run of questions from the first whose windows number at most
    `max_windows` (at least the first question, whatever its windows), and exactly their windows, in order.
    max_windows None: all of them."""
    if max_windows is None:
        return questions, windows
    if max_windows <= 0:
        raise UsageError(f"--max-examples must be positive, got {max_windows}")
    per_question = Counter(windows["example_id"])
    taken = total = 0
    for question_id in questions["id"]:
        if taken and total + per_question[question_id] > max_windows:
            break
        taken, total = taken + 1, total + per_question[question_id]
    questions = questions.select(range(taken))
    kept = set(questions["id"])
    return questions, windows.select([i for i, q in enumerate(windows["example_id"]) if q in kept])


def load_qa_bench_data(task: str, qa_flags, data_dir: str | None = None, split: str = "validation",
                       max_windows: int | None = None, seed: int = 42,
                       validation_file: str | None = None) -> QABenchData:
    """A QA task's split through `tokenskim.trainers.data` (as train and evaluate read it; `qa_flags.article_split`
    splits it by article). With `max_windows`, the questions are shuffled with `seed` (as `data.subsample` shuffles
    classification rows) and whole questions are taken up to that many windows, per model (`whole_questions`)."""
    raw, spec = task_data.load_task(task=task, data_dir=data_dir, validation_file=validation_file, splits=(split,),
                                    article_split=getattr(qa_flags, "article_split", None))
    questions = raw[split]
    source = f"{spec.name} {split}" + (f" ({validation_file or data_dir})" if validation_file or data_dir else "")
    if getattr(qa_flags, "article_split", None):
        source += ", article split {}:{}".format(*qa_flags.article_split)
    source += f", {questions.num_rows} questions"
    if max_windows is not None:
        questions = questions.shuffle(seed=seed)
        source += f"; whole questions in a seeded random order (seed {seed}) up to {max_windows} windows"
    return QABenchData(questions, qa_flags, max_windows, spec.name in squad.VERSION_2_TASKS, spec.name, source)
