"""``fit --ckpt_path``: resuming continues the same experiment, or says why not, and touches nothing saved;
``fit --init_from`` starts a new run from a checkpoint's weights (docs/devices.md#resuming)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from helpers.commands import CONFIG, SMALL
from helpers.inprocess import run_main


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def fit(cwd: Path, tiny_data: Path, *extra: str) -> tuple[int, str, str]:
    return run_main("fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *SMALL, *extra, cwd=cwd)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_data) -> Path:
    """A default-recipe run of 2 epochs, finished."""
    cwd = tmp_path_factory.mktemp("finished")
    status, stdout, stderr = fit(cwd, tiny_data, "--trainer.max_epochs=2")
    assert status == 0, stderr[-3000:]
    return cwd


def test_a_resume_with_other_settings_is_refused_and_the_run_is_left_byte_identical(
    tmp_path, tiny_data, finished_run
):
    before = fingerprint(finished_run / "lightning_logs")
    status, stdout, stderr = fit(
        finished_run, tiny_data, "--ckpt_path", "last", "--model.optimizer.init_args.lr=0.005",
        "--trainer.max_epochs=4",
    )  # fmt: skip
    assert status == 2, stderr[-3000:]
    assert stderr.startswith(
        "error: --ckpt_path 'lightning_logs/version_0/checkpoints/last.ckpt' continues a run"
    )
    assert "model.optimizer.init_args.lr 0.005 here, 0.001 in the run" in stderr
    assert "--init_from" in stderr and "Resuming" not in stdout
    assert fingerprint(finished_run / "lightning_logs") == before


def test_fit_on_a_finished_run_says_it_is_complete_and_changes_nothing(tiny_data, finished_run):
    before = fingerprint(finished_run / "lightning_logs")
    status, stdout, stderr = fit(finished_run, tiny_data, "--ckpt_path", "last")
    assert status == 0, stderr[-3000:]
    assert "is complete (trained all 2 epochs): nothing to resume" in stdout
    assert "max_epochs" not in stderr  # not Lightning's "`max_epochs=2` reached"
    assert fingerprint(finished_run / "lightning_logs") == before


def test_more_epochs_continue_a_run_without_a_fixed_length_schedule(tmp_path, tiny_data):
    assert fit(tmp_path, tiny_data, "--trainer.max_epochs=1")[0] == 0
    status, stdout, stderr = fit(tmp_path, tiny_data, "--ckpt_path", "last", "--trainer.max_epochs=2")
    assert status == 0, stderr[-3000:]
    assert "Resuming from lightning_logs/version_0/checkpoints/last.ckpt" in stdout
    assert torch.load(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt")["epoch"] == 1
    assert sorted(path.name for path in (tmp_path / "lightning_logs").iterdir()) == ["version_0"]


def test_more_epochs_than_a_one_cycle_schedule_was_laid_out_for_is_refused(tmp_path, tiny_data):
    one_cycle = ("--config", CONFIG.parent / "fast.yaml", *SMALL, "--trainer.max_epochs=2")
    status, stdout, stderr = run_main("fit", *one_cycle, f"--data.data_dir={tiny_data}", cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    before = fingerprint(tmp_path / "lightning_logs")
    status, stdout, stderr = run_main(
        "fit", f"--data.data_dir={tiny_data}", "--ckpt_path", "last", "--trainer.max_epochs=4", cwd=tmp_path
    )
    assert status == 2, stderr[-3000:]
    assert "OneCycleLR learning-rate schedule was laid out for 2 epochs" in stderr
    assert "Traceback" not in stderr and "Tried to step" not in stderr
    assert fingerprint(tmp_path / "lightning_logs") == before


def test_init_from_starts_a_new_run_from_the_checkpoints_weights(tmp_path, tiny_data, finished_run):
    source = finished_run / "lightning_logs/version_0/checkpoints/last.ckpt"
    status, stdout, stderr = fit(
        tmp_path, tiny_data, "--init_from", source, "--model.optimizer.init_args.lr=1e-12",
        "--trainer.max_epochs=1",
    )  # fmt: skip
    assert status == 0, stderr[-3000:]
    assert f"A new run starts from the weights of {source}." in stdout
    started = torch.load(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt")["state_dict"]
    for name, tensor in torch.load(source)["state_dict"].items():
        torch.testing.assert_close(started[name], tensor, atol=1e-6, rtol=0)  # lr 1e-12: barely moved
    config = (tmp_path / "lightning_logs/version_0/config.yaml").read_text()
    assert "lr: 1.0e-12" in config


def test_init_from_and_ckpt_path_together_are_refused(tmp_path, tiny_data, finished_run):
    source = finished_run / "lightning_logs/version_0/checkpoints/last.ckpt"
    status, stdout, stderr = fit(tmp_path, tiny_data, "--init_from", source, "--ckpt_path", source)
    assert status == 2 and stderr.startswith("error: --init_from starts a new run")
