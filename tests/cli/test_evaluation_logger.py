"""An evaluation kept with its run logs as the run did: no TensorBoard file in a CSV-logger run."""

from __future__ import annotations

from helpers.commands import CONFIG, QUICK, REPO
from helpers.inprocess import run_main

CSV = REPO / "configs" / "loggers" / "csv.yaml"


def test_testing_a_csv_runs_checkpoint_writes_no_tensorboard_file(tmp_path, tiny_data):
    data = f"--data.data_dir={tiny_data}"
    status, _, stderr = run_main("fit", "--config", CONFIG, "--config", CSV, data, *QUICK, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    run = tmp_path / "lightning_logs" / "version_0"
    status, stdout, stderr = run_main(
        "test",
        "--ckpt_path",
        run / "checkpoints" / "last.ckpt",
        "--trainer.limit_test_batches=1",
        cwd=tmp_path,
    )
    assert status == 0, stderr[-3000:]
    assert "test_acc" in stdout
    assert list(run.rglob("events.out.tfevents.*")) == []
    assert (run / "test" / "last" / "metrics.csv").is_file()
    # a logger asked for is kept: TensorBoard when named
    status, _, stderr = run_main(
        "test", "--ckpt_path", run / "checkpoints" / "last.ckpt", "--trainer.limit_test_batches=1",
        "--config", REPO / "configs" / "loggers" / "tensorboard.yaml", cwd=tmp_path,
    )  # fmt: skip
    assert status == 0, stderr[-3000:]
    assert list(run.rglob("events.out.tfevents.*")) != []
