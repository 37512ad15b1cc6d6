"""``export --quantize int8``: an exported ONNX file quantized to int8 and checked against the float one.

Static quantization by onnxruntime (``quantize_static``, QDQ format, the layout its CPU kernels are optimized
for): the weights of the matrix products and convolutions are stored as int8, the activations between them
(through ReLU, pooling and reshaping) are quantized to uint8 with ranges calibrated on training images of
the checkpoint's own training split (never the test set), prepared as the file expects them. The softmax
stays in float, so the probabilities keep their resolution. The int8 file is kept only when its test
accuracy is at most ``MAX_ACCURACY_DROP`` below the float file's.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mnist_lightning.data.datamodule import MNISTDataModule
from mnist_lightning.data.datasets import RAW_FILES, DatasetSpec, raw_folder
from mnist_lightning.errors import UserError

if TYPE_CHECKING:
    import argparse

QUANTIZE_CHOICES = ("int8",)
MAX_ACCURACY_DROP = 0.005  # 0.5 points of test accuracy: the largest loss an int8 file may have
CALIBRATION_IMAGES = 1000  # training images whose activations set the quantization ranges
CALIBRATION_SEED = 0
CALIBRATION_BATCH = 100
# the operators quantized: the float work and what lies between (no Softmax: the probabilities stay float)
QUANTIZED_OPS = ("MatMul", "Gemm", "Conv", "Relu", "MaxPool", "Flatten", "Reshape")
LATENCY_RUNS = 500  # single-image runs of each file, taken in turn, for the median latency


def add_quantize_option(parser: argparse.ArgumentParser) -> None:
    """``--quantize int8`` of ``export``."""
    parser.add_argument(
        "--quantize",
        choices=QUANTIZE_CHOICES,
        help="int8: an ONNX file statically quantized by onnxruntime, calibrated on training images and kept "
        f"only if its test accuracy is at most {MAX_ACCURACY_DROP * 100:.1f} points below the float file's",
    )


def check_quantizable(quantize: str | None, format_name: str, output: str) -> None:
    """A UserError for ``--quantize`` with a file format other than ONNX."""
    if quantize is not None and format_name != "ONNX":
        raise UserError(
            f"--quantize {quantize} quantizes ONNX files with onnxruntime; '{output}' is a {format_name} "
            "file. Give an --output ending in .onnx, or export without --quantize."
        )


def calibration_images(
    data_dir: str, spec: DatasetSpec, datamodule_hparams: dict, count: int = CALIBRATION_IMAGES
) -> np.ndarray:
    """``count`` images of the checkpoint's training split, picked with a fixed seed, as the exported file
    takes them: float32 (N, 1, 28, 28) in [0, 1]. The split is the data module's own (its ``val_size``,
    ``folds`` and ``seed`` from the checkpoint), so no validation or test image calibrates the file."""
    folder = raw_folder(data_dir, spec.name)
    if not all((folder / name).exists() for name in RAW_FILES[True]):
        raise UserError(
            f"--quantize int8 calibrates on the {spec.name} training images, which are not in '{folder}'; "
            f"--data.data_dir names the folder holding {spec.name}/raw/."
        )
    split = {
        key: datamodule_hparams[key]
        for key in ("val_size", "folds", "fold", "seed")
        if key in datamodule_hparams
    }
    datamodule = MNISTDataModule(dataset=spec.name, data_dir=data_dir, **split)
    datamodule.setup("fit")
    train = datamodule.datasets["train"].images
    generator = torch.Generator().manual_seed(CALIBRATION_SEED)
    chosen = torch.randperm(len(train), generator=generator)[: min(count, len(train))]
    return (train[chosen].unsqueeze(1).float() / 255).numpy()


class _Batches:
    """onnxruntime's ``CalibrationDataReader`` protocol over an array of images (``get_next``)."""

    def __init__(self, input_name: str, images: np.ndarray) -> None:
        self._batches: Iterator[np.ndarray] = iter(
            np.array_split(images, max(1, len(images) // CALIBRATION_BATCH))
        )
        self._input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._input_name: batch}


def quantize_int8(source: Path, target: Path, images: np.ndarray) -> None:
    """Write ``target``, ``source`` statically quantized (QDQ; uint8 activations, int8 weights, per tensor)
    with activation ranges calibrated (min/max) on ``images``. ``quant_pre_process`` (shape inference and
    graph optimization) runs first, as onnxruntime's quantization guide recommends; the metadata is kept."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_name(f".prepared-{target.name}")
    source_model = onnx.load(str(source))
    input_name = source_model.graph.input[0].name
    try:
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared),
            str(target),
            _Batches(input_name, images),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        prepared.unlink(missing_ok=True)
    metadata = {entry.key: entry.value for entry in source_model.metadata_props}
    quantized = onnx.load(str(target))
    onnx.helper.set_model_props(quantized, {**metadata, "quantization": "int8 (onnxruntime static, QDQ)"})
    onnx.save(quantized, str(target))


@dataclass(frozen=True)
class QuantizedCheck:
    """The int8 file against the float one: accuracies (None without labels), agreement, sizes, latency."""

    images: int
    same_predictions: int
    float_accuracy: float | None
    int8_accuracy: float | None
    float_bytes: int
    int8_bytes: int
    float_latency_ms: float  # median single-image latency, onnxruntime on one thread
    int8_latency_ms: float
    calibration_images: int

    @property
    def accuracy_drop(self) -> float | None:
        if self.float_accuracy is None or self.int8_accuracy is None:
            return None
        return self.float_accuracy - self.int8_accuracy

    @property
    def passed(self) -> bool:
        return self.accuracy_drop is None or self.accuracy_drop <= MAX_ACCURACY_DROP


def one_thread_predictor(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """An onnxruntime session of ``path`` on the CPU with one thread, as a function of its one input."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return lambda images: session.run(None, {input_name: images})[0]


def probabilities_of(path: Path, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    """The file's class probabilities for float32 images (N, 1, 28, 28) in [0, 1], in batches."""
    predict = one_thread_predictor(path)
    parts = [predict(images[start : start + batch]) for start in range(0, len(images), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def single_image_latencies(paths: list[Path], image: np.ndarray) -> list[float]:
    """The median time in milliseconds of ``LATENCY_RUNS`` single-image runs of each file (onnxruntime, one
    thread); the files take turns run by run, so a busy moment of the machine costs each of them alike."""
    predictors = [one_thread_predictor(path) for path in paths]
    timings: list[list[float]] = [[] for _ in paths]
    for _ in range(20):  # warm-up
        for predict in predictors:
            predict(image)
    for _ in range(LATENCY_RUNS):
        for predict, times in zip(predictors, timings, strict=True):
            start = time.perf_counter()
            predict(image)
            times.append((time.perf_counter() - start) * 1000)
    return [statistics.median(times) for times in timings]


def check_quantized(
    float_path: Path, int8_path: Path, images: np.ndarray, labels: np.ndarray | None, calibrated: int
) -> QuantizedCheck:
    """Compare the int8 file with the float one on ``images`` (float32 (N, 1, 28, 28) in [0, 1])."""
    float_classes = probabilities_of(float_path, images).argmax(axis=1)
    int8_classes = probabilities_of(int8_path, images).argmax(axis=1)
    float_ms, int8_ms = single_image_latencies([float_path, int8_path], images[:1])

    def accuracy(classes: np.ndarray) -> float | None:
        return None if labels is None else float((classes == labels).mean())

    return QuantizedCheck(
        images=len(images),
        same_predictions=int((float_classes == int8_classes).sum()),
        float_accuracy=accuracy(float_classes),
        int8_accuracy=accuracy(int8_classes),
        float_bytes=os.path.getsize(float_path),
        int8_bytes=os.path.getsize(int8_path),
        float_latency_ms=float_ms,
        int8_latency_ms=int8_ms,
        calibration_images=calibrated,
    )


def describe_quantized(check: QuantizedCheck, description: str) -> str:
    """The int8 check as one paragraph: accuracies, agreement, sizes and latency."""
    verdict = "passed" if check.passed else "FAILED"
    if check.accuracy_drop is None:
        accuracy = "test accuracy not measured (no labelled test set)"
    else:
        accuracy = (
            f"test accuracy {check.int8_accuracy:.2%} int8 vs {check.float_accuracy:.2%} float "
            f"(drop {check.accuracy_drop * 100:+.2f} points, at most {MAX_ACCURACY_DROP * 100:.1f} allowed)"
        )
    return (
        f"Int8 check {verdict} on {description} (calibrated on {check.calibration_images} training images): "
        f"{accuracy}, same prediction for {check.same_predictions}/{check.images}, "
        f"file {check.int8_bytes / 1000:.1f} kB vs {check.float_bytes / 1000:.1f} kB "
        f"({check.int8_bytes / check.float_bytes:.2f}x), single-image latency "
        f"{check.int8_latency_ms:.3f} ms vs {check.float_latency_ms:.3f} ms (median of {LATENCY_RUNS}, "
        "onnxruntime on one thread)."
    )


def as_inputs(checked: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """An export check's uint8 images (N, 28, 28) as the file takes them, float32 (N, 1, 28, 28) in [0, 1],
    and their labels (None for synthetic images)."""
    labels = None if checked.labels is None else checked.labels.numpy()
    return (checked.images.unsqueeze(1).float() / 255).numpy(), labels


def quantize_checked(
    path: Path, scratch: Path, data_dir: str, spec: DatasetSpec, datamodule_hparams: dict, checked: Any
) -> str:
    """Quantize the checked ONNX file ``path`` to int8 (written to ``scratch``, then renamed over ``path``)
    on calibration images of the checkpoint's training split, and check it against the float file on the
    export check's images (``export.CheckImages``); the check as a paragraph. A file that loses more than
    ``MAX_ACCURACY_DROP`` of accuracy is a UserError (the caller removes both files)."""
    calibration = calibration_images(data_dir, spec, datamodule_hparams)
    quantize_int8(path, scratch, calibration)
    check = check_quantized(path, scratch, *as_inputs(checked), calibrated=len(calibration))
    report = describe_quantized(check, checked.description)
    if not check.passed:
        raise UserError(
            f"the int8 file loses too much accuracy and is not kept. {report}"
            " Export without --quantize, or train the model longer."
        )
    scratch.replace(path)
    return report
