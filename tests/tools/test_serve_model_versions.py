"""``serve --model_dir``: which file of the folder is served, its version, and a swap no request sees half
done: first the choice and the swap with stand-in models (no threads: one look at a time), then the real
server under concurrent requests while files are dropped into its folder and removed, and SIGHUP."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_lightning.errors import UserError
from mnist_lightning.tools.serve.model_versions import (
    ModelFolder,
    ServedModel,
    first_model,
    model_files,
    signature_of,
    version_of,
)

CLASSES = [str(digit) for digit in range(10)]
DEADLINE = 60.0  # seconds for a condition the server reaches within a second or two


def write(path: Path, content: str, mtime: int) -> Path:
    """A stand-in model file: its content names the model (see StandIns), its modification time ``mtime``."""
    path.write_text(content)
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))
    return path


class StandIns:
    """A loader of stand-in files: ``good-N`` answers probability 1 for class N, ``other-classes`` names other
    classes, ``wrong-shape`` answers one column, anything else does not load. Counts the loads."""

    def __init__(self) -> None:
        self.loads: list[str] = []

    def __call__(self, path: str):
        content = Path(path).read_text()
        self.loads.append(Path(path).name)
        if content.startswith("good-"):
            digit = int(content.removeprefix("good-"))
            return (lambda images: np.eye(10, dtype=np.float32)[[digit] * len(images)]), CLASSES
        if content == "other-classes":
            return (lambda images: np.full((len(images), 10), 0.1, np.float32)), list("abcdefghij")
        if content == "wrong-shape":
            return (lambda images: np.ones((len(images), 1), np.float32)), CLASSES
        raise ValueError("not a model file")


def served(folder: Path, loader: StandIns, first: str) -> tuple[ServedModel, list[str]]:
    switches: list[str] = []
    model = ServedModel(
        loader, CLASSES, ModelFolder(str(folder)), lambda version, _: switches.append(version)
    )
    model.start(str(folder / first))
    return model, switches


def answer(model: ServedModel) -> tuple[int, str]:
    probabilities, version = model.predict(np.zeros((3, 1, 28, 28), np.float32))
    assert probabilities.shape == (3, 10)
    return int(probabilities[0].argmax()), version.partition("@")[0]


def test_a_version_is_the_file_name_and_the_start_of_its_sha256(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"some model")
    assert version_of(path) == f"model.onnx@{hashlib.sha256(b'some model').hexdigest()[:12]}"


def test_the_newest_file_is_first_and_a_tie_goes_to_the_later_name(tmp_path):
    write(tmp_path / "b.onnx", "good-1", mtime=100)
    write(tmp_path / "a.pt2", "good-2", mtime=100)
    write(tmp_path / "old.onnx", "good-3", mtime=50)
    write(tmp_path / "notes.txt", "good-4", mtime=200)  # not a model file
    (tmp_path / "sub.onnx").mkdir()  # not a file
    assert [Path(path).name for path, _, _ in model_files(tmp_path)] == ["b.onnx", "a.pt2", "old.onnx"]


def test_the_first_model_is_the_newest_that_loads_and_the_others_are_logged(tmp_path, capsys):
    write(tmp_path / "old.onnx", "good-1", mtime=100)
    broken = write(tmp_path / "new.onnx", "broken", mtime=200)

    def classes_of(path: str) -> list[str]:
        if Path(path).read_text() == "broken":
            raise UserError("--model 'new.onnx' cannot be loaded (bad)")
        return CLASSES

    path, classes, folder = first_model(str(tmp_path), classes_of)
    assert Path(path).name == "old.onnx" and classes == CLASSES and folder.refused == (signature_of(broken),)
    assert "serve: refused new.onnx: --model 'new.onnx' cannot be loaded (bad)" in capsys.readouterr().err
    broken.unlink()
    (tmp_path / "old.onnx").unlink()
    with pytest.raises(UserError, match="has no model to serve: it has no .onnx or .pt2 file"):
        first_model(str(tmp_path), classes_of)


def test_a_new_file_is_loaded_warmed_up_and_then_served(tmp_path):
    write(tmp_path / "v1.onnx", "good-1", mtime=100)
    loader = StandIns()
    model, switches = served(tmp_path, loader, "v1.onnx")
    assert answer(model) == (1, "v1.onnx")
    model.look()
    assert loader.loads == ["v1.onnx"]  # nothing new: nothing loaded
    write(tmp_path / "v2.onnx", "good-2", mtime=200)
    model.look()
    assert answer(model) == (2, "v2.onnx")
    assert [version.partition("@")[0] for version in switches] == ["v1.onnx", "v2.onnx"]


@pytest.mark.parametrize(
    "content, why",
    [
        ("garbage", "not a model file"),
        ("other-classes", "its classes ['a', 'b'"),
        ("wrong-shape", "it answers a batch of shape (2, 1), not (2, 10)"),
    ],
)
def test_a_bad_new_file_is_refused_once_with_a_line_and_the_old_one_serves_on(tmp_path, capsys, content, why):
    write(tmp_path / "v1.onnx", "good-1", mtime=100)
    loader = StandIns()
    model, _ = served(tmp_path, loader, "v1.onnx")
    bad = write(tmp_path / "v2.onnx", content, mtime=200)
    model.look()
    model.look()
    assert answer(model) == (1, "v1.onnx")
    assert loader.loads == ["v1.onnx", "v2.onnx"]  # not tried again while it is unchanged
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("serve: refused v2.onnx (") and why in lines[0]
    assert lines[0].endswith(f"still serving {version_of(tmp_path / 'v1.onnx')}")
    write(bad, "good-2", mtime=300)  # fixed: it changed, so it is tried again
    model.look()
    assert answer(model) == (2, "v2.onnx")


def test_removing_the_served_file_rolls_back_to_the_newest_that_loads(tmp_path, capsys):
    write(tmp_path / "v1.onnx", "good-1", mtime=100)
    loader = StandIns()
    model, _ = served(tmp_path, loader, "v1.onnx")
    write(tmp_path / "v2.onnx", "broken", mtime=200)
    model.look()
    assert "refused v2.onnx" in capsys.readouterr().err
    newest = write(tmp_path / "v3.onnx", "good-3", mtime=300)
    model.look()
    assert answer(model) == (3, "v3.onnx")
    newest.unlink()
    model.look()
    assert answer(model) == (1, "v1.onnx")  # v2 was refused: v1 is the newest that loads
    assert loader.loads == ["v1.onnx", "v2.onnx", "v3.onnx", "v1.onnx"]


def test_a_reload_tries_the_refused_files_again(tmp_path, capsys):
    write(tmp_path / "v1.onnx", "good-1", mtime=100)
    write(tmp_path / "v2.onnx", "garbage", mtime=200)
    loader = StandIns()
    model, _ = served(tmp_path, loader, "v1.onnx")
    model.look()
    model.look()
    assert loader.loads == ["v1.onnx", "v2.onnx"]
    model.reload()  # SIGHUP
    model.wait_and_look()  # what the watching thread does
    assert loader.loads == ["v1.onnx", "v2.onnx", "v2.onnx"]


def test_a_model_that_fails_its_warm_up_is_never_served(tmp_path):
    write(tmp_path / "v1.onnx", "wrong-shape", mtime=100)
    with pytest.raises(ValueError, match="not \\(2, 10\\)"):
        ServedModel(StandIns(), CLASSES).start(str(tmp_path / "v1.onnx"))


# --- the real server ---------------------------------------------------------------------------------------


def onnx_file(checkpoint: Path, data_dir: Path, output: Path) -> Path:
    from mnist_lightning.tools.export import export

    assert export(str(checkpoint), str(output), str(data_dir)).passed
    return output


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, digit_checkpoint, digit_data, tiny_checkpoint, tiny_data):
    """Two ONNX files of different networks with the same classes: (old, new)."""
    folder = tmp_path_factory.mktemp("models")
    old = onnx_file(digit_checkpoint, digit_data, folder / "old.onnx")
    new = onnx_file(tiny_checkpoint, tiny_data, folder / "new.onnx")
    return old, new


def drop(source: Path, folder: Path, name: str) -> Path:
    """Put a copy of ``source`` into ``folder`` as ``name`` at once (written beside it, then renamed), newer
    than any file there."""
    target, partial = folder / name, folder / f".{name}.partial"
    partial.write_bytes(source.read_bytes())
    newest = max((path.stat().st_mtime_ns for path in folder.iterdir()), default=0) + 10**9
    os.utime(partial, ns=(newest, newest))
    os.replace(partial, target)
    return target


class Load:
    """Threads that send pictures of digits to ``/predict`` until stopped; every answer is kept."""

    def __init__(self, url: str, threads: int = 4) -> None:
        from helpers.serving import digit_pictures, encoded

        pictures, _ = digit_pictures(8, seed=23)
        self.pictures = pictures
        self.bodies = [json.dumps({"image": encoded(picture)}).encode() for picture in pictures]
        self.url, self.stopped, self.answers = url, threading.Event(), []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.send, args=(index,)) for index in range(threads)]
        for thread in self.threads:
            thread.start()

    def send(self, index: int) -> None:
        from helpers.serving import post

        count = 0
        while not self.stopped.is_set():
            number = (index + count) % len(self.bodies)
            try:
                status, answer = post(f"{self.url}/predict", self.bodies[number])
            except OSError as err:
                status, answer = -1, {"error": str(err)}
            with self.lock:
                self.answers.append((number, status, answer))
            count += 1

    def latest_versions(self, count: int = 8) -> set[str]:
        with self.lock:
            return {answer.get("model_version", "") for _, _, answer in self.answers[-count:]}

    def stop(self) -> list[tuple[int, int, dict]]:
        self.stopped.set()
        for thread in self.threads:
            thread.join()
        return self.answers


def wait_for(condition, what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"not within {deadline:.0f} s: {what}"
        time.sleep(0.05)


def expected_by_version(models: list[Path], pictures) -> dict[str, np.ndarray]:
    """What each model answers for the pictures, prepared as the server prepares them, by version."""
    from mnist_lightning.data.digits import prepare_digit
    from mnist_lightning.tools.exported_files import load_exported

    images = (np.stack([prepare_digit(picture) for picture in pictures])[:, None] / 255).astype(np.float32)
    return {version_of(path): load_exported(path)[0](images) for path in models}


def serve_folder(tmp_path: Path, first: Path, *options: str):
    """``serve --model_dir`` (and ``options``) of a new folder holding ``first`` as ``old.onnx``: the folder
    and the server."""
    from helpers.serving import ServerProcess

    folder = tmp_path / "models"
    folder.mkdir()
    drop(first, folder, "old.onnx")
    return folder, ServerProcess("--model_dir", folder, *options, cwd=tmp_path)


@pytest.mark.slow  # whole processes
def test_models_swap_under_concurrent_requests_without_a_failure(tmp_path, two_models):
    old, new = two_models
    folder, served = serve_folder(tmp_path, old)
    old_version, new_version = version_of(old), version_of(new)
    load = Load(served.url)
    try:
        wait_for(lambda: load.latest_versions() == {old_version}, "answers from the first model")
        dropped = drop(new, folder, "new.onnx")
        wait_for(lambda: load.latest_versions() == {new_version}, "answers from the new model")
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(b"not a model")
        drop(bad, folder, "v3.onnx")
        wait_for(lambda: "serve: refused v3.onnx" in served.stderr(), "the bad file refused")
        assert load.latest_versions() == {new_version}
        dropped.unlink()  # rolls back: v3 is refused, old.onnx is the newest that loads
        wait_for(lambda: load.latest_versions() == {old_version}, "answers from the old model again")
    finally:
        answers = load.stop()
        status = served.stop(signal.SIGTERM)
    assert status == 0, served.stderr()[-3000:]
    failures = [(status, answer) for _, status, answer in answers if status != 200]
    assert failures == [], failures[:5]
    expected = expected_by_version([old, new], load.pictures)
    for number, _, answer in answers:  # each answer is the whole answer of the model it names
        np.testing.assert_allclose(
            answer["probabilities"], expected[answer["model_version"]][number], atol=1e-5
        )
    versions = [answer["model_version"] for _, _, answer in answers]
    assert old_version in versions and new_version in versions and len(answers) > 50
    assert served.stderr().count("serve: refused v3.onnx") == 1  # once, not at every look
    assert "Traceback" not in served.stderr(), served.stderr()[-3000:]


@pytest.mark.slow  # whole processes
def test_sighup_loads_the_new_file_and_stops_no_process(tmp_path, two_models):
    from helpers.serving import digit_pictures, encoded, predict, process_group

    old, new = two_models
    folder, served = serve_folder(tmp_path, old, "--model_poll", "0")  # no polling
    pictures, digits = digit_pictures(4, seed=29)
    try:
        assert predict(served.url, encoded(pictures[0]))[1]["model_version"] == version_of(old)
        processes = process_group(served.process.pid)
        drop(new, folder, "new.onnx")
        served.process.send_signal(signal.SIGHUP)  # to the server's process: it passes it on to its workers
        wait_for(
            lambda: predict(served.url, encoded(pictures[1]))[1]["model_version"] == version_of(new),
            "answers from the new model after SIGHUP",
        )
        os.killpg(served.process.pid, signal.SIGHUP)  # to all its processes, as a closed terminal sends it
        for picture in pictures:  # answered: the HTTP processes, the decoders and the worker are still there
            assert predict(served.url, encoded(picture))[0] == 200
        wait_for(lambda: process_group(served.process.pid) == processes, "every process alive", 5)
    finally:
        status = served.stop(signal.SIGTERM)
    assert status == 0, served.stderr()[-3000:]
    assert "Traceback" not in served.stderr(), served.stderr()[-3000:]
