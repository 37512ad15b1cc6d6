"""What a ``.pt2`` file from a stranger may hold before ``torch.export.load`` reads it.

``torch.export.load`` (torch 2.14) unpickles parts of the archive with ``torch.load(weights_only=False)``
(weights and constants marked ``use_pickle``, and the sample inputs once the safe load fails) and with
``pickle.loads`` (opaque constants): a forged ``.pt2`` runs code when loaded. No torch option refuses that
(``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` does not reach ``pickle.loads``), so the archive is read here first, as a
zip of JSON and bytes: every pickle in it must load with ``weights_only=True`` (tensors and plain values),
no payload may be an object torch unpickles unchecked, and its size is bounded. Files written by
``export`` pass: their weights are raw tensor bytes, their one pickle the sample inputs (tensors).
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
import zlib

import torch
from torch.export.pt2_archive.constants import CUSTOM_OBJ_FILENAME_PREFIX, OPAQUE_OBJ_FILENAME_PREFIX

MAX_ARCHIVE_BYTES = 512 * 1024 * 1024  # uncompressed, all members: a digit classifier needs a few MB
PAYLOAD_CONFIGS = ("_weights_config.json", "_constants_config.json")
PICKLE_SUFFIXES = (".pt", ".pkl", ".pickle")


class UnsafeArchive(ValueError):
    """A ``.pt2`` file that would run code, or take unbounded memory, when ``torch.export.load`` reads it."""


def check_pt2_archive(path: str | os.PathLike) -> None:
    """UnsafeArchive (saying what was found) unless ``path`` is a zip whose pickles hold only tensors and
    plain values, with no payload that torch unpickles without that check."""
    try:
        _check_members(path)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, UnicodeError) as err:
        # damaged bytes: zipfile raises each of these (found by tests/tools/test_pt2_archive.py's fuzzing)
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        raise UnsafeArchive(f"is not a readable .pt2 archive ({reason})") from None


def _check_members(path: str | os.PathLike) -> None:
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        total = sum(member.file_size for member in members)
        if total > MAX_ARCHIVE_BYTES:
            raise UnsafeArchive(f"unpacks to {total:,} bytes, over the {MAX_ARCHIVE_BYTES:,} accepted")
        for member in members:
            name = member.filename
            if name.endswith(PAYLOAD_CONFIGS):
                _check_payloads(name, archive.read(member))
            elif name.endswith(PICKLE_SUFFIXES):
                _check_pickle(name, archive.read(member))


def _check_payloads(name: str, data: bytes) -> None:
    try:
        config = json.loads(data).get("config") or {}
    except (ValueError, AttributeError):
        raise UnsafeArchive(f"has a payload list that is not JSON ({name})") from None
    for key, payload in config.items() if isinstance(config, dict) else ():
        payload = payload if isinstance(payload, dict) else {}
        path_name = str(payload.get("path_name", ""))
        if payload.get("use_pickle") or path_name.startswith(
            (CUSTOM_OBJ_FILENAME_PREFIX, OPAQUE_OBJ_FILENAME_PREFIX)
        ):
            raise UnsafeArchive(
                f"holds '{key}' as a pickled Python object ({name}), which loading would unpickle unchecked"
            )


def _check_pickle(name: str, data: bytes) -> None:
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch names the refused object, then advises loading it anyway: not repeated
        refused = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = refused.group(1) if refused else "not tensors and plain values"
        raise UnsafeArchive(f"holds pickled Python objects in {name} ({what})") from None
