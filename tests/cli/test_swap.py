"""Swapping the network and the data set by config: built-in and a person's own network, MNIST, Fashion-MNIST
and KMNIST, and the same report files from the Python API as from the command line."""

from __future__ import annotations

import csv
import json
import re
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch

from mnist_lightning.callbacks import PredictionWriter, TestMetricsWriter, TestReport
from mnist_lightning.data.datamodule import MNISTDataModule
from mnist_lightning.data.datasets import DATASETS, RAW_FILES
from mnist_lightning.errors import UserError
from mnist_lightning.models.classifier import MNISTClassifier
from mnist_lightning.models.nets import ConvNet

from helpers.commands import CONFIG, QUICK
from helpers.idx import write_mnist
from helpers.inprocess import run_main

TINY_NET = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    """A person's own network: one hidden layer of ``width`` units."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU())
        self.out = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x))
'''


@pytest.fixture
def own_network(tmp_path, monkeypatch) -> str:
    """A module ``my_nets`` with ``TinyNet``, written into a folder on the import path, as a user would."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "my_nets.py").write_text(textwrap.dedent(TINY_NET))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "my_nets", raising=False)
    return "my_nets.TinyNet"


def fit(cwd: Path, data: Path, *extra: str) -> Path:
    status, stdout, stderr = run_main(
        "fit", "--config", CONFIG, f"--data.data_dir={data}", *QUICK, *extra, cwd=cwd
    )
    assert status == 0, stderr[-3000:]
    return cwd / stdout.split("Best checkpoint: ")[1].split()[0]


def test_a_persons_own_network_trains_tests_and_predicts_like_the_built_in_ones(
    tmp_path, tiny_data, own_network
):
    checkpoint = fit(tmp_path, tiny_data, "--model.net", own_network, "--model.net.init_args.width=24")
    hparams = torch.load(checkpoint, weights_only=True)["hyper_parameters"]
    assert hparams["net"] == {"class_path": own_network, "init_args": {"width": 24, "num_classes": 10}}

    for subcommand, output in (("test", "metrics.json"), ("predict", "predictions.csv")):
        evaluate = (subcommand, "--config", CONFIG, f"--data.data_dir={tiny_data}", "--ckpt_path", checkpoint)
        status, stdout, stderr = run_main(*evaluate, cwd=tmp_path)  # a module only the checkpoint names
        assert (
            status == 2 and "from the module 'my_nets', which nothing on this command line trusts" in stderr
        )
        assert f"name it yourself: --model.net {own_network} (or in a --config file)" in stderr
        assert not list((tmp_path / "lightning_logs").rglob(output))
        status, stdout, stderr = run_main(*evaluate, "--model.net", own_network, cwd=tmp_path)
        assert status == 0, stderr[-3000:]
        assert (
            "The checkpoint's network, TinyNet(width=24), is used instead of the TinyNet(width=16)" in stdout
        )
        assert list((tmp_path / "lightning_logs").rglob(output))


def test_a_convnet_checkpoint_tests_with_the_default_config_alone(tmp_path, tiny_data):
    checkpoint = fit(
        tmp_path, tiny_data, "--config", CONFIG.parent / "cnn.yaml", "--model.net.init_args.channels=[4,8]"
    )
    model = MNISTClassifier.load_from_checkpoint(checkpoint, map_location="cpu")
    assert isinstance(model.net, ConvNet)
    status, stdout, stderr = run_main(
        "test", "--config", CONFIG, f"--data.data_dir={tiny_data}", "--ckpt_path", checkpoint, cwd=tmp_path
    )
    assert status == 0, stderr[-3000:]
    assert "The checkpoint's network, ConvNet(channels=[4, 8]" in stdout


@pytest.mark.parametrize("dataset", ["FashionMNIST", "KMNIST"])
def test_other_data_sets_bring_their_normalization_class_names_and_report(tmp_path, dataset):
    data = write_mnist(tmp_path / "data", dataset=dataset)
    spec = DATASETS[dataset]
    module = MNISTDataModule(dataset=dataset, data_dir=str(data), val_size=64)
    module.setup("test")
    images, _ = next(iter(module.test_dataloader()))
    raw = torch.tensor(list((data / dataset / "raw" / "t10k-images-idx3-ubyte").read_bytes()[16 : 16 + 784]))
    expected = (raw.float().reshape(28, 28) / 255 - spec.mean) / spec.std
    torch.testing.assert_close(images[0, 0], expected)

    checkpoint = fit(tmp_path, data, f"--data.dataset={dataset}")
    status, stdout, stderr = run_main(
        "test", "--config", CONFIG, f"--data.dataset={dataset}", f"--data.data_dir={data}",
        "--ckpt_path", checkpoint, cwd=tmp_path,
    )  # fmt: skip
    assert status == 0, stderr[-3000:]
    [report_file] = (tmp_path / "lightning_logs").rglob("report.json")
    report = json.loads(report_file.read_text())
    assert list(report["per_class"]) == list(spec.classes)
    assert report["confusion_matrix"]["classes"] == list(spec.classes)
    assert spec.classes[-1] in stdout  # the printed classification report

    status, _, stderr = run_main(
        "predict", "--config", CONFIG, f"--data.dataset={dataset}", f"--data.data_dir={data}",
        "--ckpt_path", checkpoint, cwd=tmp_path,
    )  # fmt: skip
    assert status == 0, stderr[-3000:]
    [predictions] = (tmp_path / "lightning_logs").rglob("predictions.csv")
    rows = list(csv.DictReader(predictions.open()))
    assert all(row["predicted_label"] == spec.classes[int(row["predicted_class"])] for row in rows)
    assert all(row["true_label"] == spec.classes[int(row["true_class"])] for row in rows)


