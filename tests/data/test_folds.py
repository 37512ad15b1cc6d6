"""k-fold cross-validation: ``data.folds`` and ``data.fold`` split the training images into disjoint folds."""

from __future__ import annotations

import torch

from mnist_lightning.data import datasets
from mnist_lightning.data.datamodule import MNISTDataModule

from helpers.commands import CONFIG
from helpers.idx import TINY_TRAIN
from helpers.inprocess import run_main


def fold_of(data_dir, fold: int, folds: int = 5, seed: int = 42) -> tuple[MNISTDataModule, torch.Tensor]:
    dm = MNISTDataModule(data_dir=str(data_dir), folds=folds, fold=fold, seed=seed)
    dm.setup("fit")
    _, labels = datasets.load_split(str(data_dir), True, "MNIST")
    return dm, dm.fold_indices(labels)[1]


def test_folds_are_disjoint_cover_the_training_images_and_hold_each_class_equally(tiny_data):
    images, labels = datasets.load_split(str(tiny_data), True, "MNIST")
    vals = []
    for fold in range(5):
        dm, val = fold_of(tiny_data, fold)
        train, same_val = dm.fold_indices(labels)
        assert torch.equal(val, same_val)
        assert sorted(train.tolist() + val.tolist()) == list(range(TINY_TRAIN)), "train is the other folds"
        assert torch.equal(dm.datasets["val"].images, images[val])  # what the model is validated on
        assert torch.equal(dm.datasets["train"].labels, labels[train])
        vals.append(val)
    everything = torch.cat(vals).tolist()
    assert sorted(everything) == list(range(TINY_TRAIN)), "disjoint, and together all training images"
    assert {len(val) for val in vals} <= {TINY_TRAIN // 5, TINY_TRAIN // 5 + 1}
    counts = torch.stack([torch.bincount(labels[val].long(), minlength=10) for val in vals])
    assert (counts.max(dim=0).values - counts.min(dim=0).values).max() <= 1, "stratified by class"


def test_folds_depend_on_the_seed(tiny_data):
    assert torch.equal(fold_of(tiny_data, 2, seed=1)[1], fold_of(tiny_data, 2, seed=1)[1])
    assert not torch.equal(fold_of(tiny_data, 2, seed=1)[1], fold_of(tiny_data, 2, seed=2)[1])


def test_fold_settings_are_checked_before_anything_runs(tmp_path, tiny_data):
    refused = {
        ("--data.folds=5", "--data.val_size=100"): "Leave out data.val_size",
        ("--data.folds=5", "--data.fold=5"): "data.fold must be between 0 and 4",
        ("--data.folds=1",): "data.folds must be at least 2",
        ("--data.fold=1",): "data.fold (1) needs data.folds",
    }
    for options, message in refused.items():
        status, _, stderr = run_main(
            "fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *options, cwd=tmp_path
        )
        assert status == 2 and message in stderr and "Traceback" not in stderr, stderr[-2000:]
        assert not (tmp_path / "lightning_logs").exists()
