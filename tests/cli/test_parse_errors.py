"""Every mistake the parsers catch reads as the project's one ``error:`` paragraph: what was wrong, the
accepted values or the close matches, and where the presets are; never jsonargparse's type dumps."""

from __future__ import annotations

import pytest

from helpers.commands import CONFIG, REPO
from helpers.inprocess import run_main

ALL_COMMANDS = ("fit", "validate", "test", "predict", "sweep", "runs", "lr_find", "export", "serve")


def one_paragraph(tmp_path, *args: object) -> str:
    """Run the command, expect exit 2 and a single short ``error:`` paragraph; return it."""
    status, stdout, stderr = run_main(*args, cwd=tmp_path)
    assert status == 2, stdout[-2000:] + stderr[-2000:]
    assert stderr.startswith("error: "), stderr
    lines = stderr.rstrip("\n").splitlines()
    assert len(lines) <= 3 and all(line.strip() and not line.startswith(" ") for line in lines), stderr
    for noise in ("Parser key", "Union", "<class", "typing.", "Given value", "Traceback"):
        assert noise not in stderr, stderr
    return stderr


def test_the_short_name_mlp_is_the_projects_mlp(tmp_path):
    status, stdout, stderr = run_main(
        "fit", "--config", CONFIG, "--model.net", "MLP", "--model.net.hidden_sizes=[7]", "--print_config",
        cwd=tmp_path,
    )  # fmt: skip
    assert status == 0, stderr[-2000:]
    net = stdout.split("\n  net:\n", 1)[1]
    assert net.split("\n", 1)[0].strip() in (
        "class_path: mnist_lightning.MLP",
        "class_path: mnist_lightning.models.nets.MLP",
    )
    assert "hidden_sizes:\n      - 7" in net


@pytest.mark.parametrize("args", [(), ("fitt",)], ids=["none", "misspelt"])
def test_a_missing_or_misspelt_command_names_all_nine(tmp_path, args):
    message = one_paragraph(tmp_path, *args)
    assert all(command in message for command in ALL_COMMANDS), message
    if args:
        assert "'fitt'" in message and "did you mean fit?" in message


def test_a_value_of_the_wrong_type_names_the_option_and_what_it_accepts(tmp_path):
    message = one_paragraph(tmp_path, "fit", "--trainer.max_epochs", "one")
    assert "--trainer.max_epochs" in message and "'one'" in message and "a whole number" in message


def test_a_value_outside_a_list_of_choices_names_the_choices(tmp_path):
    message = one_paragraph(tmp_path, "fit", "--data.dataset", "FashionMNST")
    assert "--data.dataset" in message and "MNIST, FashionMNIST, KMNIST" in message
    assert "did you mean FashionMNIST?" in message


def test_a_network_argument_of_the_wrong_type_names_its_option(tmp_path):
    message = one_paragraph(tmp_path, "fit", "--model.net.dropout", "x")
    assert "--model.net.dropout" in message and "'x'" in message and "a number" in message


def test_an_unknown_class_name_suggests_the_close_ones(tmp_path):
    message = one_paragraph(tmp_path, "fit", "--model.optimizer", "Adamm")
    assert "--model.optimizer" in message and "'Adamm'" in message and "Adam" in message


@pytest.mark.parametrize("given", ["cnn", "configs/cnnn.yaml"])
def test_an_unknown_config_file_names_the_presets_and_the_close_match(given):
    message = one_paragraph(REPO, "fit", "--config", given, "--print_config")
    assert f"'{given}'" in message and "configs/" in message
    assert "did you mean configs/cnn.yaml?" in message
    assert "best.yaml" in message and "fast.yaml" in message  # the presets are listed


def test_an_unknown_config_file_elsewhere_still_says_where_the_presets_are(tmp_path):
    message = one_paragraph(tmp_path, "fit", "--config", "cnn")
    assert "configs/" in message and "cnn.yaml" in message


def test_a_network_module_that_does_not_import_from_this_folder_says_how_to_reach_it(
    tmp_path, tiny_checkpoint
):
    """As when a checkpoint of one's own ``my_nets.TinyNet`` is tested from another folder."""
    error = one_paragraph(
        tmp_path, "test", "--ckpt_path", tiny_checkpoint, "--model.net", "elsewhere_nets.TinyNet"
    )
    assert "'elsewhere_nets.TinyNet' names the module 'elsewhere_nets', which cannot be imported" in error
    assert "the folder that holds elsewhere_nets.py" in error and "PYTHONPATH=" in error
