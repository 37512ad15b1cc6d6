"""The networks and the LightningModule that trains them."""

from __future__ import annotations

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.cli import LRSchedulerCallable

from mnist_lightning.models.classifier import MNISTClassifier
from mnist_lightning.models.metrics import SampleMean, TrainAccuracy
from mnist_lightning.models.nets import MLP, ConvNet

from helpers.commands import CONFIG, QUICK
from helpers.inprocess import run_main


def test_mlp_shapes_and_parameter_count():
    net = MLP()
    assert net(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
    assert sum(p.numel() for p in net.parameters()) == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10


def test_mlp_hidden_sizes_dropout_and_batch_norm():
    net = MLP([32, 16, 8], dropout=0.2, batch_norm=True, num_classes=7)
    widths = [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [32, 16, 8, 7]
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.modules()) == 3
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in net.modules()) == 3


def test_convnet_maps_images_to_logits_for_any_class_count():
    net = ConvNet(channels=[8, 16], num_classes=5)
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 5)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == 2
    assert sum(p.numel() for p in ConvNet().parameters()) == 104_426


@pytest.mark.parametrize(
    "make,fragment",
    [
        (lambda: MLP(hidden_sizes=[]), "hidden_sizes"),
        (lambda: MLP(hidden_sizes=[64, 0]), "hidden_sizes"),
        (lambda: MLP(dropout=1.0), "dropout"),
        (lambda: ConvNet(channels=[]), "channels"),
        (lambda: ConvNet(dropout=-0.1), "dropout"),
    ],
)
def test_invalid_network_settings_are_rejected(make, fragment):
    with pytest.raises(ValueError, match=fragment):
        make()


def test_training_steps_through_the_module_overfit_one_batch():
    torch.manual_seed(0)
    model = MNISTClassifier(net=MLP())
    optimizer = model.configure_optimizers()
    batch = (torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,)))
    losses = []
    for step in range(30):
        loss = model.training_step(batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    assert model.train_acc.total.item() == 30 * 32  # training_step updated the epoch metrics


def test_default_optimizer_is_adam_at_1e_3():
    optimizer = MNISTClassifier(net=MLP()).configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == 1e-3


def scheduler_from_config(init_args: dict, class_path: str = "torch.optim.lr_scheduler.OneCycleLR"):
    """The scheduler callable exactly as LightningCLI builds it from a config (through jsonargparse)."""
    parser = ArgumentParser()
    parser.add_argument("--scheduler", type=LRSchedulerCallable)
    config = parser.parse_args(
        ["--scheduler", yaml.safe_dump({"class_path": class_path, "init_args": init_args})]
    )
    return parser.instantiate(config).scheduler


class FakeTrainer:
    estimated_stepping_batches = 123


def lr_scheduler_config(scheduler, **kwargs) -> dict:
    model = MNISTClassifier(net=MLP(), scheduler=scheduler, **kwargs)
    model.trainer = FakeTrainer()
    return model.configure_optimizers()["lr_scheduler"]


def test_one_cycle_scheduler_left_open_spans_the_whole_run_and_steps_per_batch():
    config = lr_scheduler_config(scheduler_from_config({"max_lr": 0.01}))
    assert config["interval"] == "step"
    assert config["scheduler"].total_steps == 123


def test_one_cycle_scheduler_with_its_own_length_still_steps_per_batch():
    config = lr_scheduler_config(scheduler_from_config({"max_lr": 0.01, "total_steps": 50}))
    assert config["interval"] == "step" and config["scheduler"].total_steps == 50
    config = lr_scheduler_config(scheduler_from_config({"max_lr": 0.01, "epochs": 2, "steps_per_epoch": 7}))
    assert config["interval"] == "step" and config["scheduler"].total_steps == 14


def test_other_schedulers_step_per_epoch_unless_the_config_says_otherwise():
    step_lr = scheduler_from_config({"step_size": 5}, "torch.optim.lr_scheduler.StepLR")
    assert lr_scheduler_config(step_lr)["interval"] == "epoch"
    assert lr_scheduler_config(step_lr, scheduler_interval="step")["interval"] == "step"


def test_sample_mean_weighs_batches_by_size_and_is_exact_when_shards_are_merged():
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
    from torchmetrics.classification import MulticlassAccuracy

    generator = torch.Generator().manual_seed(0)
    reference = MulticlassAccuracy(10, average="micro")
    one_device, rank0, rank1 = TrainAccuracy(), TrainAccuracy(), TrainAccuracy()
    for index, size in enumerate([64] * 9 + [17]):
        logits = torch.randn(size, 10, generator=generator)
        target = torch.randint(0, 10, (size,), generator=generator)
        reference.update(logits, target)
        one_device.update(logits, target)
        (rank0 if index % 2 == 0 else rank1).update(logits, target)
    rank0.merge_state(rank1)
    assert one_device.compute().item() == rank0.compute().item() == reference.compute().item()
    assert 0.0 < reference.compute().item() < 0.3  # chance level: random logits


def test_val_acc_best_is_the_best_val_acc_so_far_and_a_resumed_fit_keeps_the_checkpoints(tmp_path, tiny_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def logged(name: str) -> list[float]:
        values = []
        for run in sorted((tmp_path / "lightning_logs").iterdir()):
            events = EventAccumulator(str(run))
            events.Reload()
            values += (
                [event.value for event in events.Scalars(name)] if name in events.Tags()["scalars"] else []
            )
        return values

    args = ("--config", CONFIG, f"--data.data_dir={tiny_data}", *QUICK)
    status, stdout, stderr = run_main("fit", *args, "--trainer.max_epochs=3", cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    val_acc, val_acc_best = logged("val_acc"), logged("val_acc_best")
    assert len(val_acc) == 3 and val_acc_best == [max(val_acc[: epoch + 1]) for epoch in range(3)]

    checkpoint = torch.load(next(tmp_path.glob("lightning_logs/*/checkpoints/last.ckpt")), weights_only=True)
    assert checkpoint["val_acc_best"] == val_acc_best[-1]
    checkpoint["val_acc_best"] = recorded_best = torch.tensor(0.999).item()  # better than any epoch here
    torch.save(checkpoint, tmp_path / "better.ckpt")
    status, stdout, stderr = run_main(
        "fit", *args, "--trainer.max_epochs=4", f"--ckpt_path={tmp_path / 'better.ckpt'}", cwd=tmp_path
    )
    assert status == 0, stderr[-3000:]
    assert max(logged("val_acc")) < recorded_best and logged("val_acc_best")[3:] == [recorded_best]
