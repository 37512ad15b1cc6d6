"""Each private library attribute the project uses (``mnist_lightning.compat``), against the installed
libraries: an upgrade that moves one fails here, by name."""

from __future__ import annotations

import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.loggers import TensorBoardLogger

from mnist_lightning import compat
from mnist_lightning.models.classifier import MNISTClassifier
from mnist_lightning.models.nets import MLP

from helpers.commands import CONFIG


def test_a_module_built_from_python_is_not_given_its_hyperparameters_by_the_cli():
    assert compat.hyperparameters_given_by_cli() is False
    assert "net" not in MNISTClassifier(MLP()).hparams


def test_a_module_built_by_the_cli_saves_its_network_as_class_path_and_arguments(tiny_checkpoint):
    hparams = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["net"]["class_path"] == "mnist_lightning.models.nets.MLP"


def test_the_trainers_batch_limits_have_a_type_hint_that_can_be_replaced():
    parser = LightningArgumentParser()
    parser.add_lightning_class_args(Trainer, "trainer")
    limits = [a for a in compat.parser_actions(parser) if a.dest == "trainer.limit_train_batches"]
    assert limits and compat.has_type_hint(limits[0])
    compat.set_type_hint(limits[0], int | float | None)
    assert parser.parse_args(["--trainer.limit_train_batches=1"]).trainer.limit_train_batches == 1


def test_the_classes_an_option_accepts_are_listed():
    from torch import nn

    from mnist_lightning.models.nets import MLP, ConvNet

    parser = LightningArgumentParser()
    parser.add_argument("--net", type=MLP | ConvNet | nn.Module)
    [net] = [a for a in compat.parser_actions(parser) if a.dest == "net"]
    paths = compat.known_class_paths(net)
    assert paths[:2] == ["mnist_lightning.MLP", "mnist_lightning.ConvNet"] and "torch.nn.Linear" in paths


def test_subcommand_entries_and_argument_groups_are_reachable():
    parser = ArgumentParser()
    subcommands = parser.add_subcommands()
    fit = ArgumentParser()
    fit.add_argument_group("own").add_argument("--ckpt_path")
    subcommands.add_subcommand("fit", fit)
    assert [choice.dest for choice in compat.subcommand_choices(parser)] == ["fit"]
    groups = {
        group.title: [action.dest for action in actions] for group, actions in compat.argument_groups(fit)
    }
    assert "ckpt_path" in groups["own"]


def test_the_cli_keeps_a_parser_per_subcommand_and_can_build_a_fit_without_running_it(tiny_data):
    """The sweep's probe (``compat.runs_no_subcommand``) parses and builds a fit and trains nothing."""
    from mnist_lightning.cli.lightning_cli import build_cli
    from mnist_lightning.tools.sweep.trials import ProbeCLI, bare_argv

    with bare_argv():
        probe = build_cli(
            ["fit", "--config", str(CONFIG), f"--data.data_dir={tiny_data}"], cli_class=ProbeCLI
        )
    assert "fit" in compat.subcommand_parsers(probe)
    assert not hasattr(probe, "trainer"), "parsed and built: a fit that ran would have needed a Trainer"


def test_the_cli_merges_the_hyperparameters_of_the_checkpoint_it_read_without_loading_it_again(
    tmp_path, tiny_data, tiny_checkpoint, monkeypatch
):
    """``compat.merges_hyperparameters_of``: the model settings come from the checkpoint the command read at
    parse time (its label_smoothing, not the config's), and the file is loaded only that once."""
    from mnist_lightning.cli.lightning_cli import build_cli
    from mnist_lightning.tools.sweep.trials import ProbeCLI, bare_argv

    checkpoint = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["label_smoothing"] = 0.25
    path = tmp_path / "smoothed.ckpt"
    torch.save(checkpoint, path)
    loaded, torch_load = [], torch.load
    monkeypatch.setattr(
        torch, "load", lambda source, *a, **k: loaded.append(source) or torch_load(source, *a, **k)
    )
    with bare_argv():
        probe = build_cli(
            ["test", "--config", str(CONFIG), f"--data.data_dir={tiny_data}", "--ckpt_path", str(path)],
            cli_class=ProbeCLI,
        )
    assert probe.config.test.model.label_smoothing == 0.25
    assert [str(source) for source in loaded].count(str(path)) == 1


