"""``export``: ONNX and torch.export files from tiny checkpoints, checked against the checkpoint; errors."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from mnist_lightning.cli.main import main
from mnist_lightning.data.datasets import load_split
from mnist_lightning.data.sampling import normalize
from mnist_lightning.models.classifier import MNISTClassifier
from mnist_lightning.tools import export as export_module

from helpers.commands import CONFIG, QUICK, run_cli
from helpers.idx import TINY_TEST
from helpers.inprocess import run_main

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CLASSES = [str(digit) for digit in range(10)]


def checkpoint_probabilities(checkpoint: Path, images: torch.Tensor) -> np.ndarray:
    """The checkpoint's class probabilities for uint8 images (N, 28, 28), computed here, independently."""
    model = MNISTClassifier.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    with torch.no_grad():
        return model(normalize(images, MNIST_MEAN, MNIST_STD)).softmax(dim=1).numpy()


def run_export(*args: object) -> None:
    main(["export", *map(str, args)])


@pytest.mark.slow  # whole processes
def test_export_to_onnx_from_the_command_line(tmp_path, tiny_data, tiny_checkpoint):
    output = tmp_path / "model.onnx"
    result = run_cli(
        "export",
        "--ckpt_path",
        tiny_checkpoint,
        "--output",
        output,
        "--data.data_dir",
        tiny_data,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""
    size_kb = output.stat().st_size / 1000
    assert f"Wrote {output} (ONNX, {size_kb:.1f} kB)" in result.stdout
    assert re.search(
        rf"Check passed on the {TINY_TEST} MNIST test images, onnxruntime vs the checkpoint: "
        rf"max probability difference \S+ \(tolerance 1e-05\), same prediction for {TINY_TEST}/{TINY_TEST}",
        result.stdout,
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "model.onnx",
        "model.onnx.md",
        "model.onnx.reliability.png",
    ]  # the file and its card (test_model_card.py), no temporary file left

    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["classes"]) == CLASSES
    assert metadata["dataset"] == "MNIST" and "[0, 1]" in metadata["input"]
    images, _ = load_split(tiny_data, train=False)
    expected = checkpoint_probabilities(tiny_checkpoint, images)
    for start, stop in ((0, 1), (1, 8), (0, TINY_TEST)):  # the batch dimension is dynamic
        pixels = (images[start:stop].unsqueeze(1).float() / 255).numpy()
        (probabilities,) = session.run(["probabilities"], {"images": pixels})
        np.testing.assert_allclose(probabilities, expected[start:stop], atol=1e-5, rtol=0)


def test_export_to_pt2(tmp_path, tiny_data, tiny_checkpoint, capsys):
    output = tmp_path / "model.pt2"
    run_export("--ckpt_path", tiny_checkpoint, "--output", output, "--data.data_dir", tiny_data)
    assert "Check passed" in capsys.readouterr().out
    extra_files = {"metadata.json": ""}
    module = torch.export.load(output, extra_files=extra_files).module()
    assert json.loads(json.loads(extra_files["metadata.json"])["classes"]) == CLASSES
    images, _ = load_split(tiny_data, train=False)
    with torch.no_grad():
        probabilities = module(images[:5].unsqueeze(1).float() / 255).numpy()
    np.testing.assert_allclose(
        probabilities, checkpoint_probabilities(tiny_checkpoint, images[:5]), atol=1e-5
    )


@pytest.mark.parametrize("net", ["mnist_lightning.models.nets.ConvNet", "helpers.own_net.TinyResNet"])
def test_export_whatever_network_the_checkpoint_holds(tmp_path, tiny_data, net, capsys):
    """No config is given to export: the checkpoint tells the network, built in or a person's own (its module
    named with --trust); no
    warning (torch's "No complete tensor found" of the ConvNet's channels_last weights does not apply)."""
    status, stdout, stderr = run_main(
        "fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", f"--model.net.class_path={net}", *QUICK,
        cwd=tmp_path,
    )  # fmt: skip
    assert status == 0, stderr[-3000:]
    checkpoint = tmp_path / re.search(r"Best checkpoint: (\S+)", stdout).group(1)
    trust = (
        [] if net.startswith("mnist_lightning.") else ["--trust", net.rpartition(".")[0]]
    )  # a person's own
    for output in (tmp_path / "model.onnx", tmp_path / "model.pt2"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_export("--ckpt_path", checkpoint, "--output", output, "--data.data_dir", tiny_data, *trust)
        assert [str(warning.message) for warning in caught] == []
        assert "Check passed" in capsys.readouterr().out
        assert output.is_file()


def test_export_without_the_data_set_checks_on_synthetic_images_and_says_so(
    tmp_path, tiny_checkpoint, capsys
):
    output, nowhere = tmp_path / "model.onnx", tmp_path / "nowhere"
    run_export("--ckpt_path", tiny_checkpoint, "--output", output, "--data.data_dir", nowhere)
    stdout = capsys.readouterr().out
    assert (
        f"Check passed on 512 fixed synthetic images (no MNIST test set in '{nowhere / 'MNIST' / 'raw'}'; "
        f"--data.data_dir names the folder holding MNIST/raw/), onnxruntime vs the checkpoint: "
    ) in stdout
    check_line = next(line for line in stdout.splitlines() if line.startswith("Check passed"))
    assert check_line.endswith("same prediction for 512/512.")  # no accuracy: the images have no labels
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx", "model.onnx.md"]


def test_without_data_dir_the_checkpoints_own_data_folder_is_used(tmp_path, tiny_checkpoint, capsys):
    # tiny_checkpoint was trained on tiny_data, named by an absolute --data.data_dir: as test and predict do
    run_export("--ckpt_path", tiny_checkpoint, "--output", tmp_path / "model.onnx")
    assert "Check passed on the 128 MNIST test images" in capsys.readouterr().out


def test_an_existing_file_is_replaced_only_with_overwrite(tmp_path, tiny_data, tiny_checkpoint, capsys):
    output = tmp_path / "model.onnx"
    output.write_text("an earlier export")
    with pytest.raises(SystemExit) as exit_:
        run_export("--ckpt_path", tiny_checkpoint, "--output", output, "--data.data_dir", tiny_data)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"error: '{output}' already exists; add --overwrite to replace it, or choose another --output.\n"
    )
    assert output.read_text() == "an earlier export"
    run_export("--ckpt_path", tiny_checkpoint, "--output", output, "--data_dir", tiny_data, "--overwrite")
    assert "Check passed on the 128 MNIST test images" in capsys.readouterr().out  # --data_dir: earlier name
    assert onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"]).get_inputs()


