"""Experiment tracking in tests: a git work tree to run in, and a real MLflow tracking server subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from helpers.commands import subprocess_env

GIT = ("git", "-c", "user.name=Tester", "-c", "user.email=tester@example.com")
SERVER_DEADLINE = 240.0  # seconds for the server to answer /health (it creates its database first)


def git_work_tree(folder: Path) -> str:
    """A git work tree in ``folder`` with one commit on branch ``main`` (the run folders ignored); returns
    the commit's hash."""
    subprocess.run([*GIT, "init", "-q", "-b", "main"], cwd=folder, check=True)
    (folder / "experiment.yaml").write_text("trainer:\n  max_epochs: 1\n")
    (folder / ".gitignore").write_text("lightning_logs/\nmlruns/\nwandb/\n*.db\n")
    subprocess.run([*GIT, "add", "."], cwd=folder, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "start"], cwd=folder, check=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True
    ).stdout.strip()


def free_port() -> int:
    """A port on the loopback interface that nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a SQLite database and proxied artifacts in ``folder``, started as
    its own process group and waited for by polling ``/health`` until ``SERVER_DEADLINE``."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination", str(folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=subprocess_env(),
                start_new_session=True,
            )  # fmt: skip

    def wait_until_healthy(self) -> None:
        deadline = time.monotonic() + SERVER_DEADLINE
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.process.returncode}):\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"mlflow server did not answer within {SERVER_DEADLINE} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text()[-3000:]

    def stop(self) -> None:
        """SIGKILL to the server's process group (its workers too): its own shutdown is not under test, and
        a SIGTERM made the test wait 5-7 s for it."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