def test_the_hparams_summary_lands_in_the_loggers_event_file(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="", version="run")
    assert compat.tensorboard_experiment_if_open(logger) is None  # asking did not create a writer
    compat.add_hparams_summary(logger, {"lr": 0.001, "net": "MLP"}, ("val_acc_best",), step=0)
    assert compat.tensorboard_experiment_if_open(logger) is not None
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(
        events.PluginTagToContent("hparams")
    )
    assert events.Tags()["scalars"] == []  # the metric placeholders were not logged as points


def test_an_mlflow_loggers_tracking_uri_is_readable():
    from lightning.pytorch.loggers import MLFlowLogger

    uri = "http://127.0.0.1:1"  # a server's client connects on first use only
    assert compat.mlflow_tracking_uri(MLFlowLogger(tracking_uri=uri)) == uri


def test_a_studys_storage_and_a_trials_id_are_reachable():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    trial = study.ask()
    stored = compat.storage_of(study).get_trial(compat.trial_id_of(trial))
    assert stored.number == trial.number


def test_a_litservers_queues_are_replaced_once_it_has_made_them():
    import litserve as ls
    from litserve.transport.factory import TransportConfig

    class Echo(ls.LitAPI):
        def setup(self, device):
            pass

        def predict(self, x):
            return x

    # the LitServe bug behind the replacement; when this fails, LitServe's own fast_queue may work
    assert TransportConfig(transport_config="zmq").transport_type == "mp"
    server = ls.LitServer(Echo(), accelerator="cpu")
    compat.replace_litserve_queues(server, list, lambda consumers: ("answers", consumers))
    manager = server._init_manager(2)
    try:
        assert list(server.litapi_request_queues.values()) == [[]]
        assert server._transport == ("answers", 2)
    finally:
        manager.shutdown()


def test_callback_hooks_that_do_nothing_are_skipped_and_the_others_called_as_before(tmp_path):
    """The same hooks reach a callback that overrides them, with the same module state, as through Lightning's
    own function; Callback's empty hooks are not called; the replaced function still has Lightning's
    signature (the loops call it by keyword ``monitoring_callbacks``)."""
    import hashlib
    import inspect

    from lightning.pytorch import Callback
    from lightning.pytorch.demos.boring_classes import BoringModel
    from lightning.pytorch.trainer import call

    class Recorder(Callback):
        def __init__(self):
            self.calls = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.calls.append(("on_train_batch_end", pl_module._current_fx_name, batch_idx))

        def on_before_backward(self, trainer, pl_module, loss):
            self.calls.append(("on_before_backward", pl_module._current_fx_name))

        def on_validation_epoch_end(self, trainer, pl_module):
            self.calls.append(("on_validation_epoch_end", pl_module._current_fx_name))

    class CountsProfiledHooks(Callback):
        """Overrides nothing itself; an instance attribute is a hook too."""

    def fit() -> tuple[list, list]:
        recorder, counted = Recorder(), CountsProfiledHooks()
        counted.on_train_epoch_end = lambda trainer, pl_module: recorder.calls.append(("instance hook",))
        trainer = Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                          callbacks=[recorder, counted], default_root_dir=tmp_path)  # fmt: skip
        names = []
        profile = trainer.profiler.profile
        trainer.profiler.profile = lambda name: names.append(name) or profile(name)
        trainer.fit(BoringModel())
        return recorder.calls, names

    original = call._call_callback_hooks
    compat.skip_callback_hooks_that_do_nothing()
    try:
        patched = call._call_callback_hooks
        assert patched.skips_hooks_that_do_nothing and patched.replaces is original

        def parameters(function):
            return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]

        assert parameters(original) == parameters(patched)
        # the copy is of the body in lightning 2.5.0-2.6.6: a changed upstream function must be compared again
        source = inspect.getsource(original).encode()
        assert hashlib.sha256(source).hexdigest()[:16] == "c413fb9a6a9ce1a3", "re-check compat's copy"
        calls_after, profiled_after = fit()
    finally:
        compat.call_every_callback_hook()
    assert call._call_callback_hooks is original
    calls_before, profiled_before = fit()

    assert calls_after == calls_before
    assert ("on_train_batch_end", "on_train_batch_end", 1) in calls_after and (
        "instance hook",
    ) in calls_after
    skipped = [
        name for name in profiled_before if name.startswith("[Callback]") and name not in profiled_after
    ]
    assert skipped and all("CountsProfiledHooks" in name or "Recorder" in name for name in skipped)
    assert any(name.endswith("CountsProfiledHooks.on_train_epoch_end") for name in profiled_after)


