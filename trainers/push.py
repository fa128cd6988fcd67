"""`tokenskim push DIR --repo-id NAME [--private]`: uploads a saved model folder (weights, config, remote code,
tokenizer, model card, eval_results.json) to the Hugging Face Hub with `huggingface_hub.HfApi`.

Log in first (`hf auth login`) or pass `--token`. Training checkpoints (`checkpoint-*`) stay behind.
"""

from pathlib import Path

from huggingface_hub import HfApi

from .errors import UsageError

# what a model repository does not need: Trainer checkpoints and run state, our private files
IGNORE = ["checkpoint-*", "_*", "runs/*", "training_args.bin", "*.summary.json"]
REQUIRED = ("config.json", "README.md")


def add_arguments(parser):
    parser.add_argument("folder", help="a folder written by tokenskim train (or trainer.save_model)")
    parser.add_argument("--repo-id", required=True, help="the Hub repository, e.g. your-name/transkimmer-sst2")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", help="branch to push to (default: main)")
    parser.add_argument("--commit-message", default="Upload a tokenskim model", help="the commit message")
    parser.add_argument("--token", help="a Hub token with write access (default: the logged-in one)")


def check_folder(folder) -> Path:
    """The folder, if it holds a model with its card; a UsageError saying what is missing otherwise."""
    path = Path(folder)
    if not path.is_dir():
        raise UsageError(f"{folder} is not a folder: give the output folder of tokenskim train")
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        raise UsageError(f"{folder} has no {', '.join(missing)}: push a folder written by tokenskim train "
                         "(or by SkimTrainer.save_model after an evaluation)")
    return path


def push_folder(folder, repo_id: str, private: bool = False, revision=None, commit_message="Upload a tokenskim model",
                token=None):
    """Creates the model repository when needed and uploads the folder in one commit; returns the commit info."""
    path = check_folder(folder)
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(path), revision=revision,
                             commit_message=commit_message, ignore_patterns=IGNORE)


def run(args):
    info = push_folder(args.folder, args.repo_id, args.private, args.revision, args.commit_message, args.token)
    print(f"pushed {args.folder} to {getattr(info, 'commit_url', None) or args.repo_id}")
    return 0
