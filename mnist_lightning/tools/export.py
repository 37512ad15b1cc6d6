"""``python -m mnist_lightning export``: a checkpoint as one self-contained ONNX or torch.export (.pt2) file.

The file computes ``normalize -> network -> softmax``: it takes float32 images (N, 1, 28, 28) with pixel
values in [0, 1] (white on black, as MNIST) and returns class probabilities (N, C), so a consumer needs
nothing from this project. The data set, its class names and the input convention are stored in the file
(ONNX metadata properties; a ``metadata.json`` extra file in a .pt2). After writing, the file is loaded back
with onnxruntime or ``torch.export.load`` and checked against the checkpoint on the whole test set of the
checkpoint's data set when ``--data.data_dir`` (by default the checkpoint's own data folder) holds it, else on
a fixed set of synthetic images; the file is only kept when the check passes. An existing file is only
replaced with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.cli import instantiate_module
from torch import nn

from mnist_lightning.checkpointing.checkpoints import newest_runs_checkpoint, read_checkpoint
from mnist_lightning.checkpointing.trusted_classes import add_trust_option
from mnist_lightning.cli.console import CommandParser
from mnist_lightning.cli.quiet import PT2_WRITER_WARNINGS, ignoring
from mnist_lightning.data.datasets import RAW_FILES, DatasetSpec, load_split, raw_folder, spec_of
from mnist_lightning.data.sampling import normalize
from mnist_lightning.errors import UserError
from mnist_lightning.models.classifier import MNISTClassifier
from mnist_lightning.tools import model_card
from mnist_lightning.tools.exported_files import (
    INPUT_CONVENTION,
    INPUT_NAME,
    LOADERS,
    OUTPUT_CONVENTION,
    OUTPUT_NAME,
    Predictor,
)
from mnist_lightning.tools.quantize import add_quantize_option, check_quantizable, quantize_checked

TOLERANCE = 1e-5  # largest difference in probability the check accepts between the file and the checkpoint
CHECK_BATCH = 1000  # test images per forward pass of the check
SYNTHETIC_IMAGES = 512  # images of the check when the test set is not there


class ProbabilityModel(L.LightningModule):
    """What an exported file computes: pixel values in [0, 1] -> normalized -> the network -> softmax.

    A LightningModule so that the ONNX file is written by ``LightningModule.to_onnx``.
    """

    def __init__(self, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.net, self.mean, self.std = net, mean, std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std).softmax(dim=1)


def load_classifier(
    ckpt_path: str, trusted_modules: Sequence[str] = ()
) -> tuple[MNISTClassifier, DatasetSpec]:
    """The checkpoint's classifier (with whichever network it was trained) in eval mode, and the spec of the
    data set it was trained on; a UserError for a missing, corrupt or foreign checkpoint, or one naming a
    class outside the project, torch's ``nn``/``optim`` and ``trusted_modules`` (``--trust``).

    The file is read once: the classifier is rebuilt from the checked hyperparameters by LightningCLI's own
    ``instantiate_module`` (what ``load_from_checkpoint`` calls, which would read the file again).
    """
    return classifier_of(read_checkpoint(ckpt_path, trusted_modules), ckpt_path)


def classifier_of(checkpoint: dict, ckpt_path: str) -> tuple[MNISTClassifier, DatasetSpec]:
    """The classifier of a checkpoint read (and checked) by ``read_checkpoint``, and its data set's spec."""
    spec = spec_of((checkpoint.get("datamodule_hyper_parameters") or {}).get("dataset", "MNIST"))
    hparams = {key: value for key, value in checkpoint["hyper_parameters"].items() if key != "_instantiator"}
    try:
        classifier = instantiate_module(MNISTClassifier, hparams)
        classifier.load_state_dict(checkpoint["state_dict"])
    except Exception as err:  # the network cannot be built from the saved arguments, or its weights differ
        reason = " ".join(str(err).split())
        raise UserError(
            f"cannot rebuild the network of --ckpt_path '{ckpt_path}' ({reason}). If it is your own class, "
            f"make its module importable, e.g. PYTHONPATH=<folder of the module>, and pass --trust <module>."
        ) from None
    return classifier.eval(), spec


