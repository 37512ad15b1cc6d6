"""``serve``: the real server as a subprocess on a free port, real PNG and JPEG pictures, bad requests,
concurrency, an exported file, and stopping it with Ctrl-C."""

from __future__ import annotations

import base64
import gc
import io
import json
import logging
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Queue

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_lightning.cli.main import main
from mnist_lightning.cli.quiet import serving
from mnist_lightning.data.digits import prepare_digit
from mnist_lightning.errors import UserError
from mnist_lightning.tools.export import export, load_probability_model
from mnist_lightning.tools.serve.inference import (
    DigitClassifierAPI,
    FirstRequestLoop,
    ModelSource,
    freeze_imported_objects,
)
from mnist_lightning.tools.serve.server import listening_socket

from helpers import bombs
from helpers.commands import subprocess_env
from helpers.serving import (
    ServerProcess,
    digit_pictures,
    encoded,
    free_port,
    get,
    mapped_files,
    post,
    predict,
    process_group,
)

TOLERANCE = 1e-5


def expected_probabilities(checkpoint: Path, pictures: list[Image.Image]) -> torch.Tensor:
    """What the checkpoint's model gives the pictures after the same preparation, computed in this process."""
    model, _ = load_probability_model(str(checkpoint))
    digits = torch.from_numpy(np.stack([prepare_digit(picture) for picture in pictures]))
    with torch.no_grad():
        return model(digits.unsqueeze(1).float() / 255)


def assert_answer(answer: dict, expected: torch.Tensor, digit: int) -> None:
    assert set(answer) == {"prediction", "label", "confidence", "probabilities", "model_version"}
    assert answer["prediction"] == digit
    assert answer["label"] == str(digit)
    assert answer["confidence"] == max(answer["probabilities"])
    torch.testing.assert_close(torch.tensor(answer["probabilities"]), expected, atol=TOLERANCE, rtol=0)


def test_pictures_of_digits_get_the_right_answers(server, digit_checkpoint):
    pictures, digits = digit_pictures(20, seed=7)
    expected = expected_probabilities(digit_checkpoint, pictures)
    for index, (picture, digit) in enumerate(zip(pictures, digits, strict=True)):
        image = encoded(picture, "PNG") if index % 2 else f"data:image/jpeg;base64,{encoded(picture, 'JPEG')}"
        status, answer = predict(server.url, image)
        assert status == 200, answer
        if index % 2:  # the PNGs are lossless: exactly the pictures the expectation was computed on
            assert_answer(answer, expected[index], digit)
        else:
            assert answer["prediction"] == digit


def blank_png() -> str:
    buffer = io.BytesIO()
    Image.new("L", (64, 64), 255).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


BAD_REQUESTS = {
    "not JSON": (b"this is not json", 400, "not valid JSON"),
    "JSON but not an object": (b"[1, 2, 3]", 400, "valid dictionary"),
    "no image": (b'{"picture": "iVBORw0KGgo="}', 400, "image: field required"),
    "image not a string": (b'{"image": 7}', 400, "must be a string"),
    "image empty": (b'{"image": ""}', 400, "image: is empty"),
    "not base64": (b'{"image": "this is *not* base64!"}', 400, "not valid base64"),
    "not an image": (
        json.dumps({"image": base64.b64encode(b"GIF? no, text").decode()}).encode(),
        400,
        "not an image",
    ),
    "blank image": (json.dumps({"image": blank_png()}).encode(), 400, "no digit found"),
    "a 1 x 24,000,000 PNG of 47 KB": (
        json.dumps({"image": base64.b64encode(bombs.blank_png(1, 24_000_000)).decode()}).encode(),
        400,
        "image: is 1x24000000 pixels, over the limits of 8192 pixels a side and 16,777,216 in all",
    ),
    "an ICO carrying a 13000x13000 PNG": (
        json.dumps(
            {"image": base64.b64encode(bombs.ico_with_png(bombs.blank_png(13000, 13000))).decode()}
        ).encode(),
        400,
        "image: ICO images are not accepted; send PNG, JPEG, GIF, BMP, WebP or TIFF",
    ),
    # 30 MB: far more than the server reads before refusing, and urllib sends ``Connection: close``, so the
    # answer only arrives if the server reads the rest first (``guards.DrainBeforeRefusing``)
    "body too large": (json.dumps({"image": "A" * 30_000_000}).encode(), 413, "over the 4 MB limit"),
}