def test_a_corrupt_checkpoint_is_a_clear_error_and_writes_no_file(tmp_path, tiny_data, capsys):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(SystemExit) as exit_:
        run_export("--ckpt_path", corrupt, "--output", tmp_path / "model.onnx", "--data.data_dir", tiny_data)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: --ckpt_path '{corrupt}' is not a readable checkpoint")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corrupt.ckpt"]


@pytest.mark.parametrize("with_data", [True, False], ids=["test-set", "synthetic"])
def test_a_failed_check_is_an_error_and_leaves_no_file(
    tmp_path, tiny_data, tiny_checkpoint, monkeypatch, capsys, with_data
):
    write_onnx = export_module.write_onnx

    def write_a_different_model(model, spec, path):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.01)
        write_onnx(model, spec, path)
        with torch.no_grad():  # back to the checkpoint's weights, which the check compares with
            for parameter in model.parameters():
                parameter.sub_(0.01)

    name, runtime, _, load = export_module.FORMATS[".onnx"]
    monkeypatch.setitem(export_module.FORMATS, ".onnx", (name, runtime, write_a_different_model, load))
    output = tmp_path / "model.onnx"
    with pytest.raises(SystemExit) as exit_:
        data_dir = tiny_data if with_data else tmp_path / "nowhere"
        run_export("--ckpt_path", tiny_checkpoint, "--output", output, "--data.data_dir", data_dir)
    assert exit_.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: the exported file does not match the checkpoint. Check FAILED")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--output", "model.onnx", "--data.data_dir", "half"], "half/MNIST/raw/t10k-labels-idx1-ubyte"),
        (["--output", "model.tflite"], "the model can be exported to .onnx (ONNX) or .pt2"),
        (["--data.data_dir", "x"], "the following arguments are required: --output"),
        (["--output", "model.onnx", "--data.dir", "x"], "unrecognized arguments: --data.dir"),
        (["--output", "half"], "'half' is a folder; name the file to write in it, e.g. half/model.onnx"),
    ],
    ids=["half-a-test-set", "unknown-format", "no-output", "abbreviated-option", "a-folder"],
)
def test_bad_arguments_are_clear_errors(tmp_path, tiny_checkpoint, args, message, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "half" / "MNIST" / "raw").mkdir(parents=True)  # the test images without their labels
    (tmp_path / "half" / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_:
        run_export("--ckpt_path", tiny_checkpoint, *args)
    assert exit_.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and message in stderr
    assert [path.name for path in tmp_path.iterdir()] == ["half"]


def test_export_and_serve_take_the_newest_runs_best_or_last_checkpoint(tmp_path, tiny_data):
    """As test and predict do: --ckpt_path best or last names that checkpoint of the newest run in
    lightning_logs/; with no run there yet, one error line says to fit first."""
    status, _, stderr = run_main("serve", "--ckpt_path", "best", cwd=tmp_path)
    assert (
        status == 2
        and "--ckpt_path best: no checkpoint under 'lightning_logs' yet; run 'fit' first." in stderr
    )
    status, _, stderr = run_main(
        "fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *QUICK, cwd=tmp_path
    )
    assert status == 0, stderr[-3000:]
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    (best,) = checkpoints.glob("epoch=*.ckpt")
    for keyword, expected in (("best", best), ("last", checkpoints / "last.ckpt")):
        output = tmp_path / f"{keyword}.onnx"
        args = ("--ckpt_path", keyword, "--output", output, "--data.data_dir", tiny_data)
        status, stdout, stderr = run_main("export", *args, cwd=tmp_path)
        assert status == 0, stderr[-3000:]
        assert f"--ckpt_path {keyword}: {expected.relative_to(tmp_path)}\n" in stdout
        assert "Check passed" in stdout