def load_probability_model(
    ckpt_path: str, trusted_modules: Sequence[str] = ()
) -> tuple[ProbabilityModel, DatasetSpec]:
    """The checkpoint's network as a ProbabilityModel in eval mode, and the spec of its data set."""
    classifier, spec = load_classifier(ckpt_path, trusted_modules)
    return ProbabilityModel(classifier.net, spec.mean, spec.std).eval(), spec


def metadata_of(spec: DatasetSpec) -> dict[str, str]:
    """The facts a consumer needs about the file, as text: data set, class names (JSON), input and output."""
    return {
        "dataset": spec.name,
        "classes": json.dumps(list(spec.classes)),
        "input": INPUT_CONVENTION,
        "output": OUTPUT_CONVENTION,
    }


def example_images(count: int = 2) -> torch.Tensor:
    """An input of the exported shape; the batch dimension is declared dynamic, so its size is arbitrary."""
    return torch.rand(count, 1, 28, 28)


def write_onnx(model: ProbabilityModel, spec: DatasetSpec, path: Path) -> None:
    """Export with ``LightningModule.to_onnx`` (torch's dynamo-based exporter), a dynamic batch dimension and
    the metadata as ONNX metadata properties."""
    program = model.to_onnx(
        None,
        example_images(),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes={INPUT_NAME: {0: "batch"}},
        verbose=False,
    )
    program.model.metadata_props.update(metadata_of(spec))
    program.save(str(path))


def write_pt2(model: ProbabilityModel, spec: DatasetSpec, path: Path) -> None:
    """Export with ``torch.export`` (a dynamic batch dimension); the metadata is saved as an extra file."""
    program = torch.export.export(
        model, (example_images(),), dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}}
    )
    with ignoring(PT2_WRITER_WARNINGS):  # a channels_last weight (ConvNet): see quiet.PT2_WRITER_WARNINGS
        torch.export.save(program, path, extra_files={"metadata.json": json.dumps(metadata_of(spec))})


FORMATS = {
    ".onnx": ("ONNX", "onnxruntime", write_onnx, LOADERS[".onnx"]),
    ".pt2": ("torch.export", "torch.export.load", write_pt2, LOADERS[".pt2"]),
}


def format_of(path: str | os.PathLike) -> tuple[str, str, Callable, Callable]:
    """(format name, runtime name, writer, loader) for a file name ending in ``.onnx`` or ``.pt2``."""
    suffix = Path(path).suffix.lower()
    if Path(path).is_dir() or str(path).endswith(("/", os.sep)):
        raise UserError(
            f"'{path}' is a folder; name the file to write in it, e.g. {Path(path) / 'model.onnx'} (ONNX) or "
            f"{Path(path) / 'model.pt2'} (torch.export)."
        )
    if suffix not in FORMATS:
        raise UserError(
            f"'{path}' ends in '{suffix}'; the model can be exported to .onnx (ONNX) or .pt2 (torch.export)."
        )
    return FORMATS[suffix]


@dataclass(frozen=True)
class CheckImages:
    """The images the exported file is checked on: a test set (labelled), or synthetic images (not)."""

    images: torch.Tensor  # uint8 (N, 28, 28)
    labels: torch.Tensor | None
    description: str  # "the 10000 MNIST test images", for the report


def check_images(data_dir: str, spec: DatasetSpec) -> CheckImages:
    """The test set of the checkpoint's data set when ``data_dir`` holds it (a damaged one is a UserError),
    else :func:`synthetic_images`, described as such."""
    folder = raw_folder(data_dir, spec.name)
    if any((folder / name).exists() for name in RAW_FILES[False]):
        images, labels = load_split(data_dir, train=False, dataset=spec.name)
        return CheckImages(images, labels, f"the {len(labels)} {spec.name} test images")
    images = synthetic_images()
    where = (
        f"no {spec.name} test set in '{folder}'; --data.data_dir names the folder holding {spec.name}/raw/"
    )
    return CheckImages(images, None, f"{len(images)} fixed synthetic images ({where})")