def test_the_class_count_reaches_the_network_and_the_metrics_from_the_data_set(
    tmp_path, tiny_data, monkeypatch
):
    import mnist_lightning.data.datasets as datasets

    twelve = datasets.DatasetSpec("MNIST", 0.13, 0.31, tuple("abcdefghijkl"))
    monkeypatch.setitem(datasets.DATASETS, "MNIST", twelve)
    checkpoint = torch.load(fit(tmp_path, tiny_data), weights_only=True)
    assert checkpoint["hyper_parameters"]["num_classes"] == 12
    assert checkpoint["hyper_parameters"]["net"]["init_args"]["num_classes"] == 12
    assert checkpoint["state_dict"]["net.layers.5.weight"].shape == (12, 64)


@pytest.mark.parametrize("dataset", ["MNIST", "FashionMNIST", "KMNIST"])
def test_offline_without_files_names_the_data_set_its_folder_and_files(tmp_path, dataset):
    # the tests block the network (conftest.no_network): the download fails as on an offline machine
    module = MNISTDataModule(dataset=dataset, data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(UserError) as info:
        module.prepare_data()
    message = str(info.value)
    assert message.startswith(f"{dataset} is not available: downloading failed")
    assert str((tmp_path / "nowhere" / dataset / "raw").resolve()) in message
    for pair in RAW_FILES.values():
        assert all(name in message for name in pair)
    assert "--data.data_dir" in message and "shared" not in message


def test_the_python_api_writes_the_same_report_files_as_the_command_line(
    tmp_path, tiny_data, tiny_checkpoint
):
    model = MNISTClassifier.load_from_checkpoint(tiny_checkpoint, map_location="cpu")
    data = MNISTDataModule(data_dir=str(tiny_data))
    trainer = L.Trainer(
        default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[TestMetricsWriter(), TestReport(), PredictionWriter()],
    )  # fmt: skip
    trainer.test(model, data)
    trainer.predict(model, data)
    written = sorted(path.name for folder in ("test", "predict") for path in (tmp_path / folder).rglob("*.*"))
    assert written == sorted(
        ["metrics.json", "predictions.csv", "classification_report.txt", "report.json",
         "confusion_matrix.csv", "confusion_matrix.png", "misclassified.png"]
    )  # fmt: skip
    assert (tmp_path / "predict" / "test_set" / "predictions.csv").is_file()
    accuracy = json.loads((tmp_path / "test" / "metrics.json").read_text())["test_acc"]
    assert json.loads((tmp_path / "test" / "report.json").read_text())["accuracy"] == pytest.approx(
        accuracy, abs=1e-6
    )


def test_evaluations_use_the_checkpoints_own_data_set_split_and_folder(tmp_path):
    data = write_mnist(tmp_path / "data", dataset="FashionMNIST")
    checkpoint = fit(tmp_path, data, "--data.dataset=FashionMNIST")
    classes = list(DATASETS["FashionMNIST"].classes)
    for subcommand in ("test", "predict", "validate"):  # neither the data set nor its folder given again
        status, stdout, stderr = run_main(subcommand, "--ckpt_path", checkpoint, cwd=tmp_path)
        assert status == 0, stderr[-3000:]
        assert f"trained on FashionMNIST (data folder '{data}'): this run uses the same" in stdout
    run = checkpoint.parent.parent
    [report] = run.glob("test/*/report.json")
    assert list(json.loads(report.read_text())["per_class"]) == classes
    [predictions] = run.glob("predict/**/predictions.csv")
    assert {row["predicted_label"] for row in csv.DictReader(predictions.open())} <= set(classes)
    # validated on the 64 images it was chosen on (data.val_size=64 at fit; the recipe says 5000)
    reported = float(re.search(r"val_acc\s+│?\s*([0-9.]+)", stdout).group(1))
    assert reported == pytest.approx(float(checkpoint.stem.split("val_acc=")[1]), abs=5e-5)


@pytest.mark.parametrize("where", ["--data.dataset=KMNIST", "--config=kmnist.yaml"])
def test_asking_for_another_data_set_than_the_checkpoints_is_an_error(tmp_path, tiny_checkpoint, where):
    (tmp_path / "kmnist.yaml").write_text("data:\n  dataset: KMNIST\n")
    status, _, stderr = run_main("test", where, "--ckpt_path", tiny_checkpoint, cwd=tmp_path)
    assert status == 2 and stderr.startswith("error: ") and "Traceback" not in stderr, stderr[-3000:]
    option = where.replace("=", " ") if where.startswith("--config") else "--data.dataset"
    assert f"was trained on MNIST, but {option} asks for KMNIST" in stderr
    assert not (tmp_path / "lightning_logs").exists()
