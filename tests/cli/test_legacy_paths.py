"""Checkpoints and configs written before the package was laid out in layers still work: they name their
network ``mnist_lightning.nets.MLP``, a module that has moved (``mnist_lightning.legacy``, deprecated); and
``upgrade`` rewrites them to today's paths, after which they load without the old paths."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from argparse import ArgumentError
from pathlib import Path

import pytest
import torch

from helpers.commands import CONFIG, QUICK, subprocess_env
from helpers.inprocess import run_main, run_on_checkpoint

OLD_PATHS = {"mnist_lightning.models.nets.MLP": "mnist_lightning.nets.MLP"}
REPLACED_NOTICE = "it is used instead of the"


def with_old_class_paths(value):
    if isinstance(value, dict):
        return {key: with_old_class_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [with_old_class_paths(item) for item in value]
    return OLD_PATHS.get(value, value) if isinstance(value, str) else value


@pytest.fixture(scope="module")
def old_run(tmp_path_factory, tiny_checkpoint) -> Path:
    """A copy of tiny_checkpoint's run whose checkpoint and config.yaml name the flat layout's modules."""
    run = tmp_path_factory.mktemp("old") / "lightning_logs" / "version_0"
    shutil.copytree(tiny_checkpoint.parent.parent, run)
    for path in (run / "checkpoints").glob("*.ckpt"):
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        checkpoint["hyper_parameters"] = with_old_class_paths(dict(checkpoint["hyper_parameters"]))
        torch.save(checkpoint, path)
    config = (run / "config.yaml").read_text()
    for new, old in OLD_PATHS.items():
        config = config.replace(new, old)
    (run / "config.yaml").write_text(config)
    saved = torch.load(next((run / "checkpoints").glob("epoch=*.ckpt")), weights_only=True)
    assert saved["hyper_parameters"]["net"]["class_path"] == "mnist_lightning.nets.MLP"
    assert "mnist_lightning.nets.MLP" in config
    return run


def old_checkpoint(run: Path) -> Path:
    return next((run / "checkpoints").glob("epoch=*.ckpt"))


@pytest.mark.parametrize("subcommand", ["test", "validate", "predict"])
def test_an_old_checkpoint_evaluates_without_a_notice_about_its_network(old_run, tiny_data, subcommand):
    status, stdout, stderr = run_on_checkpoint(
        subcommand,
        old_checkpoint(old_run),
        f"--data.data_dir={tiny_data}",
        "--data.val_size=64",
        cwd=old_run.parent.parent,
    )
    assert status == 0, stderr[-3000:]
    assert REPLACED_NOTICE not in stdout + stderr


def test_an_old_checkpoint_resumes_training(tmp_path, old_run, tiny_data):
    last = old_run / "checkpoints" / "last.ckpt"
    status, stdout, stderr = run_main(
        "fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *QUICK, "--trainer.max_epochs=2",
        f"--ckpt_path={last}", cwd=tmp_path,
    )  # fmt: skip
    assert status == 0, stderr[-3000:]
    assert re.search(r"Best checkpoint: \S+epoch=1", stdout)


def test_an_old_runs_config_reruns(tmp_path, old_run, tiny_data):
    status, stdout, stderr = run_main(
        "fit", "--config", old_run / "config.yaml", f"--data.data_dir={tiny_data}", *QUICK, cwd=tmp_path
    )
    assert status == 0, stderr[-3000:]
    saved = (tmp_path / "lightning_logs" / "version_0" / "config.yaml").read_text()
    assert "mnist_lightning.models.nets.MLP" in saved  # saved under the class's path of today


def test_an_old_checkpoint_exports_and_serves(tmp_path, old_run, tiny_data, capsys):
    from mnist_lightning.cli.main import main
    from mnist_lightning.tools.export import load_probability_model

    main(["export", "--ckpt_path", str(old_checkpoint(old_run)), "--output", str(tmp_path / "m.onnx"),
          "--data_dir", str(tiny_data)])  # fmt: skip
    assert "Check passed" in capsys.readouterr().out
    model, spec = load_probability_model(str(old_checkpoint(old_run)))  # what serve --ckpt_path loads
    probabilities = model(torch.zeros(2, 1, 28, 28))
    assert spec.name == "MNIST" and probabilities.shape == (2, 10)
    assert json.loads(json.dumps(spec.classes)) == [str(digit) for digit in range(10)]


def test_an_old_path_imports_with_a_deprecation_warning_and_the_moved_module_still_reloads():
    script = textwrap.dedent("""
        import importlib, warnings
        import mnist_lightning.models.nets as moved
        first_class = moved.MLP
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import mnist_lightning.nets as old
        assert old.MLP is moved.MLP and old is not moved, old
        assert [w.category for w in caught] == [DeprecationWarning], caught
        print(caught[0].message)
        assert moved.__spec__.name == "mnist_lightning.models.nets", moved.__spec__
        importlib.reload(moved)  # runs the module's code again: a new class object
        assert moved.MLP is not first_class, "reload did not run mnist_lightning.models.nets again"
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=subprocess_env(), timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mnist_lightning.nets" in result.stdout and "python -m mnist_lightning upgrade" in result.stdout