def synthetic_images(count: int = SYNTHETIC_IMAGES) -> torch.Tensor:
    """The same ``count`` uint8 images (N, 28, 28) on every call: random grey levels on a share of the pixels
    that grows from none (a black image) to all."""
    generator = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (count, 28, 28), generator=generator, dtype=torch.uint8)
    share = torch.linspace(0, 1, count).view(-1, 1, 1)
    return levels * (torch.rand(count, 28, 28, generator=generator) < share)


@dataclass(frozen=True)
class ExportCheck:
    """The exported file against the checkpoint on a set of images (accuracies only on a labelled one)."""

    images: int
    max_difference: float  # largest absolute difference of a class probability
    same_predictions: int  # images for which both predict the same class
    checkpoint_accuracy: float | None
    file_accuracy: float | None

    @property
    def passed(self) -> bool:
        return self.max_difference <= TOLERANCE and self.same_predictions == self.images


def check_export(
    classifier: MNISTClassifier, spec: DatasetSpec, predict: Predictor, checked: CheckImages
) -> ExportCheck:
    """Compare the exported file with the checkpoint on uint8 images (N, 28, 28): the classifier gets them
    normalized as in training and ``predict``, the file gets the pixel values in [0, 1]."""
    images, labels = checked.images, checked.labels
    expected, found = [], []
    with torch.no_grad():
        for batch in images.split(CHECK_BATCH):
            expected.append(classifier(normalize(batch, spec.mean, spec.std)).softmax(dim=1))
            found.append(torch.from_numpy(predict((batch.unsqueeze(1).float() / 255).numpy())))
    expected, found = torch.cat(expected), torch.cat(found)
    if found.shape != expected.shape:
        raise UserError(
            f"the exported file returned shape {tuple(found.shape)}, expected {tuple(expected.shape)}."
        )
    expected_classes, found_classes = expected.argmax(dim=1), found.argmax(dim=1)

    def accuracy(classes: torch.Tensor) -> float | None:
        return None if labels is None else (classes == labels).float().mean().item()

    return ExportCheck(
        images=len(images),
        max_difference=(found - expected).abs().max().item() if len(images) else 0.0,
        same_predictions=int((expected_classes == found_classes).sum()),
        checkpoint_accuracy=accuracy(expected_classes),
        file_accuracy=accuracy(found_classes),
    )


def describe_check(check: ExportCheck, runtime: str, checked: CheckImages) -> str:
    verdict = "passed" if check.passed else "FAILED"
    accuracy = (
        f", accuracy {check.file_accuracy:.2%} vs {check.checkpoint_accuracy:.2%}"
        if check.file_accuracy is not None and check.checkpoint_accuracy is not None
        else ""
    )
    return (
        f"Check {verdict} on {checked.description}, {runtime} vs the checkpoint: "
        f"max probability difference {check.max_difference:.1e} (tolerance {TOLERANCE:.0e}), "
        f"same prediction for {check.same_predictions}/{check.images}{accuracy}."
    )


def data_folder(checkpoint: dict, data_dir: str | None) -> str:
    """``--data.data_dir`` when given, else the folder the checkpoint was trained from when it is there (as
    ``test`` and ``predict`` reuse it), else ``data``."""
    if data_dir is not None:
        return data_dir
    trained = (checkpoint.get("datamodule_hyper_parameters") or {}).get("data_dir")
    return trained if isinstance(trained, str) and Path(trained).is_dir() else "data"


