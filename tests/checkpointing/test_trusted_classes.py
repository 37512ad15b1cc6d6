"""A checkpoint is data: every command that reads one refuses a class path it does not trust, before
anything imports or calls it (docs/security.md, "Checkpoints")."""

from __future__ import annotations

import copy
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_lightning.checkpointing.trusted_classes import check_checkpoint_classes
from mnist_lightning.errors import UserError

from helpers.commands import CONFIG, QUICK
from helpers.inprocess import run_main

PLANTED = '''
"""A module whose import leaves a mark: a checkpoint naming it must never get it imported."""
from pathlib import Path

Path(__file__).with_name("IMPORTED").write_text("imported")


class Net:
    pass


def function(*args, **kwargs):
    Path(__file__).with_name("CALLED").write_text("called")
'''
COMMANDS = {
    "test": ("test",),
    "validate": ("validate",),
    "predict": ("predict",),
    "fit": ("fit", *QUICK),
    "export": ("export", "--output", "model.onnx"),
    "serve": ("serve", "--port", "8931"),
}


@pytest.fixture
def planted(tmp_path, monkeypatch) -> Path:
    """``planted.py`` on the import path: importing it writes ``IMPORTED`` beside it."""
    folder = tmp_path / "planted_code"
    folder.mkdir()
    (folder / "planted.py").write_text(textwrap.dedent(PLANTED))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "planted", raising=False)
    return folder


def with_hparams(source: Path, target: Path, **changes) -> Path:
    """A copy of the checkpoint ``source`` whose model hyperparameters have ``changes``."""
    checkpoint = torch.load(source, weights_only=True)
    checkpoint = copy.deepcopy(checkpoint)
    checkpoint["hyper_parameters"].update(changes)
    torch.save(checkpoint, target)
    return target


def run_command(name: str, checkpoint: Path, tiny_data: Path, cwd: Path, *extra: str) -> tuple[int, str, str]:
    command, *options = COMMANDS[name]
    data = [] if name == "serve" else [f"--data.data_dir={tiny_data}"]
    config = [] if name in ("export", "serve") else ["--config", CONFIG]
    return run_main(command, *config, *data, "--ckpt_path", checkpoint, *options, *extra, cwd=cwd)


def assert_refused(status: int, stderr: str, named: str) -> None:
    assert status == 2, stderr[-2000:]
    assert stderr.startswith("error: "), stderr[-2000:]
    assert named in stderr and "Traceback" not in stderr
    assert "See docs/security.md." in stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_a_class_path_from_an_untrusted_module_is_refused_before_it_is_imported(
    command, tmp_path, tiny_checkpoint, tiny_data, planted
):
    evil = with_hparams(tiny_checkpoint, tmp_path / "evil.ckpt", net={"class_path": "planted.Net"})
    status, stdout, stderr = run_command(command, evil, tiny_data, tmp_path)
    assert_refused(status, stderr, "'planted.Net' (model.net) from the module 'planted'")
    assert "planted" not in sys.modules and not (planted / "IMPORTED").exists()
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_network_that_runs_source_code_is_refused(command, tmp_path, tiny_checkpoint, tiny_data):
    """torch.fx's ``reduce_graph_module`` executes the ``import_block`` it is given: a shell command here."""
    marker = tmp_path / "PWNED"
    net = {
        "class_path": "torch.fx.graph_module.reduce_graph_module",
        "init_args": {"body": {"code": "x = 1"}, "import_block": f"open({str(marker)!r}, 'w')\n"},
    }
    evil = with_hparams(tiny_checkpoint, tmp_path / "fx.ckpt", net=net)
    status, stdout, stderr = run_command(command, evil, tiny_data, tmp_path)
    assert_refused(status, stderr, "torch.fx.graph_module.reduce_graph_module")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"optimizer": {"class_path": "torch.optim.adam.adam", "init_args": {}}}, "which is a function"),
        ({"optimizer": "planted.function"}, "'planted.function' (model.optimizer) from the module"),
        (
            {"optimizer": {"class_path": "torch.optim.lr_scheduler.LambdaLR", "init_args": {}}},
            "which is not a torch.optim.Optimizer",
        ),
        (
            {
                "scheduler": {
                    "class_path": "torch.optim.lr_scheduler.LambdaLR",
                    "init_args": {"lr_lambda": "planted.function"},
                }
            },
            "'planted.function' (model.scheduler.init_args.lr_lambda)",
        ),
        ({"_instantiator": "planted.function"}, "an instantiator 'planted.function'"),
        ({"net": "planted.Net"}, "'planted.Net' (model.net)"),
    ],
    ids=["function", "function-string", "wrong-kind", "nested-callable", "instantiator", "net-string"],
)
@pytest.mark.parametrize("command", ["test", "export"])
def test_functions_wrong_kinds_and_nested_import_paths_are_refused(
    command, changes, named, tmp_path, tiny_checkpoint, tiny_data, planted
):
    evil = with_hparams(tiny_checkpoint, tmp_path / "evil.ckpt", **changes)
    status, stdout, stderr = run_command(command, evil, tiny_data, tmp_path)
    assert_refused(status, stderr, named)
    assert "planted" not in sys.modules and not list(planted.glob("IMPORTED")) + list(planted.glob("CALLED"))


