"""Training-batch augmentation: what it does to a batch, and that only training batches get it."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from mnist_lightning.data.augment import Augmentation
from mnist_lightning.data.datamodule import MNISTDataModule
from mnist_lightning.data.datasets import DATASETS, load_split
from mnist_lightning.errors import UserError
from mnist_lightning.models.classifier import MNISTClassifier
from mnist_lightning.models.nets import MLP

from helpers.idx import mnist_normalize as normalize

MNIST_MEAN, MNIST_STD = DATASETS["MNIST"].mean, DATASETS["MNIST"].std


def digits(tiny_data, count: int = 64) -> torch.Tensor:
    images, _ = load_split(tiny_data, train=True)
    return normalize(images[:count])


def centre_of_mass(images: torch.Tensor) -> torch.Tensor:
    """(N, 2) ink-weighted mean (x, y) pixel position of normalized images (N, 1, H, W)."""
    ink = (images[:, 0] * MNIST_STD + MNIST_MEAN).clamp(min=0)
    ys, xs = torch.meshgrid(torch.arange(ink.shape[1]), torch.arange(ink.shape[2]), indexing="ij")
    total = ink.sum(dim=(1, 2))
    return torch.stack([(ink * xs).sum(dim=(1, 2)) / total, (ink * ys).sum(dim=(1, 2)) / total], dim=1)


@pytest.mark.parametrize(
    "augment",
    [Augmentation(), Augmentation(shift=0, rotation=0, scale=0, elastic_alpha=8.0, elastic_sigma=3.0)],
)
def test_augmentation_keeps_shape_dtype_and_value_range_and_differs_per_image(tiny_data, augment):
    x = digits(tiny_data)
    torch.manual_seed(0)
    out = augment(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= x.min() - 1e-5 and out.max() <= x.max() + 1e-5
    changed = (out - x).abs().flatten(1).amax(dim=1)
    assert (changed > 0.1).all(), "every image should be distorted"


def test_zero_strength_is_the_identity(tiny_data):
    x = digits(tiny_data)
    torch.testing.assert_close(Augmentation(shift=0, rotation=0, scale=0)(x), x, atol=1e-4, rtol=0)


def test_shift_moves_each_digit_by_at_most_shift_pixels():
    squares = torch.zeros(64, 28, 28, dtype=torch.uint8)
    squares[:, 11:17, 11:17] = 255
    x = normalize(squares)
    torch.manual_seed(0)
    moved = (centre_of_mass(Augmentation(shift=2, rotation=0, scale=0)(x)) - centre_of_mass(x)).abs()
    assert moved.max() <= 2.05
    assert moved.max() > 1.0, "shifts should reach close to their bound"


@pytest.mark.parametrize("kwargs", [{"shift": -1}, {"rotation": -5}, {"scale": 1.0}, {"elastic_sigma": 0}])
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(UserError, match=next(iter(kwargs))):
        Augmentation(**kwargs)


class BatchRecorder(L.Callback):
    """Keeps every batch the model receives, per stage."""

    def __init__(self) -> None:
        self.batches: dict[str, list] = {"train": [], "val": [], "test": [], "predict": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches["train"].append(batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.batches["val"].append(batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.batches["test"].append(batch)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.batches["predict"].append(batch)


def test_only_training_batches_are_augmented(tiny_data):
    dm = MNISTDataModule(data_dir=str(tiny_data), batch_size=32, val_size=64, augment=Augmentation())
    recorder = BatchRecorder()
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=2,
        limit_test_batches=2,
        limit_predict_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    model = MNISTClassifier(MLP(hidden_sizes=[16]))
    trainer.fit(model, dm)
    trainer.test(model, dm)
    trainer.predict(model, dm)

    train_loader = dm.train_dataloader()
    train_loader.batch_sampler.set_epoch(0)
    for (x, y), (x_seen, y_seen) in zip(train_loader, recorder.batches["train"], strict=False):
        assert x_seen.shape == x.shape and x_seen.dtype == x.dtype
        assert torch.equal(y_seen, y), "augmentation must keep every label with its image"
        assert not torch.allclose(x_seen, x)
    assert len(recorder.batches["train"]) == 3
    untouched = {"val": dm.val_dataloader(), "test": dm.test_dataloader(), "predict": dm.predict_dataloader()}
    for stage, loader in untouched.items():
        seen = recorder.batches[stage]
        assert seen, stage
        for (x, y), (x_seen, y_seen) in zip(loader, seen, strict=False):
            assert torch.equal(x_seen, x) and torch.equal(y_seen, y), f"{stage} batches must not be augmented"