def export(
    ckpt_path: str,
    output: str,
    data_dir: str | None,
    overwrite: bool = False,
    trusted_modules: Sequence[str] = (),
    quantize: str | None = None,
) -> ExportCheck:
    """Write ``output`` from ``ckpt_path``, check it (:func:`check_images`), print the result and write its
    model card beside it (``model_card.py``); ``quantize="int8"``: the checked ONNX file quantized
    (``quantize.py``) is what is written.

    The file is written under a temporary name and renamed to ``output`` only when the checks pass, so a
    failed export leaves no file behind (nor a stale one of an earlier export in its place); the card is
    written once the file is in place. An existing ``output`` or card is a UserError unless ``overwrite``.
    """
    format_name, runtime, write, load = format_of(output)
    check_quantizable(quantize, format_name, output)
    target = Path(output)
    model_card.refuse_existing(target, overwrite)
    checkpoint = read_checkpoint(ckpt_path, trusted_modules)
    classifier, spec = classifier_of(checkpoint, ckpt_path)
    facts = model_card.training_facts(checkpoint, ckpt_path)
    model = ProbabilityModel(classifier.net, spec.mean, spec.std).eval()
    data_dir = data_folder(checkpoint, data_dir)
    checked = check_images(data_dir, spec)
    # the temporary names keep the suffix, which torch.export.load requires
    partial, quantized = (target.with_name(f".{kind}-{target.name}") for kind in ("partial", "int8"))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write(model, spec, partial)
        check = check_export(classifier, spec, load(partial)[0], checked)
        if not check.passed:
            mismatch = describe_check(check, runtime, checked)
            raise UserError(f"the exported file does not match the checkpoint. {mismatch}")
        reports = [describe_check(check, runtime, checked)]
        if quantize is not None:  # the int8 file replaces the checked float one
            reports.append(quantize_checked(partial, quantized, data_dir, spec, facts.data, checked))
        card = model_card.build_card(target, load(partial)[0], spec, facts, data_dir, checked, reports)
        partial.replace(target)
        model_card.write_card(target, card)
    except OSError as err:
        raise UserError(f"cannot write '{output}' ({err.strerror or err}).") from None
    finally:
        partial.unlink(missing_ok=True)
        quantized.unlink(missing_ok=True)
    size_kb = target.stat().st_size / 1000
    kind = f"{format_name}, int8" if quantize else format_name
    print(
        f"Wrote {target} ({kind}, {size_kb:.1f} kB): input '{INPUT_NAME}' {INPUT_CONVENTION}; "
        f"output '{OUTPUT_NAME}' (N, {spec.num_classes}), {spec.name} classes {', '.join(spec.classes)}."
    )
    print("\n".join([*reports, model_card.card_summary(target)]))
    return check


def main(args: list[str]) -> None:
    """``python -m mnist_lightning export --ckpt_path CKPT --output FILE.onnx|FILE.pt2 [--data.data_dir DIR]
    [--overwrite] [--trust MODULE] [--quantize int8]``."""
    parser = CommandParser(
        "export",
        description="Export a checkpoint to ONNX (.onnx) or torch.export (.pt2), checked against it on the "
        "test set (or, without the data set, on fixed synthetic images).",
    )
    parser.add_argument(
        "--ckpt_path", required=True,
        help="checkpoint written by 'fit' (best, last: the newest run's in lightning_logs/)",
    )  # fmt: skip
    parser.add_argument("--output", required=True, help="file to write: ends in .onnx or .pt2")
    parser.add_argument(
        "--data.data_dir",
        dest="data_dir",
        metavar="DIR",
        help="folder holding <dataset>/raw/, as for fit and test (default: the checkpoint's own, as test "
        "uses, else data): the file is checked on the checkpoint's data set's test set there, else on fixed "
        "synthetic images",
    )
    parser.add_argument("--data_dir", dest="data_dir", help=argparse.SUPPRESS)  # the earlier name
    parser.add_argument("--overwrite", action="store_true", help="replace --output and its card")
    add_quantize_option(parser)
    add_trust_option(parser)
    options = parser.parse_args(args)
    trusted, quantize = options.trust, options.quantize
    ckpt_path = options.ckpt_path
    if ckpt_path in ("best", "last"):
        ckpt_path = newest_runs_checkpoint(ckpt_path)
        print(f"--ckpt_path {options.ckpt_path}: {ckpt_path}", flush=True)
    export(ckpt_path, options.output, options.data_dir, options.overwrite, trusted, quantize)