@pytest.mark.parametrize("body, status, explanation", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_a_bad_request_gets_a_4xx_that_says_why_and_the_server_still_answers(
    server, body, status, explanation
):
    got_status, answer = post(f"{server.url}/predict", body)
    assert got_status == status
    assert explanation in answer["detail"]
    pictures, digits = digit_pictures(1, seed=3)
    assert predict(server.url, encoded(pictures[0]))[1]["prediction"] == digits[0]


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", ""])
def test_a_json_body_is_read_whatever_its_content_type(server, content_type):
    """``curl -d '{"image": ...}'`` sends a form's Content-Type; a JSON body is still a JSON body."""
    pictures, digits = digit_pictures(1, seed=5)
    body = json.dumps({"image": encoded(pictures[0])}).encode()
    status, answer = post(f"{server.url}/predict", body, content_type=content_type)
    assert status == 200, answer
    assert answer["prediction"] == digits[0]
    status, answer = post(f"{server.url}/predict", b"image=abc", content_type=content_type)
    assert status == 400 and "the body is not valid JSON" in answer["detail"]


def assert_concurrent_requests_get_right_answers(url: str, checkpoint, count: int, seed: int) -> None:
    """``count`` pictures of digits sent at once: each answered 200 with the checkpoint's own answer."""
    pictures, digits = digit_pictures(count, seed=seed)
    expected = expected_probabilities(checkpoint, pictures)
    with ThreadPoolExecutor(max_workers=count) as pool:
        answers = list(pool.map(lambda picture: predict(url, encoded(picture)), pictures))
    for (status, answer), probabilities, digit in zip(answers, expected, digits, strict=True):
        assert status == 200, answer
        assert_answer(answer, probabilities, digit)


def test_100_concurrent_requests_all_get_correct_answers(server, digit_checkpoint):
    assert_concurrent_requests_get_right_answers(server.url, digit_checkpoint, 100, seed=11)


def test_bad_requests_batched_with_good_ones_do_not_fail_them(server):
    """LitServe batches concurrent requests; a bad one must not turn the answers of its batch into errors."""
    pictures, digits = digit_pictures(40, seed=13)
    bodies = [json.dumps({"image": encoded(picture)}).encode() for picture in pictures]
    bodies += [b'{"image": "not base64 at all"}'] * 40
    with ThreadPoolExecutor(max_workers=80) as pool:
        answers = list(pool.map(lambda body: post(f"{server.url}/predict", body), bodies))
    assert [status for status, _ in answers] == [200] * 40 + [400] * 40
    assert [answer["prediction"] for _, answer in answers[:40]] == digits


def test_the_page_and_the_class_names_are_served(server):
    status, page = get(f"{server.url}/")
    assert status == 200
    assert b"<canvas" in page and b"/predict" in page
    assert b"http://" not in page and b"https://" not in page  # self-contained: no external request
    assert b'<link rel="icon" href="/favicon.ico"' in page
    status, icon = get(f"{server.url}/favicon.ico")
    assert status == 200 and icon.startswith(b"<svg") and b"</svg>" in icon
    status, info = get(f"{server.url}/info")
    assert status == 200
    assert json.loads(info)["model"]["classes"] == [str(digit) for digit in range(10)]


def test_the_modules_an_onnx_server_runs_import_neither_torch_nor_lightning():
    """What the server's processes import to serve an ONNX file: the command and its options, the HTTP side
    and its metrics, the decoders' preparation, the worker's API and the loading of the file (the test
    below watches a real server's processes)."""
    code = (
        "import sys; import mnist_lightning.cli.main, mnist_lightning.tools.serve.server, "
        "mnist_lightning.tools.serve.image_text, mnist_lightning.tools.serve.inference, "
        "mnist_lightning.tools.exported_files; "
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'torch', 'lightning', 'torchvision'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "[]"


def test_litserves_warning_of_an_http_process_that_ended_by_itself_is_left_out_while_serving():
    """A terminal's Ctrl-C reaches every process of the server, and each HTTP process stops by itself;
    LitServe's shutdown then warns of each it finds ended ("Already not alive"), which is not news. Its other
    warnings show, and the filter ends with the server."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("litserve.server")
    logger.addHandler(handler)
    try:
        with serving():
            logger.warning("LitServer-1 (PID: 123): Already not alive.")
            logger.warning("LitServer-0 (PID: 122): Did not terminate gracefully. Forcibly killing.")
        logger.warning("LitServer-1 (PID: 123): Already not alive.")
    finally:
        logger.removeHandler(handler)
    assert [record.getMessage() for record in records] == [
        "LitServer-0 (PID: 122): Did not terminate gracefully. Forcibly killing.",
        "LitServer-1 (PID: 123): Already not alive.",
    ]


@pytest.mark.slow  # whole processes
def test_an_exported_onnx_file_is_served_without_torch_and_ctrl_c_stops_the_server(
    tmp_path, digit_data, digit_checkpoint
):
    exported = tmp_path / "model.onnx"
    assert export(str(digit_checkpoint), str(exported), str(digit_data)).passed
    served = ServerProcess("--model", exported, cwd=tmp_path)
    try:
        pictures, digits = digit_pictures(10, seed=17)
        expected = expected_probabilities(digit_checkpoint, pictures)
        for picture, probabilities, digit in zip(pictures, expected, digits, strict=True):
            status, answer = predict(served.url, encoded(picture))
            assert status == 200, answer
            assert_answer(answer, probabilities, digit)
        # no process of the server (itself, 2 HTTP processes, a worker, 2 fork servers, 4 image decoders,
        # multiprocessing's resource tracker) has loaded torch (nor Lightning, which imports torch); the
        # worker runs onnxruntime, and the HTTP processes, fork servers and decoders Pillow
        torch_folder = f"{Path(torch.__file__).parent}/"  # its libtorch_cpu.so, mapped by an import of torch
        processes = {pid: mapped_files(pid) for pid in process_group(served.process.pid)}
        assert len(processes) >= 10, processes.keys()
        for pid, files in processes.items():
            assert not [file for file in files if file.startswith(torch_folder)], pid
        loaded = [" ".join(files) for files in processes.values()]
        assert sum("onnxruntime" in files for files in loaded) >= 1 and sum("/PIL/" in f for f in loaded) >= 6
    finally:
        status = served.stop(signal.SIGINT)
    assert status == 0, served.stderr()[-3000:]
    # quiet: the HTTP processes got the Ctrl-C too, and LitServe need not warn that they ended before it
    assert "Traceback" not in served.stderr() and "WARNING" not in served.stderr(), served.stderr()[-3000:]


@pytest.mark.slow  # whole processes
def test_litserves_own_queues_and_a_batch_timeout_give_the_same_answers(tmp_path, digit_checkpoint):
    """The settings for other loads: LitServe's Manager queues (``--no-pipes``), one HTTP process, two
    workers, and batches that wait for more requests."""
    served = ServerProcess(
        "--ckpt_path", digit_checkpoint, "--no-pipes", "--api_servers", "1", "--workers", "2",
        "--batch_timeout", "0.002", cwd=tmp_path,
    )  # fmt: skip
    try:
        assert_concurrent_requests_get_right_answers(served.url, digit_checkpoint, 30, seed=19)
    finally:
        status = served.stop(signal.SIGTERM)
    assert status == 0, served.stderr()[-3000:]
    assert "Traceback" not in served.stderr(), served.stderr()[-3000:]


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--workers", "0", "--workers must be at least 1, got 0"),
        ("--threads", "0", "--threads must be at least 1, got 0"),
        ("--api_servers", "0", "--api_servers must be at least 1, got 0"),
        ("--batch_timeout", "-0.1", "--batch_timeout must be 0 seconds or more, got -0.1"),
    ],
)
def test_a_setting_out_of_range_is_a_usage_error(tiny_checkpoint, option, value, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--ckpt_path", str(tiny_checkpoint), option, value])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_a_batch_takes_the_requests_queued_behind_its_first_and_waits_for_none():
    source = ModelSource("model.onnx", exported=True)
    api = DigitClassifierAPI(source, ["0"], max_batch_size=2, batch_timeout=0)
    api.request_timeout = 30  # as LitServer sets it
    requests = Queue()
    for number in range(3):
        requests.put((0, f"uid{number}", time.monotonic(), f"request {number}"))
    loop = FirstRequestLoop()
    batch, timed_out = loop.get_batch_requests(api, requests, transport=None)
    assert [uid for _, uid, _ in batch] == ["uid0", "uid1"] and timed_out == []
    started = time.monotonic()
    batch, _ = loop.get_batch_requests(api, requests, transport=None)
    assert [uid for _, uid, _ in batch] == ["uid2"]
    assert time.monotonic() - started < 0.5  # no waiting for a second request
    assert loop.get_batch_requests(api, requests, transport=None) == ([], [])  # after a second with none


def test_the_objects_of_the_imported_libraries_are_left_out_of_later_collections():
    try:
        freeze_imported_objects()
        assert gc.get_freeze_count() > 100_000  # torch, FastAPI, LitServe...
    finally:
        gc.unfreeze()


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--ckpt_path", str(corrupt), "--port", str(free_port())])
    assert exit_.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: --ckpt_path") and "not a readable checkpoint" in stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::"])
def test_a_port_in_use_is_one_error_line_before_serving(tiny_checkpoint, host, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_:
            main(["serve", "--ckpt_path", str(tiny_checkpoint), "--host", host, "--port", str(port)])
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""  # not "Serving ..." first
    assert err == (
        f"error: cannot listen on {host} port {port} (Address already in use); another program listens on "
        f"port {port}: stop it, or choose another --port.\n"
    )


def test_an_address_the_machine_does_not_have_is_a_clear_error():
    with pytest.raises(UserError, match=r"cannot listen on 192\.0\.2\.1 port 8000 \(.*\); this machine has "
                       r"no such address: choose another --host"):  # fmt: skip
        listening_socket("192.0.2.1", 8000)  # TEST-NET-1: an address no machine has
