"""Bad input on the command line: one line naming the problem and what to do, exit status 2, no traceback.
Each case runs the real entry point, `cli.main`, in this process."""

import pytest
from test_cli import SST2
from test_trainer import BUNDLED, save_tiny_checkpoint

from tokenskim.trainers import cli


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bert"))


def fails_with(argv, capsys, *words) -> str:
    """Runs `tokenskim ARGV`; asserts exit status 2, no traceback, and one error line holding `words`."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err
    assert errors[0].startswith(f"tokenskim {argv[0]}: error: ") or errors[0].startswith("tokenskim: error: "), err
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def train(tiny_dir, tmp_path, *argv):
    return ["train", "--model", tiny_dir, "--output-dir", str(tmp_path / "out"), "--max-steps", "1", *argv]


def test_empty_csv(tiny_dir, tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("")
    fails_with(train(tiny_dir, tmp_path, "--train-file", str(tmp_path / "empty.csv"), "--validation-file",
                     str(tmp_path / "empty.csv")), capsys, "empty.csv is empty", "header row")


def test_header_only_csv(tiny_dir, tmp_path, capsys):
    (tmp_path / "header.csv").write_text("text,label\n")
    fails_with(train(tiny_dir, tmp_path, "--train-file", str(tmp_path / "header.csv"), "--validation-file",
                     str(tmp_path / "header.csv")), capsys, "header.csv has no data rows", "add rows")


def test_missing_output_dir(tiny_dir, capsys):
    fails_with(["train", "--model", tiny_dir, *SST2], capsys, "--output-dir")


def test_labels_outside_the_task_label_set(tiny_dir, tmp_path, capsys):
    (tmp_path / "bad.tsv").write_text("sentence\tlabel\na fine film\t1\na dull film\t7\n")
    fails_with(train(tiny_dir, tmp_path, "--task", "sst2", "--train-file", str(tmp_path / "bad.tsv"),
                     "--validation-file", str(BUNDLED / "sst2_dev.tsv")), capsys, "label 7 is not one of", "--task")


def test_unknown_method(tiny_dir, tmp_path, capsys):
    fails_with(train(tiny_dir, tmp_path, *SST2, "--method", "skimformer"), capsys, "invalid choice: 'skimformer'")


def test_unknown_task(tiny_dir, tmp_path, capsys):
    fails_with(train(tiny_dir, tmp_path, "--task", "sst5"), capsys, "unknown task 'sst5'", "known tasks")


def test_missing_column(tiny_dir, tmp_path, capsys):
    fails_with(train(tiny_dir, tmp_path, *SST2, "--text-columns", "review"), capsys, "['review'] not found",
               "--text-columns")


def test_missing_data_file(tiny_dir, tmp_path, capsys):
    fails_with(train(tiny_dir, tmp_path, "--train-file", "nope.csv", "--validation-file", "nope.csv"), capsys,
               "data file not found: nope.csv")


def test_evaluate_a_model_that_does_not_exist(tmp_path, capsys):
    fails_with(["evaluate", "--model", str(tmp_path / "no-model"), *SST2], capsys, "cannot load model", "checkpoint folder")


def test_predict_missing_column(tiny_dir, tmp_path, capsys):
    (tmp_path / "in.csv").write_text("id,review,author\n1,great,ann\n")  # two text columns: which one?
    fails_with(["predict", "--model", tiny_dir, "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "o.jsonl")],
               capsys, "which column holds the text", "--text-columns")
    fails_with(["predict", "--model", tiny_dir, "--input", str(tmp_path / "in.csv"), "--text-columns", "body",
                "--output", str(tmp_path / "o.jsonl")], capsys, "['body'] not found")


def test_predict_missing_input(tiny_dir, tmp_path, capsys):
    fails_with(["predict", "--model", tiny_dir, "--input", str(tmp_path / "none.csv"), "--output", str(tmp_path / "o.jsonl")],
               capsys, "input file not found")


def test_push_a_folder_without_a_model(tmp_path, capsys):
    fails_with(["push", str(tmp_path), "--repo-id", "me/model"], capsys, "has no config.json, README.md")
