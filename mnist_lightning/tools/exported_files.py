"""Loading a file written by ``export`` (``.onnx`` or ``.pt2``) as a function on NumPy arrays, and the facts
stored in it. Importing this module imports neither torch nor Lightning: serving an ONNX file needs only
onnxruntime and NumPy (torch is imported to load a ``.pt2`` file, which needs it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mnist_lightning.errors import UserError

INPUT_NAME, OUTPUT_NAME = "images", "probabilities"
INPUT_CONVENTION = "float32 (N, 1, 28, 28), pixel values in [0, 1], white on black"
OUTPUT_CONVENTION = "float32 (N, C), class probabilities in the order of 'classes'"
Predictor = Callable[
    [np.ndarray], np.ndarray
]  # float32 images (N, 1, 28, 28) in [0, 1] -> probabilities (N, C)


def load_onnx(path: str | os.PathLike, threads: int | None = None) -> tuple[Predictor, dict[str, str]]:
    """An onnxruntime session on the CPU for an exported file, and the file's metadata; ``threads``: the
    session's intra-op threads (onnxruntime's default: one per core)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return (
        lambda images: session.run(None, {INPUT_NAME: images})[0]
    ), session.get_modelmeta().custom_metadata_map


def load_pt2(path: str | os.PathLike, threads: int | None = None) -> tuple[Predictor, dict[str, str]]:
    """``torch.export.load`` of an exported file as a callable on NumPy arrays, and the file's metadata;
    ``threads``: torch's intra-op threads in this process (torch's default: one per core). The archive is
    checked first (``pt2_archive.py``): a file that would run code when loaded is a UserError."""
    import torch

    from mnist_lightning.tools.pt2_archive import UnsafeArchive, check_pt2_archive

    try:
        check_pt2_archive(path)  # torch.export.load unpickles parts of it unchecked
    except UnsafeArchive as err:
        raise UserError(f"--model '{path}' cannot be loaded: it {err} (see docs/security.md).") from None
    if threads is not None:
        torch.set_num_threads(threads)
    extra_files = {"metadata.json": ""}
    module = torch.export.load(path, extra_files=extra_files).module()

    def predict(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(images)).numpy()

    return predict, json.loads(extra_files["metadata.json"] or "{}")


LOADERS: dict[str, Callable[..., tuple[Predictor, dict[str, str]]]] = {".onnx": load_onnx, ".pt2": load_pt2}


def load_exported(path: str | os.PathLike, threads: int | None = None) -> tuple[Predictor, dict[str, str]]:
    """Load an exported ``.onnx`` or ``.pt2`` file: a predictor and the file's metadata; ``threads``: the
    runtime's intra-op threads (its default when None)."""
    suffix = Path(path).suffix.lower()
    if suffix not in LOADERS:
        raise UserError(
            f"--model '{path}' ends in '{suffix}'; serve reads the .onnx and .pt2 files 'export' writes."
        )
    return LOADERS[suffix](path, threads)
