"""Every input a user can get wrong ends in one clear message and exit status 2, before anything trains,
and leaves the checkpoints and logs of earlier runs as they were."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml

from helpers.commands import CONFIG, QUICK
from helpers.idx import write_idx, write_mnist
from helpers.inprocess import run_main


@pytest.fixture(scope="module")
def previous_run(tmp_path_factory, tiny_data) -> Path:
    """A folder where one fit has already written lightning_logs/version_0 (checkpoints, config, events)."""
    cwd = tmp_path_factory.mktemp("previous")
    status, _, stderr = run_main("fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *QUICK, cwd=cwd)
    assert status == 0, stderr[-3000:]
    return cwd


@pytest.fixture
def workdir(tmp_path, previous_run) -> Path:
    shutil.copytree(previous_run / "lightning_logs", tmp_path / "lightning_logs")
    return tmp_path


def contents(folder: Path) -> dict[str, str]:
    files = (path for path in folder.rglob("*") if path.is_file())
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def assert_fails_clearly(workdir: Path, *args: object, expect: tuple[str, ...]) -> str:
    """Run the CLI in ``workdir``: status 2, each of ``expect`` in a short message, earlier runs intact."""
    before = contents(workdir / "lightning_logs")
    status, _, stderr = run_main(*args, cwd=workdir)
    assert status == 2, stderr[-3000:]
    assert stderr.startswith("error: ") or "\nerror: " in stderr
    assert "Traceback" not in stderr and "usage:" not in stderr
    for fragment in expect:
        assert fragment in stderr
    after = contents(workdir / "lightning_logs")
    assert {name: after.get(name) for name in before} == before
    assert not any("checkpoints" in name for name in after.keys() - before.keys())
    return stderr


def fit(data_dir: Path | str, *extra: object) -> tuple[object, ...]:
    return ("fit", "--config", CONFIG, f"--data.data_dir={data_dir}", *QUICK, *extra)


# ---- data ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder_exists", [False, True], ids=["missing", "empty"])
def test_data_folder_missing_or_empty_without_network(workdir, folder_exists):
    # the tests block the network (conftest.no_network): the download fails as on an offline machine
    if folder_exists:
        (workdir / "data" / "MNIST" / "raw").mkdir(parents=True)
    raw = str((workdir / "data" / "MNIST" / "raw").resolve())
    assert_fails_clearly(workdir, *fit("data"), expect=(raw, "t10k-labels-idx1-ubyte", "--data.data_dir"))
    assert (workdir / "data").exists() == folder_exists  # the folders the download made are removed


def test_a_data_set_missing_from_the_data_folder_leaves_no_folder_behind(workdir, tiny_data):
    data = shutil.copytree(tiny_data, workdir / "data")
    before = sorted(data.rglob("*"))
    assert_fails_clearly(
        workdir, *fit("data", "--data.dataset=FashionMNIST"), expect=("FashionMNIST is not available",)
    )
    assert sorted(data.rglob("*")) == before  # no empty data/FashionMNIST/raw


@pytest.fixture
def offline(monkeypatch):
    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)


def test_a_data_folder_of_gz_archives_is_extracted_offline(tmp_path, tiny_data, offline):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for idx in (tiny_data / "MNIST" / "raw").iterdir():
        (raw / f"{idx.name}.gz").write_bytes(gzip.compress(idx.read_bytes()))
    status, _, stderr = run_main(*fit("data"), cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    for idx in (tiny_data / "MNIST" / "raw").iterdir():
        assert (raw / idx.name).read_bytes() == idx.read_bytes()


def test_a_damaged_gz_archive_is_named(workdir, offline):
    raw = workdir / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(range(256)) * 40)[:-100])
    assert_fails_clearly(workdir, *fit("data"), expect=("train-images-idx3-ubyte.gz", "truncated or corrupt"))


def test_a_data_dir_that_is_a_file(workdir, offline):
    (workdir / "data").write_text("not a folder")
    stderr = assert_fails_clearly(workdir, *fit("data"), expect=("'data' is a file, not a folder",))
    assert "download" not in stderr


def test_a_failed_download_says_why(workdir, monkeypatch):
    def no_name_resolution(*args, **kwargs):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", no_name_resolution)
    assert_fails_clearly(workdir, *fit("data"), expect=("downloading failed (<urlopen error", "not known>)"))


def damaged_copy(workdir: Path, tiny_data: Path, name: str) -> Path:
    data = workdir / "data"
    shutil.copytree(tiny_data, data)
    return data / "MNIST" / "raw" / name


def test_truncated_idx_file(workdir, tiny_data):
    path = damaged_copy(workdir, tiny_data, "train-images-idx3-ubyte")
    path.write_bytes(path.read_bytes()[:5000])
    assert_fails_clearly(
        workdir, *fit("data"), expect=("MNIST/raw/train-images-idx3-ubyte", "truncated or corrupt")
    )


def test_corrupt_idx_file(workdir, tiny_data):
    path = damaged_copy(workdir, tiny_data, "t10k-images-idx3-ubyte")
    path.write_bytes(b"<html>Not Found</html>" + path.read_bytes()[22:])
    assert_fails_clearly(
        workdir,
        "test",
        *fit("data", "--ckpt_path", "last")[1:],
        expect=("MNIST/raw/t10k-images-idx3-ubyte", "corrupt"),
    )


def test_label_file_that_does_not_match_its_image_file(workdir, tiny_data):
    path = damaged_copy(workdir, tiny_data, "train-labels-idx1-ubyte")
    write_idx(path, torch.zeros(500, dtype=torch.uint8))
    assert_fails_clearly(workdir, *fit("data"), expect=("do not match", "512 images", "500 labels"))


# ---- checkpoints --------------------------------------------------------------------------------------


def last_checkpoint(workdir: Path) -> dict:
    return torch.load(workdir / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)


def test_checkpoint_that_does_not_exist(workdir, tiny_data):
    assert_fails_clearly(
        workdir, *fit(tiny_data, "--ckpt_path", "nope.ckpt"), expect=("nope.ckpt", "does not exist")
    )


def test_file_that_is_not_a_checkpoint(workdir, tiny_data):
    (workdir / "notes.ckpt").write_text("not a checkpoint")
    stderr = assert_fails_clearly(
        workdir,
        *fit(tiny_data, "--ckpt_path", "notes.ckpt"),
        expect=("notes.ckpt", "not a readable checkpoint (not a pickled checkpoint)"),
    )
    assert "weights_only" not in stderr


def test_checkpoint_with_pickled_objects_is_not_unpickled(workdir, tiny_data):
    checkpoint = last_checkpoint(workdir)
    checkpoint["extra"] = argparse.Namespace(anything="code could run here")
    torch.save(checkpoint, workdir / "pickled.ckpt")
    assert_fails_clearly(
        workdir,
        *fit(tiny_data, "--ckpt_path", "pickled.ckpt"),
        expect=("pickled.ckpt", "could run arbitrary code"),
    )


def test_checkpoint_with_code_is_refused_without_torchs_advice_to_load_it_anyway(workdir, tiny_data):
    checkpoint = last_checkpoint(workdir)
    checkpoint["extra"] = os.system
    torch.save(checkpoint, workdir / "code.ckpt")
    stderr = assert_fails_clearly(
        workdir,
        *fit(tiny_data, "--ckpt_path", "code.ckpt"),
        expect=("code.ckpt", "(posix.system)", "could run arbitrary code"),
    )
    assert "weights_only" not in stderr


def test_checkpoint_of_a_different_model(workdir, tiny_data):
    checkpoint = last_checkpoint(workdir)
    checkpoint["hyper_parameters"] = {"num_filters": 32, "kernel_size": 3}
    torch.save(checkpoint, workdir / "cnn.ckpt")
    assert_fails_clearly(
        workdir,
        "test",
        *fit(tiny_data, "--ckpt_path", "cnn.ckpt")[1:],
        expect=("different model", "num_filters"),
    )


def test_checkpoint_of_a_different_architecture(workdir, tiny_data):
    checkpoint = last_checkpoint(workdir)
    del checkpoint["hyper_parameters"]  # as from a bare Trainer.save_checkpoint of another network
    checkpoint["state_dict"] = {name: tensor[:32] for name, tensor in checkpoint["state_dict"].items()}
    torch.save(checkpoint, workdir / "narrow.ckpt")
    assert_fails_clearly(
        workdir,
        *fit(tiny_data, "--ckpt_path", "narrow.ckpt"),
        expect=(
            "different network",
            "(32, 784) in the checkpoint but (128, 784) here",
            "--model.net.init_args.hidden_sizes",
        ),
    )


# ---- settings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting,fragment",
    [
        ("--data.batch_size=0", "data.batch_size must be at least 1"),
        ("--data.eval_batch_size=0", "data.eval_batch_size must be at least 1"),
        ("--model.optimizer.init_args.lr=0", "must be greater than 0"),
        ("--model.optimizer.init_args.lr=-0.001", "must be greater than 0"),
        ("--data.val_size=0", "data.val_size must be between 1 and 59999"),
        ("--data.val_size=60000", "data.val_size must be between 1 and 59999"),
        ("--model.net.init_args.hidden_sizes=[]", "hidden_sizes must be a non-empty list"),
        ("--model.net.init_args.hidden_sizes=[64,0]", "hidden_sizes must be a non-empty list"),
        ("--model.net.init_args.dropout=1.0", "dropout must be in [0, 1)"),
        ("--model.net.init_args.dropout=-0.1", "dropout must be in [0, 1)"),
        ("--model.label_smoothing=1", "model.label_smoothing must be in [0, 1)"),
    ],
)
def test_invalid_setting(workdir, tiny_data, setting, fragment):
    assert_fails_clearly(workdir, *fit(tiny_data, setting), expect=(fragment,))


@pytest.mark.parametrize(
    "problem,args,fragment",
    [
        ("unknown key", ("--model.net.init_args.hiden_sizes=[10]",), "hiden_sizes"),
        ("unknown key in a config file", ("--config", "typo.yaml"), "hiden_sizes"),
        ("config file that does not exist", ("--config", "nope.yaml"), "nope.yaml"),
        ("value of the wrong type", ("--data.batch_size=many",), "many"),
    ],
)
def test_bad_option_or_config_file_is_one_short_message(workdir, tiny_data, problem, args, fragment):
    (workdir / "typo.yaml").write_text("model:\n  net:\n    init_args:\n      hiden_sizes: [10]\n")
    stderr = assert_fails_clearly(workdir, *fit(tiny_data), *args, expect=(fragment, "--help"))
    assert len(stderr.strip().splitlines()) <= 4


def test_a_value_of_the_wrong_type_is_one_short_message_once_pydantic_v1_is_imported(workdir, tiny_data):
    """In a process that has imported pydantic.v1 (FastAPI does: the server's tests, a notebook), jsonargparse
    4.51 warns of int's subclass ConstrainedInt while it words the error; the message stays one paragraph."""
    import pydantic.v1  # noqa: F401

    args = (*fit(tiny_data), "--data.batch_size=many")
    stderr = assert_fails_clearly(workdir, *args, expect=("many", "--help"))
    assert len(stderr.strip().splitlines()) <= 4, stderr


@pytest.mark.parametrize("option", ["--trainer.max_epoch=2", "--data.batch=16", "--print_conf"])
def test_an_abbreviated_option_is_refused_as_in_a_config_file(workdir, tiny_data, option):
    full = {"--trainer.max_epoch": "--trainer.max_epochs", "--data.batch": "--data.batch_size"}
    given = option.split("=")[0]
    stderr = assert_fails_clearly(
        workdir,
        *fit(tiny_data),
        option,
        expect=(
            f"error: unrecognized arguments: {option} (did you mean {full.get(given, '--print_config')}?)",
        ),
    )
    assert len(stderr.strip().splitlines()) == 2  # the error, and the hint to --help


def test_help_still_lists_the_options(workdir):
    status, stdout, _ = run_main("fit", "--help", cwd=workdir)
    assert status == 0 and "--data.batch_size" in stdout and "--ckpt_path" in stdout


def test_log_directory_that_cannot_be_written(workdir, tiny_data):
    (workdir / "blocker").write_text("a file where the log folder should go")
    assert_fails_clearly(
        workdir,
        *fit(tiny_data, "--trainer.logger.init_args.save_dir=blocker/logs"),
        expect=("cannot write logs and checkpoints to 'blocker/logs'", "--trainer.logger.init_args.save_dir"),
    )


def test_resume_last_with_nothing_to_resume_starts_a_new_run(tmp_path, tiny_data):
    status, stdout, stderr = run_main(*fit(write_mnist(tmp_path / "d"), "--ckpt_path", "last"), cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    assert "No checkpoint to resume under 'lightning_logs': starting a new run." in stdout
    assert (tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()


def test_test_with_last_or_best_uses_that_checkpoint_of_the_newest_run(workdir, tiny_data):
    checkpoints = "lightning_logs/version_0/checkpoints/"
    [best] = [path.name for path in (workdir / checkpoints).glob("epoch=*.ckpt")]
    for keyword, used in (("last", "last.ckpt"), ("best", best)):
        status, _, stderr = run_main("test", *fit(tiny_data, "--ckpt_path", keyword)[1:], cwd=workdir)
        assert status == 0, stderr[-3000:]
        folder = workdir / "lightning_logs" / "version_0" / "test" / Path(used).stem  # kept with its run
        assert (folder / "metrics.json").is_file()
        config = yaml.safe_load((folder / "config.yaml").read_text())
        assert config["ckpt_path"] == checkpoints + used
    assert_fails_clearly(workdir, *fit(tiny_data, "--ckpt_path", "best"), expect=("--ckpt_path last",))
