"""``export --quantize int8``: the int8 file, its check against the float file, and its refusals."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from mnist_lightning.cli.main import main
from mnist_lightning.data.datasets import load_split
from mnist_lightning.tools import quantize

from helpers.idx import TINY_TEST, TINY_TRAIN


def run_export(*args: object) -> None:
    main(["export", *map(str, args)])


def file_classes(path, images: torch.Tensor) -> np.ndarray:
    """The classes an ONNX file predicts for uint8 images (N, 28, 28), run here with onnxruntime."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {"images": (images.unsqueeze(1).float() / 255).numpy()})
    return probabilities.argmax(axis=1)


def test_an_int8_export_is_quantized_checked_against_the_float_file_and_reported(
    tmp_path, tiny_data, tiny_checkpoint, capsys
):
    float_file, int8_file = tmp_path / "float" / "model.onnx", tmp_path / "model.onnx"
    run_export("--ckpt_path", tiny_checkpoint, "--output", float_file, "--data.data_dir", tiny_data)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_export(
            "--ckpt_path", tiny_checkpoint, "--output", int8_file, "--data.data_dir", tiny_data,
            "--quantize", "int8",
        )  # fmt: skip
    assert [str(warning.message) for warning in caught] == []
    stdout, stderr = capsys.readouterr()
    assert stderr == ""

    images, labels = load_split(tiny_data, train=False)
    float_classes, int8_classes = file_classes(float_file, images), file_classes(int8_file, images)
    float_accuracy = (float_classes == labels.numpy()).mean()
    int8_accuracy = (int8_classes == labels.numpy()).mean()
    float_kb, int8_kb = float_file.stat().st_size / 1000, int8_file.stat().st_size / 1000
    calibrated = TINY_TRAIN - 64  # the checkpoint's training split: QUICK's val_size is 64
    assert f"Wrote {int8_file} (ONNX, int8, {int8_kb:.1f} kB)" in stdout
    assert (
        f"Int8 check passed on the {TINY_TEST} MNIST test images "
        f"(calibrated on {calibrated} training images): "
        f"test accuracy {int8_accuracy:.2%} int8 vs {float_accuracy:.2%} float "
        f"(drop {(float_accuracy - int8_accuracy) * 100:+.2f} points, at most 0.5 allowed), "
        f"same prediction for {(float_classes == int8_classes).sum()}/{TINY_TEST}, "
        f"file {int8_kb:.1f} kB vs {float_kb:.1f} kB ({int8_kb / float_kb:.2f}x), single-image latency "
    ) in stdout
    assert re.search(
        r"latency \d+\.\d{3} ms vs \d+\.\d{3} ms \(median of 500, onnxruntime on one thread\)", stdout
    )

    model = onnx.load(str(int8_file))
    operators = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= operators  # QDQ format
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert sum(np.prod(t.dims) for t in int8_weights) > 100_000  # the MLP's weights, stored as int8
    assert int8_kb < 0.35 * float_kb
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    assert json.loads(metadata["classes"]) == [str(digit) for digit in range(10)]
    assert metadata["quantization"] == "int8 (onnxruntime static, QDQ)"
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "float", "model.onnx", "model.onnx.md", "model.onnx.reliability.png"
    ]  # fmt: skip


def test_calibration_images_come_from_the_checkpoints_training_split_not_val_or_test(tiny_data):
    """The data module's own split (val_size and seed of the checkpoint): no validation or test image."""
    from mnist_lightning.data.datamodule import MNISTDataModule
    from mnist_lightning.data.datasets import spec_of

    images = quantize.calibration_images(
        str(tiny_data), spec_of("MNIST"), {"val_size": 64, "seed": 42}, count=100
    )
    assert images.shape == (100, 1, 28, 28) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 1
    datamodule = MNISTDataModule(data_dir=str(tiny_data), val_size=64, seed=42)
    datamodule.setup("fit")
    as_rows = {
        row.tobytes() for row in (datamodule.datasets["train"].images.unsqueeze(1).float() / 255).numpy()
    }
    val_rows = {
        row.tobytes() for row in (datamodule.datasets["val"].images.unsqueeze(1).float() / 255).numpy()
    }
    chosen = {row.tobytes() for row in images}
    assert chosen <= as_rows and not chosen & val_rows
    again = quantize.calibration_images(
        str(tiny_data), spec_of("MNIST"), {"val_size": 64, "seed": 42}, count=100
    )
    np.testing.assert_array_equal(images, again)  # seeded


def test_an_int8_file_that_loses_too_much_accuracy_is_refused_and_no_file_is_left(
    tmp_path, tiny_data, tiny_checkpoint, capsys, monkeypatch
):
    monkeypatch.setattr(quantize, "MAX_ACCURACY_DROP", -1.0)  # no file can pass
    output = tmp_path / "model.onnx"
    with pytest.raises(SystemExit) as exit_:
        run_export(
            "--ckpt_path",
            tiny_checkpoint,
            "--output",
            output,
            "--data.data_dir",
            tiny_data,
            "--quantize",
            "int8",
        )
    assert exit_.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith(
        "error: the int8 file loses too much accuracy and is not kept. Int8 check FAILED on "
    )
    assert (
        stderr.endswith("Export without --quantize, or train the model longer.\n") and stderr.count("\n") == 1
    )
    assert list(tmp_path.iterdir()) == []


def test_quantize_with_a_pt2_file_is_refused(tmp_path, tiny_data, tiny_checkpoint, capsys):
    output = tmp_path / "model.pt2"
    with pytest.raises(SystemExit) as exit_:
        run_export(
            "--ckpt_path",
            tiny_checkpoint,
            "--output",
            output,
            "--data.data_dir",
            tiny_data,
            "--quantize",
            "int8",
        )
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"error: --quantize int8 quantizes ONNX files with onnxruntime; '{output}' is a torch.export file. "
        "Give an --output ending in .onnx, or export without --quantize.\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_quantize_without_the_training_images_is_refused(tmp_path, tiny_checkpoint, capsys):
    nowhere = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as exit_:
        run_export(
            "--ckpt_path", tiny_checkpoint, "--output", tmp_path / "m.onnx", "--data.data_dir", nowhere,
            "--quantize", "int8",
        )  # fmt: skip
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"error: --quantize int8 calibrates on the MNIST training images, which are not in "
        f"'{nowhere / 'MNIST' / 'raw'}'; --data.data_dir names the folder holding MNIST/raw/.\n"
    )
    assert list(tmp_path.iterdir()) == []
