"""The data module: split, determinism, batches, normalization, missing data."""

from __future__ import annotations

import pytest
import torch

from mnist_lightning.data.datamodule import MNISTDataModule
from mnist_lightning.data.datasets import DATASETS
from mnist_lightning.data.sampling import ShardedBatchSampler

from helpers.idx import TINY_TEST, TINY_TRAIN

MNIST_MEAN, MNIST_STD = DATASETS["MNIST"].mean, DATASETS["MNIST"].std


def make(data_dir, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=str(data_dir), **{"val_size": 100, "batch_size": 32, **kwargs})
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    return dm


def labels_of(loader) -> torch.Tensor:
    return torch.cat([y for _, y in loader])


def test_split_sizes_and_no_overlap(tiny_data):
    dm = make(tiny_data)
    assert len(dm.datasets["train"]) == TINY_TRAIN - 100
    assert len(dm.datasets["val"]) == 100
    assert len(dm.datasets["test"]) == TINY_TEST
    train, val = dm.split_indices(TINY_TRAIN)
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(TINY_TRAIN))


def test_split_depends_on_seed_only(tiny_data):
    first, second, other = make(tiny_data, seed=1), make(tiny_data, seed=1), make(tiny_data, seed=2)
    assert torch.equal(first.split_indices(TINY_TRAIN)[1], second.split_indices(TINY_TRAIN)[1])
    assert not torch.equal(first.split_indices(TINY_TRAIN)[1], other.split_indices(TINY_TRAIN)[1])
    assert torch.equal(labels_of(first.val_dataloader()), labels_of(second.val_dataloader()))


def test_batches_equal_torchvisions_classic_pipeline_on_the_same_files(tiny_data):
    from torchvision import datasets, transforms

    dm = make(tiny_data, eval_batch_size=32)
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    classic = datasets.MNIST(str(tiny_data), train=False, transform=to_tensor)
    expected = torch.utils.data.DataLoader(classic, batch_size=32)
    for (x_fast, y_fast), (x_classic, y_classic) in zip(dm.test_dataloader(), expected, strict=True):
        assert x_fast.shape == x_classic.shape == (len(y_fast), 1, 28, 28)
        assert x_fast.dtype == torch.float32 and y_fast.dtype == torch.int64
        assert torch.equal(x_fast, x_classic)
        assert torch.equal(y_fast, y_classic)


def test_training_batches_use_batch_size_and_evaluation_batches_eval_batch_size(tiny_data):
    dm = make(tiny_data, batch_size=32, eval_batch_size=50)
    assert {len(y) for _, y in dm.train_dataloader()} == {32, (TINY_TRAIN - 100) % 32}
    for loader in (dm.val_dataloader(), dm.test_dataloader(), dm.predict_dataloader()):
        sizes = [len(y) for _, y in loader]
        assert sizes[:-1] == [50] * (len(sizes) - 1) and 0 < sizes[-1] <= 50


def test_normalization_matches_mnist_statistics(tiny_data):
    dm = make(tiny_data)
    x = torch.cat([x for x, _ in dm.test_dataloader()])
    assert x.min().item() == pytest.approx((0 - MNIST_MEAN) / MNIST_STD, abs=1e-5)
    assert x.max().item() == pytest.approx((1 - MNIST_MEAN) / MNIST_STD, abs=1e-5)


def test_train_loader_shuffles_per_epoch_and_val_is_fixed(tiny_data):
    dm = make(tiny_data)
    loader = dm.train_dataloader()
    loader.batch_sampler.set_epoch(0)
    epoch0 = labels_of(loader)
    loader.batch_sampler.set_epoch(1)
    epoch1 = labels_of(loader)
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(epoch0.sort().values, epoch1.sort().values)
    assert torch.equal(labels_of(dm.val_dataloader()), labels_of(dm.val_dataloader()))


@pytest.mark.parametrize(
    "num_samples,batch_size,world_size", [(100, 8, 1), (100, 8, 2), (101, 8, 3), (17, 4, 4)]
)
def test_sharded_batches_cover_every_sample_once(num_samples, batch_size, world_size):
    shards = [
        list(
            ShardedBatchSampler(num_samples, batch_size, shuffle=True, seed=3, rank=r, world_size=world_size)
        )
        for r in range(world_size)
    ]
    assert len({len(batches) for batches in shards}) == 1, "every rank must take the same number of steps"
    seen = sorted(i for batches in shards for batch in batches for i in batch)
    assert seen == list(range(num_samples))
    assert all(len(batch) >= 1 for batches in shards for batch in batches)


def test_present_files_need_no_network(tiny_data, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise AssertionError("the network must not be touched when the files are present")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    MNISTDataModule(data_dir=str(tiny_data)).prepare_data()


def test_a_fit_reshuffles_every_epoch_and_uses_each_training_image_once(tiny_data):
    import lightning as L

    from mnist_lightning import MLP, MNISTClassifier

    class RecordLabels(L.Callback):
        def __init__(self):
            self.epochs: dict[int, list[torch.Tensor]] = {}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.epochs.setdefault(trainer.current_epoch, []).append(batch[1])

    dm = MNISTDataModule(data_dir=str(tiny_data), batch_size=32, val_size=100)
    record = RecordLabels()
    trainer = L.Trainer(
        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=[record],
    )  # fmt: skip
    trainer.fit(MNISTClassifier(MLP(hidden_sizes=[8])), dm)
    first, second = (torch.cat(record.epochs[epoch]) for epoch in (0, 1))
    expected = dm.datasets["train"].labels.sort().values
    assert torch.equal(first.sort().values, expected) and torch.equal(second.sort().values, expected)
    assert not torch.equal(first, second)


def test_sampler_resumed_mid_epoch_yields_exactly_the_remaining_batches():
    def batches(**resume):
        sampler = ShardedBatchSampler(100, 8, shuffle=True, seed=5, rank=1, world_size=2)
        if resume:
            sampler.resume_at(**resume)
        sampler.set_epoch(3)
        return list(sampler)

    full = batches()
    assert batches(epoch=3, batches_done=4) == full[4:]
    assert batches(epoch=2, batches_done=4) == full  # a resume point of another epoch is dropped


def test_worker_processes_load_the_same_batches_as_the_main_process(tmp_path, tiny_data, tiny_checkpoint):
    """``data.num_workers=2``: the same fit as tiny_checkpoint's (which loads in the main process), weight for
    weight, so the workers saw the same batches in the same order."""
    import re

    from helpers.commands import CONFIG, QUICK
    from helpers.inprocess import run_main

    args = ("fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *QUICK, "--data.num_workers=2")
    status, stdout, stderr = run_main(*args, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    checkpoint = tmp_path / re.search(r"Best checkpoint: (\S+)", stdout).group(1)
    with_workers = torch.load(checkpoint, weights_only=True)
    reference = torch.load(tiny_checkpoint, weights_only=True)
    assert with_workers["hyper_parameters"] == reference["hyper_parameters"]
    assert checkpoint.name == tiny_checkpoint.name  # the same epoch and validation accuracy
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(with_workers["state_dict"][name], tensor), name
