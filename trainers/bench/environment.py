"""What a measurement ran on: library versions, threads, CPU or GPU, the command, the load, and which engine
code (git commit and a hash of the modeling sources), recorded in `bench.json`."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys

import torch


def environment(device, threads=None) -> dict:
    import transformers

    env = {
        "device": str(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "command": " ".join([os.path.basename(sys.argv[0])] + [shlex.quote(a) for a in sys.argv[1:]]) if sys.argv else "",
    }
    try:
        from importlib.metadata import version

        env["tokenskim"] = version("tokenskim")
    except Exception:
        env["tokenskim"] = None
    env["code"] = code_version()
    if str(device).startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
    try:
        env["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return env


def code_version() -> dict:
    """Which engine was measured: git commit of the tokenskim checkout (if any), modeling files that differ
    from it, and a hash of the modeling sources as imported (a dirty working tree is common mid-work)."""
    import hashlib
    import subprocess

    import tokenskim.modeling as modeling

    folder = os.path.dirname(os.path.abspath(modeling.__file__))
    digest = hashlib.sha1()
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as fh:
                digest.update(name.encode() + fh.read())
    out = {"modeling_sha1": digest.hexdigest()[:12]}
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=folder, capture_output=True, text=True, timeout=10)  # noqa: E731
        head = run("rev-parse", "--short", "HEAD")
        if head.returncode == 0:
            out["git_commit"] = head.stdout.strip()
            out["modeling_dirty"] = [line[3:] for line in run("status", "--porcelain", ".").stdout.splitlines()]
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
