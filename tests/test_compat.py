"""Each private library attribute the project uses (``mnist_lightning.compat``), against the installed
libraries: an upgrade that moves one fails here, by name."""

from __future__ import annotations

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


def test_the_cli_keeps_a_parser_per_subcommand(tiny_data):
    from mnist_lightning.cli.lightning_cli import build_cli
    from mnist_lightning.tools.sweep.trials import ProbeCLI, bare_argv

    with bare_argv():
        probe = build_cli(
            ["fit", "--config", str(CONFIG), f"--data.data_dir={tiny_data}"], cli_class=ProbeCLI
        )
    assert "fit" in compat.subcommand_parsers(probe)


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

    compat.skip_callback_hooks_that_do_nothing()
    patched = call._call_callback_hooks
    assert patched.skips_hooks_that_do_nothing
    original = patched.replaces

    def parameters(function):
        return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]

    assert parameters(original) == parameters(patched)
    # the copy is of lightning 2.6.6's body: a changed upstream function must be compared with it again
    source = inspect.getsource(original).encode()
    assert hashlib.sha256(source).hexdigest()[:16] == "c413fb9a6a9ce1a3", "re-check compat's copy"
    try:
        call._call_callback_hooks = original
        calls_before, profiled_before = fit()
    finally:
        call._call_callback_hooks = patched
    calls_after, profiled_after = fit()

    assert calls_after == calls_before
    assert ("on_train_batch_end", "on_train_batch_end", 1) in calls_after and (
        "instance hook",
    ) in calls_after
    skipped = [
        name for name in profiled_before if name.startswith("[Callback]") and name not in profiled_after
    ]
    assert skipped and all("CountsProfiledHooks" in name or "Recorder" in name for name in skipped)
    assert any(name.endswith("CountsProfiledHooks.on_train_epoch_end") for name in profiled_after)