def test_a_parse_without_defaults_holds_only_what_the_arguments_set():
    parser = LightningArgumentParser()
    parser.add_lightning_class_args(Trainer, "trainer")
    parser.add_argument("--dataset", default="MNIST")
    parser.add_argument("--num_classes", type=int, default=10)
    parser.link_arguments("dataset", "num_classes", compute_fn=len)  # its source unset: the link is skipped
    parsed = compat.parse_without_defaults(parser, ["--trainer.max_epochs=4"])
    assert parsed.as_dict() == {"trainer": {"max_epochs": 4}}


def test_a_command_leaves_lightnings_callback_hooks_as_they_were(tmp_path):
    """The CLI skips empty callback hooks only while its own command runs: a Trainer of the user's own, built
    in the same process afterwards, calls every hook as Lightning does."""
    from lightning.pytorch.trainer import call

    from helpers.inprocess import run_main

    original = call._call_callback_hooks
    status, stdout, stderr = run_main("fit", "--config", CONFIG, "--print_config", cwd=tmp_path)
    assert status == 0 and "trainer:" in stdout, stderr[-3000:]
    assert call._call_callback_hooks is original


@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
def test_the_training_loops_counters_and_the_modules_trainer_are_readable(tmp_path):
    """What the progress bar, the data module and the model read of the fit loop: batches processed and
    completed this epoch, the epoch's last batch, a mid-epoch resume; and a module's Trainer, None before."""
    from lightning.pytorch import Callback
    from lightning.pytorch.demos.boring_classes import BoringModel

    seen, starts = [], []

    class Recorder(Callback):
        def on_train_start(self, trainer, pl_module):
            counters = (
                compat.training_batches_processed(trainer),
                compat.training_batches_completed(trainer),
            )
            starts.append((compat.restarted_mid_epoch(trainer), *counters))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            counters = (
                compat.training_batches_processed(trainer),
                compat.training_batches_completed(trainer),
            )
            seen.append((*counters, compat.on_last_batch_of_epoch(trainer)))
            assert compat.attached_trainer(pl_module) is trainer
            if batch_idx == 1 and not starts[-1][0]:
                trainer.save_checkpoint(tmp_path / "mid.ckpt")

    def fit(ckpt_path=None) -> Trainer:
        trainer = Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                          callbacks=[Recorder()], default_root_dir=tmp_path)  # fmt: skip
        trainer.fit(model := BoringModel(), ckpt_path=ckpt_path)
        assert compat.attached_trainer(model) is trainer
        return trainer

    assert compat.attached_trainer(BoringModel()) is None
    trainer = fit()
    assert seen == [(1, 0, False), (2, 1, False), (3, 2, True)] and starts == [(False, 0, 0)]
    assert compat.logging_step(trainer) == 3
    seen.clear()
    fit(tmp_path / "mid.ckpt")
    # saved in batch 2's end hooks: 2 batches trained (processed), 1 through its hooks (completed)
    assert starts[1] == (True, 2, 1) and seen == [(3, 2, True)], "resumed mid-epoch: one batch left"


def test_an_evaluation_logs_at_the_step_and_epoch_it_is_given(tmp_path):
    trainer = Trainer(logger=False, enable_checkpointing=False, default_root_dir=tmp_path)
    assert compat.logging_step(trainer) == 0
    compat.set_logging_step(trainer, 120, epoch=4)
    assert compat.logging_step(trainer) == 120 and trainer.current_epoch == 4


def test_a_tensorboard_loggers_event_file_is_named(tmp_path):
    from pathlib import Path

    logger = TensorBoardLogger(tmp_path, name="", version="run")
    logger.log_metrics({"x": 1.0}, step=0)
    logger.experiment.flush()
    event_file = Path(compat.tensorboard_event_file(logger))
    assert event_file.is_file() and event_file.parent == tmp_path / "run"
    assert event_file.name.startswith("events.out.tfevents.")
