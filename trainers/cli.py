"""The `tokenskim` command line. Each subcommand lives in its own module with
`add_arguments(parser)` and `run(args)`; this file only wires them up."""

import argparse
import importlib
import sys

# subcommand -> (module in tokenskim.trainers, one-line help)
COMMANDS = {
    "demo": ("demo", "fine-tune MiniLM on the bundled SST-2 sample, then evaluate and benchmark it"),
    "train": ("train", "fine-tune a model with a token-skimming or early-exit method"),
    "evaluate": ("evaluate", "evaluate a checkpoint: task metric, kept-token ratio, FLOPs ratio"),
    "bench": ("bench", "measure wall-clock speed against the stock dense model"),
    "explain": ("explain", "show which tokens a model drops, layer by layer"),
    "calibrate": ("calibrate", "pick a model's inference threshold for a target FLOPs ratio, without retraining"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tokenskim", description="Token skimming and early exit for BERT-style encoders")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"tokenskim.trainers.{module}")
        mod.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    mod = importlib.import_module(f"tokenskim.trainers.{COMMANDS[args.command][0]}")
    return mod.run(args)


if __name__ == "__main__":
    sys.exit(main())