def test_a_checkpoint_never_picks_the_folder_data_is_downloaded_into(tmp_path, tiny_checkpoint, tiny_data):
    """The recorded data folder is used only when it holds the data set: an empty one is left alone."""
    victim = tmp_path / "victim"
    victim.mkdir()
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["datamodule_hyper_parameters"]["data_dir"] = str(victim)
    torch.save(checkpoint, tmp_path / "elsewhere.ckpt")
    shutil.copytree(tiny_data, tmp_path / "data")  # the default data folder holds the data
    status, stdout, stderr = run_main(
        "test", "--config", CONFIG, "--ckpt_path", tmp_path / "elsewhere.ckpt", cwd=tmp_path
    )
    assert status == 0, stderr[-2000:]
    assert list(victim.iterdir()) == []


# ---- property-based: any hyperparameters either pass or are one UserError, and import nothing untrusted


# made-up paths, and real modules that no test imports (importing one would show in sys.modules)
import_paths = st.from_regex(r"\A[a-z_]{1,8}(\.[A-Za-z_]{1,8}){1,3}\Z") | st.sampled_from(
    ["this.Foo", "tabnanny.NannyNag", "mailbox.Mailbox", "netrc.netrc", "torch.nn.Linear", "torch.optim.SGD"]
)
values = st.recursive(
    st.none() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20) | import_paths,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["class_path", "init_args", "a", "net", "lr"]) | st.text(max_size=8),
            children,
            max_size=4,
        )
    ),  # fmt: skip
    max_leaves=20,
)
hyperparameters = st.dictionaries(
    st.sampled_from(["net", "optimizer", "scheduler", "num_classes", "label_smoothing", "_instantiator"]),
    values,
    max_size=6,
)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(hparams=hyperparameters, data_hparams=st.dictionaries(st.text(max_size=8), values, max_size=4))
def test_any_hyperparameters_pass_or_are_refused_without_importing_an_untrusted_module(hparams, data_hparams):
    before = set(sys.modules)
    checkpoint = {"hyper_parameters": hparams, "datamodule_hyper_parameters": data_hparams}
    try:
        check_checkpoint_classes(checkpoint, "fuzzed.ckpt", (), "pass --trust {module}")
    except UserError as err:
        assert str(err).startswith("--ckpt_path 'fuzzed.ckpt' names ")
    imported = {
        name for name in set(sys.modules) - before if not name.startswith(("torch.", "mnist_lightning."))
    }
    assert not imported


@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.binary(max_size=2000))
def test_any_bytes_as_a_checkpoint_are_one_clear_error(tmp_path_factory, data):
    from mnist_lightning.checkpointing.checkpoints import read_checkpoint

    path = tmp_path_factory.mktemp("bytes") / "random.ckpt"
    path.write_bytes(data)
    with pytest.raises(UserError, match="--ckpt_path '.*random.ckpt' "):
        read_checkpoint(str(path))
