"""The network and the LightningModule."""

from __future__ import annotations

import pytest
import torch

from mnist_lightning.errors import UserError
from mnist_lightning.model import MLP, MNISTClassifier


def test_mlp_shapes_and_parameter_count():
    net = MLP()
    assert net(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
    assert sum(p.numel() for p in net.parameters()) == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10


def test_mlp_hidden_sizes_dropout_and_batch_norm():
    net = MLP([32, 16, 8], dropout=0.2, batch_norm=True)
    widths = [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [32, 16, 8, 10]
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.modules()) == 3
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in net.modules()) == 3


def test_a_few_steps_overfit_one_batch():
    torch.manual_seed(0)
    model = MNISTClassifier()
    optimizer = model.configure_optimizers()
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def test_default_optimizer_is_adam_at_1e_3():
    optimizer = MNISTClassifier().configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == 1e-3


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"hidden_sizes": []}, "hidden_sizes"),
        ({"hidden_sizes": [64, 0]}, "hidden_sizes"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_invalid_settings_are_rejected(kwargs, fragment):
    with pytest.raises(UserError, match=fragment):
        MNISTClassifier(**kwargs)


def test_one_cycle_scheduler_spans_the_whole_run_and_steps_per_batch():
    from functools import partial

    model = MNISTClassifier(scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.01))
    model.trainer = type("FakeTrainer", (), {"estimated_stepping_batches": 123})()
    config = model.configure_optimizers()
    assert config["lr_scheduler"]["interval"] == "step"
    assert config["lr_scheduler"]["scheduler"].total_steps == 123


def test_sample_mean_weighs_batches_by_size_and_is_exact_when_shards_are_merged():
    from mnist_lightning.model import SampleMean

    generator = torch.Generator().manual_seed(0)
    batches = [(torch.rand((), generator=generator) * 3, size) for size in [64] * 20 + [17, 5]]
    one_device, rank0, rank1 = SampleMean(), SampleMean(), SampleMean()
    for index, (batch_mean, size) in enumerate(batches):
        one_device.update(batch_mean, size)
        (rank0 if index % 2 == 0 else rank1).update(batch_mean, size)
    rank0.merge_state(rank1)  # what DDP's sum of the states does
    expected = sum(m.double() * n for m, n in batches) / sum(n for _, n in batches)
    assert one_device.compute().item() == rank0.compute().item() == pytest.approx(expected.item(), abs=1e-12)


def test_train_accuracy_equals_torchmetrics_accuracy_also_when_shards_are_merged():
    from mnist_lightning.model import TrainAccuracy, _accuracy

    generator = torch.Generator().manual_seed(0)
    reference, one_device, rank0, rank1 = _accuracy(), TrainAccuracy(), TrainAccuracy(), TrainAccuracy()
    for index, size in enumerate([64] * 9 + [17]):
        logits = torch.randn(size, 10, generator=generator)
        target = torch.randint(0, 10, (size,), generator=generator)
        reference.update(logits, target)
        one_device.update(logits, target)
        (rank0 if index % 2 == 0 else rank1).update(logits, target)
    rank0.merge_state(rank1)
    assert one_device.compute().item() == rank0.compute().item() == reference.compute().item()
    assert 0.0 < reference.compute().item() < 0.3  # chance level: random logits
