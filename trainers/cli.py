"""The `tokenskim` command line. Each subcommand lives in its own module with `add_arguments(parser)` and
`run(args)`; this file only wires them up.

Each subcommand's parser is a `transformers.HfArgumentParser`: a module that lists dataclasses in `DATACLASSES`
(train: `TrainingArguments`) gets every field as a flag. Any subcommand also reads its flags from a YAML or JSON
file, `tokenskim train config.yaml` or `--config FILE` (keys are flag names; flags given on the command line win).

Bad input (a `UsageError`, a missing file) ends in one line naming the problem and exit status 2, as a bad flag
does; other errors are bugs and keep their traceback.
"""

import argparse
import importlib
import json
import sys
from pathlib import Path

from transformers import HfArgumentParser

from .errors import UsageError

# subcommand -> (module in tokenskim.trainers, one-line help)
COMMANDS = {
    "demo": ("demo", "fine-tune MiniLM on the bundled SST-2 sample, then evaluate and benchmark it"),
    "train": ("train", "fine-tune a model with a token-skimming or early-exit method"),
    "evaluate": ("evaluate", "evaluate a checkpoint: task metric, kept-token ratio, FLOPs ratio"),
    "predict": ("predict", "predict labels for a file of texts, length-sorted, resumable, multi-process"),
    "bench": ("bench", "measure wall-clock speed against the stock dense model"),
    "explain": ("explain", "show which tokens a model drops, layer by layer"),
    "calibrate": ("calibrate", "pick a model's inference threshold for a target FLOPs ratio, without retraining"),
    "push": ("push", "upload a saved model folder to the Hugging Face Hub"),
}
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def build_parser():
    """`(parser, {subcommand: its parser})`."""
    parser = argparse.ArgumentParser(prog="tokenskim", description="Token skimming and early exit for BERT-style encoders")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=HfArgumentParser)
    commands = {}
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"tokenskim.trainers.{module}")
        commands[name] = sub.add_parser(name, help=help_text, description=help_text,
                                        usage="%(prog)s [options]  (--help lists them)",  # errors stay short
                                        dataclass_types=getattr(mod, "DATACLASSES", None),
                                        formatter_class=argparse.HelpFormatter)  # our help texts name their defaults
        commands[name].add_argument("--config", metavar="FILE", help="read flags from a YAML or JSON file")
        mod.add_arguments(commands[name])
    return parser, commands


def config_flags(path) -> list:
    """A YAML/JSON mapping `{flag: value}` as command-line tokens: `learning_rate: 3e-5` -> `--learning-rate 3e-05`,
    `true` -> the bare flag, lists -> several values, null -> left out."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        values = json.loads(text)
    else:
        import yaml

        values = yaml.safe_load(text)
    if not isinstance(values, dict):
        raise UsageError(f"{path}: a config file is a mapping of flag names to values, e.g. 'learning_rate: 3e-5'")
    tokens = []
    for key, value in values.items():
        flag = "--" + str(key).lstrip("-").replace("_", "-")
        if value is None:
            continue
        if value is True:
            tokens.append(flag)
        elif isinstance(value, (list, tuple)):
            tokens += [flag, *map(str, value)]
        elif isinstance(value, dict):
            tokens += [flag, json.dumps(value)]
        else:
            tokens += [flag, "false" if value is False else str(value)]
    return tokens


def expand_config(argv: list) -> list:
    """`CMD config.yaml ...` or `CMD ... --config FILE ...` -> the file's flags right after CMD, so flags given on
    the command line (later) override them."""
    if not argv:
        return argv
    command, rest = argv[:1], list(argv[1:])
    files = []
    if rest and rest[0].endswith(CONFIG_SUFFIXES) and not rest[0].startswith("-"):
        files.append(rest.pop(0))
    while "--config" in rest:
        i = rest.index("--config")
        if i + 1 >= len(rest):
            raise UsageError("--config needs a file: --config config.yaml")
        files.append(rest[i + 1])
        del rest[i : i + 2]
    return command + [t for f in files for t in config_flags(f)] + rest


def parse_args(argv=None):
    """`(args, {subcommand: its parser})` from the command line (config files expanded)."""
    parser, commands = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = expand_config(argv)
    except UsageError as e:
        (commands.get(argv[0]) or parser).error(str(e))
    return parser.parse_args(argv), commands


def main(argv=None):
    args, commands = parse_args(argv)
    mod = importlib.import_module(f"tokenskim.trainers.{COMMANDS[args.command][0]}")
    try:
        return mod.run(args)
    except (UsageError, FileNotFoundError) as e:
        commands[args.command].error(str(e))  # one line and exit status 2, no traceback


if __name__ == "__main__":
    sys.exit(main())