@pytest.fixture
def without_old_paths(monkeypatch):
    """The process as if the old module paths were never importable: no finder, no alias imported."""
    from mnist_lightning.legacy import MOVED, _MovedModules

    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if not isinstance(f, _MovedModules)])
    for old in MOVED:
        monkeypatch.delitem(sys.modules, old, raising=False)
        monkeypatch.delattr(sys.modules["mnist_lightning"], old.rpartition(".")[2], raising=False)


def test_upgrade_rewrites_an_old_checkpoint_and_config_which_then_load_without_the_old_paths(
    tmp_path, old_run, tiny_data, without_old_paths
):
    from mnist_lightning.models.classifier import MNISTClassifier

    checkpoint, config = tmp_path / "old.ckpt", tmp_path / "config.yaml"
    shutil.copy(old_checkpoint(old_run), checkpoint)
    shutil.copy(old_run / "config.yaml", config)
    originals = {path: path.read_bytes() for path in (checkpoint, config)}

    status, stdout, stderr = run_main("upgrade", checkpoint, config, cwd=tmp_path)

    assert status == 0, stderr
    assert stdout.count("mnist_lightning.nets.MLP -> mnist_lightning.models.nets.MLP") == 2, stdout
    for path, original in originals.items():
        assert f"kept as {path}.bak" in stdout
        assert Path(f"{path}.bak").read_bytes() == original
    assert "mnist_lightning.nets." not in str(torch.load(checkpoint, weights_only=True)) + config.read_text()
    with pytest.raises(ArgumentError, match=r"class_path 'mnist_lightning\.nets\.MLP'"):  # the original's
        MNISTClassifier.load_from_checkpoint(f"{checkpoint}.bak", weights_only=True)
    upgraded = MNISTClassifier.load_from_checkpoint(checkpoint, weights_only=True)
    assert type(upgraded.net).__module__ == "mnist_lightning.models.nets"
    status, stdout, stderr = run_on_checkpoint(
        "test", checkpoint, f"--data.data_dir={tiny_data}", "--data.val_size=64", cwd=tmp_path
    )
    assert status == 0, stderr[-3000:]
    status, stdout, stderr = run_main("fit", "--config", config, "--print_config", cwd=tmp_path)
    assert status == 0 and "class_path: mnist_lightning.models.nets.MLP" in stdout, stderr[-3000:]

    status, stdout, _ = run_main("upgrade", checkpoint, cwd=tmp_path)  # a second time: nothing to do
    assert status == 0 and "already names today's module paths" in stdout


def test_upgrade_help_imports_neither_torch_nor_lightning():
    code = (
        "import sys; from mnist_lightning.cli.main import main\n"
        "try:\n    main(['upgrade', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'lightning' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "PATH.bak" in result.stdout and result.stdout.splitlines()[-1] == "False False"


@pytest.mark.parametrize(
    "name, content",
    [
        ("notes.txt", b"mnist_lightning.nets.MLP"),
        ("model.ckpt", b"not a checkpoint"),
        ("model.ckpt", None),  # a pickle that is no checkpoint: a list
        ("config.yaml", b"- a list, not settings"),
        ("config.yaml", b"model: {net: [unclosed"),
    ],
)
def test_upgrade_refuses_a_file_that_is_no_checkpoint_or_config_and_leaves_it_as_it_is(
    tmp_path, name, content
):
    path = tmp_path / name
    if content is None:
        torch.save(["mnist_lightning.nets.MLP"], path)
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    status, stdout, stderr = run_main("upgrade", path, cwd=tmp_path)
    assert status == 2 and stderr.startswith("error: ") and str(path) in stderr, stderr
    assert "Traceback" not in stderr and stderr.count("\n") == 1
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]
