"""What a run's provenance records, each read once per command: the git work tree, the installed packages,
the machine, and the SHA-256 of data files (cached by path, size and modification time)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from mnist_lightning.callbacks.outputs import write_json

UNTRACKED_LISTED = 200  # untracked files named in provenance.json at most (a tree can hold thousands)
HASH_CACHE_VERSION = 1
LIBRARIES = ("torch", "lightning", "torchmetrics", "torchvision", "jsonargparse", "numpy")


def _git(folder: Path, *args: str) -> str | None:
    """``git ARGS`` run in ``folder``: its output, or None where git is missing or fails (not a work tree)."""
    try:
        result = subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def git_state(folder: Path) -> tuple[dict[str, Any] | None, str]:
    """The git work tree holding ``folder``: ``{"root", "commit", "branch", "dirty", "untracked", ...}``, or
    None outside one (or in one without a commit yet); and the uncommitted changes of tracked files against
    that commit as a diff ("" when the tree is clean). ``dirty`` means such changes; untracked files (not
    ignored) are named, not diffed."""
    root = _git(folder, "rev-parse", "--show-toplevel")
    commit = _git(folder, "rev-parse", "--verify", "HEAD")
    if root is None or commit is None:
        return None, ""
    root_path = Path(root.strip())
    branch = (_git(root_path, "rev-parse", "--abbrev-ref", "HEAD") or "").strip()
    diff = _git(root_path, "diff", "HEAD", "--no-color", "--no-ext-diff") or ""
    others = (_git(root_path, "ls-files", "--others", "--exclude-standard", "-z") or "").split("\0")
    untracked = sorted(name for name in others if name)
    return (
        {
            "root": str(root_path),
            "commit": commit.strip(),
            "branch": None if branch in ("", "HEAD") else branch,  # HEAD: a detached head
            "dirty": bool(diff),
            "untracked": untracked[:UNTRACKED_LISTED],
            "untracked_count": len(untracked),
        },
        diff,
    )


def package_versions() -> tuple[dict[str, str | None], list[str]]:
    """Python's and the main libraries' versions, CUDA's and cuDNN's (None without them); and every installed
    distribution as ``name==version``, sorted (``pip freeze`` read from the installed metadata)."""
    import torch

    installed: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if name and name.lower() not in installed:
            installed[name.lower()] = f"{name}=={distribution.version}"
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for library in LIBRARIES:
        versions[library] = installed.get(library, "").partition("==")[2] or None
    versions["cuda"] = torch.version.cuda
    versions["cudnn"] = cudnn_version(installed)
    return versions, sorted(installed.values(), key=str.lower)


def cudnn_version(installed: dict[str, str]) -> str | None:
    """cuDNN's version: asked of the library where this process already uses CUDA (e.g. ``92400``); else the
    installed wheel's (``nvidia-cudnn-cu13==9.24.0.43`` gives ``9.24.0.43``), or None. Asking the library
    loads more of it (libcudnn_graph), which cost a CPU run 52 MB of resident memory for nothing."""
    import torch

    if torch.cuda.is_initialized() and torch.backends.cudnn.is_available():
        return str(torch.backends.cudnn.version())
    wheels = sorted(name for name in installed if name.startswith("nvidia-cudnn-cu"))
    return installed[wheels[-1]].partition("==")[2] if wheels else None


def project_version() -> str | None:
    try:
        return importlib.metadata.version("mnist-lightning")
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """Host name, OS, CPU model and cores, and the GPUs (models and count)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpus = gpu_names()
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "gpu_count": len(gpus),
        "gpus": gpus,
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    """The CUDA GPUs' names: from torch where this process already uses CUDA, else from ``nvidia-smi``, so a
    run on the CPU does not start a CUDA context just to name them."""
    import torch

    if torch.cuda.is_initialized():
        return [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        result = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0:
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def hash_cache_path() -> Path:
    """``$XDG_CACHE_HOME/mnist-lightning/sha256.json`` (``~/.cache/...`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnist-lightning" / "sha256.json"


def file_hashes(paths: list[Path]) -> list[dict[str, Any]]:
    """``{"path", "size", "sha256"}`` of each file, a file's hash read from the cache while its size and
    modification time are those it was hashed at; new hashes are added to the cache (written whole, so
    processes that share it never read half a file; one that cannot be written is left alone)."""
    cache_file = hash_cache_path()
    try:
        cache = json.loads(cache_file.read_text())
        entries = cache["files"] if cache.get("version") == HASH_CACHE_VERSION else {}
    except (OSError, ValueError, KeyError, AttributeError):
        entries = {}
    found, changed = [], False
    for path in paths:
        resolved = path.resolve()
        try:
            stat = resolved.stat()
        except OSError:
            continue
        key, entry = str(resolved), entries.get(str(resolved))
        known = isinstance(entry, dict) and (entry.get("size"), entry.get("mtime_ns")) == (
            stat.st_size,
            stat.st_mtime_ns,
        )
        if not known:
            entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_of(resolved)}
            entries[key], changed = entry, True
        found.append({"path": key, "size": stat.st_size, "sha256": entry["sha256"]})
    if changed:
        with contextlib.suppress(OSError):
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            write_json(cache_file, {"version": HASH_CACHE_VERSION, "files": entries}, indent=0)
    return found


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def command_line() -> str:
    """The command as typed (the interpreter's own ``argv``, which a sweep's trials do not change)."""
    import shlex

    return shlex.join(getattr(sys, "orig_argv", sys.argv))
