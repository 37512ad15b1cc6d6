"""``serve`` for those who run it: ``/metrics`` after good and bad requests (summed over the HTTP processes
and the worker), ``/livez`` and ``/readyz``, and the model version in every answer."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from litserve.utils import WorkerSetupStatus
from prometheus_client.parser import text_string_to_metric_families

from mnist_lightning.tools.serve.inference import DigitClassifierAPI, ModelSource
from mnist_lightning.tools.serve.model_versions import version_of
from mnist_lightning.tools.serve.operations import metrics_folder
from mnist_lightning.tools.serve.preparing import ImagePreparer
from mnist_lightning.tools.serve.server import build_server

from helpers.serving import ServerProcess, digit_pictures, encoded, get, post, predict

CLASSES = [str(digit) for digit in range(10)]


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """The samples of a Prometheus text page: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def requests_counted(page: dict, path: str, status: int, reason: str) -> float:
    labels = frozenset({"path": path, "status": str(status), "reason": reason}.items())
    return page.get(("mnist_requests_total", labels), 0.0)


@pytest.mark.slow  # whole processes
def test_metrics_count_answers_by_status_and_reason_and_every_answer_names_the_version(
    tmp_path, digit_checkpoint, digit_data
):
    from mnist_lightning.tools.export import export

    model = tmp_path / "model.onnx"
    assert export(str(digit_checkpoint), str(model), str(digit_data)).passed
    served = ServerProcess("--model", model, "--api_servers", "2", cwd=tmp_path)
    version = version_of(model)
    pictures, digits = digit_pictures(6, seed=31)
    bad_bodies = {
        "not_base64": b'{"image": "*not* base64"}',
        "not_json": b"this is not json",
        "not_an_image": json.dumps({"image": base64.b64encode(b"plain text").decode()}).encode(),
        "no_image": b'{"picture": "iVBORw0KGgo="}',
    }
    try:
        assert get(f"{served.url}/livez") == (200, b"ok")
        assert get(f"{served.url}/readyz") == (200, b"ok")  # the worker loaded the model and warmed it up
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(lambda picture: predict(served.url, encoded(picture)), pictures))
        for (status, answer), digit in zip(answers, digits, strict=True):
            assert (status, answer["prediction"], answer["model_version"]) == (200, digit, version)
        for reason, body in bad_bodies.items():
            assert post(f"{served.url}/predict", body)[0] == 400, reason
        assert post(f"{served.url}/predict", bad_bodies["not_base64"])[0] == 400
        assert get(f"{served.url}/no/such/page")[0] == 404
        status, text = get(f"{served.url}/metrics")
    finally:
        assert served.stop(signal.SIGTERM) == 0, served.stderr()[-3000:]
    assert status == 200
    page = samples(text.decode())
    assert requests_counted(page, "/predict", 200, "ok") == 6
    assert requests_counted(page, "/predict", 400, "not_base64") == 2
    for reason in ("not_json", "not_an_image", "no_image"):
        assert requests_counted(page, "/predict", 400, reason) == 1, reason
    assert requests_counted(page, "other", 404, "not_found") == 1
    assert requests_counted(page, "/livez", 200, "ok") == requests_counted(page, "/readyz", 200, "ok") == 1
    assert page[("mnist_predict_seconds_count", frozenset())] == 6 + 5
    assert page[("mnist_batch_size_sum", frozenset())] == 6  # the worker's: only good requests reach it
    assert 1 <= page[("mnist_batch_size_count", frozenset())] <= 6
    assert page[("mnist_model_info", frozenset({"version": version}.items()))] == 1
    assert page[("mnist_model_loads_total", frozenset({"result": "loaded"}.items()))] == 1


@pytest.fixture
def app_client():
    """The app of an HTTP process of ``serve`` with an API key, in this process (no worker: its status is
    set by the test)."""
    api = DigitClassifierAPI(ModelSource("model.onnx", exported=True), CLASSES, 4, 0, api_key="key")
    server = build_server(api, 1_000_000, ImagePreparer(1, 1, 1.0), pipes=False)
    with metrics_folder():
        yield server, AppClient(server.app)


class AppClient:
    """Requests to an ASGI app in this process (its lifespan not run)."""

    def __init__(self, app) -> None:
        self.app = app

    def request(self, method: str, path: str, **options) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                return await client.request(method, path, **options)

        return asyncio.run(send())

    def get(self, path: str, **options) -> httpx.Response:
        return self.request("GET", path, **options)

    def post(self, path: str, **options) -> httpx.Response:
        return self.request("POST", path, **options)


def test_readyz_is_503_until_every_worker_is_ready_and_livez_is_200_without_a_key(app_client):
    server, client = app_client
    server.workers_setup_status = {
        "predict_0": WorkerSetupStatus.READY,
        "predict_1": WorkerSetupStatus.STARTING,
    }
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 503
    server.workers_setup_status["predict_1"] = WorkerSetupStatus.READY
    assert client.get("/readyz").status_code == 200
    assert client.get("/health").status_code == 401  # LitServe's own needs the key, as before


def test_metrics_need_the_api_key_and_count_refusals(app_client):
    _, client = app_client
    assert client.get("/metrics").status_code == 401
    client.post("/predict", content=b"not json", headers={"X-API-Key": "key"})
    response = client.get("/metrics", headers={"X-API-Key": "key"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    page = samples(response.text)
    assert requests_counted(page, "/metrics", 401, "no_api_key") == 1
    assert requests_counted(page, "/predict", 400, "not_json") == 1
