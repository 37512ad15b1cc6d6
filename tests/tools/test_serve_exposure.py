"""``serve`` exposed: what it refuses before doing any work (another site's pages, a missing API key, slow
clients), ``/docs`` off unless asked for, any host name or address the machine has, and a bad exported file
reported as one paragraph. The real server runs as a subprocess (``helpers.serving.ServerProcess``)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from mnist_lightning.cli.main import main
from mnist_lightning.errors import UserError
from mnist_lightning.tools.serve.server import listening_socket, options_parser

from helpers.serving import (
    GUARDED_KEY,
    GUARDED_READ_TIMEOUT,
    digit_pictures,
    encoded,
    free_port,
    get,
    post,
    predict,
)


def digit_body() -> tuple[bytes, int]:
    pictures, digits = digit_pictures(1, seed=23)
    return json.dumps({"image": encoded(pictures[0])}).encode(), digits[0]


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])  # text/plain: no preflight
def test_a_request_from_another_sites_page_is_refused_and_one_from_the_servers_own_is_answered(
    server, content_type
):
    body, digit = digit_body()
    status, answer = post(
        f"{server.url}/predict", body, content_type, headers={"Origin": "http://evil.example"}
    )
    assert status == 403
    assert answer["detail"].startswith(
        "cross-origin request refused: this server answers the pages it serves"
    )
    assert "http://evil.example" in answer["detail"]
    same = (server.url, f"https://127.0.0.1:{server.port}")  # https: a page behind a proxy that ends TLS
    for origin in (*same, f"http://127.0.0.1:{server.port + 1}", "http://localhost", "null"):
        status, answer = post(f"{server.url}/predict", body, content_type, headers={"Origin": origin})
        assert (status, answer.get("prediction")) == ((200, digit) if origin in same else (403, None))
    status, answer = post(f"{server.url}/predict", body, content_type)  # curl, scripts: no Origin
    assert (status, answer["prediction"]) == (200, digit)
    assert get(f"{server.url}/info", headers={"Origin": "http://evil.example"})[0] == 403  # any method
    # a page that reaches the server under its own name (DNS rebinding) is its own origin: why a key matters
    rebound = {"Origin": f"http://rebound.example:{server.port}", "Host": f"rebound.example:{server.port}"}
    assert post(f"{server.url}/predict", body, content_type, headers=rebound)[0] == 200


def test_a_refused_request_with_a_large_body_gets_its_answer_not_a_reset_connection(server):
    """A 3 MB body (under the limit) from another site's page is refused before it is read; the client (urllib
    sends ``Connection: close``) still reads the 403, as the server reads the rest of the body first."""
    body = json.dumps({"image": "A" * 3_000_000}).encode()
    for _ in range(3):
        status, answer = post(f"{server.url}/predict", body, headers={"Origin": "http://evil.example"})
        assert status == 403 and answer["detail"].startswith("cross-origin request refused")


def test_docs_are_off_by_default(server):
    assert get(f"{server.url}/docs")[0] == 404
    assert get(f"{server.url}/openapi.json")[0] == 404


def test_docs_are_served_when_asked_for(guarded_server):
    status, page = get(f"{guarded_server.url}/docs")
    assert status == 200 and b"swagger-ui" in page and b"https://cdn.jsdelivr.net/" in page
    status, schema = get(f"{guarded_server.url}/openapi.json")
    assert status == 200 and "/predict" in json.loads(schema)["paths"]


def test_the_api_key_is_needed_when_set(guarded_server):
    body, digit = digit_body()
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": GUARDED_KEY[:-1]}):
        status, answer = post(f"{guarded_server.url}/predict", body, headers=headers)
        assert status == 401
        assert answer["detail"].startswith("this server needs its API key in the X-API-Key header")
    status, answer = post(f"{guarded_server.url}/predict", body, headers={"X-API-Key": GUARDED_KEY})
    assert (status, answer["prediction"]) == (200, digit)
    assert get(f"{guarded_server.url}/")[0] == 200  # the page itself needs no key; LitServe's routes do
    for route in ("/info", "/health"):
        assert get(f"{guarded_server.url}{route}")[0] == 401
        assert get(f"{guarded_server.url}{route}", headers={"X-API-Key": GUARDED_KEY})[0] == 200


def test_the_api_key_comes_from_lit_server_api_key_too(monkeypatch):
    monkeypatch.setenv("LIT_SERVER_API_KEY", GUARDED_KEY)
    assert options_parser().parse_args(["--model", "m.onnx"]).api_key == GUARDED_KEY
    monkeypatch.delenv("LIT_SERVER_API_KEY")
    assert options_parser().parse_args(["--model", "m.onnx"]).api_key is None


def test_serving_on_localhost_works(guarded_server):
    """The guarded server listens on ``--host localhost``; the other tests reach it there."""
    pictures, digits = digit_pictures(3, seed=29)
    assert guarded_server.url.startswith("http://localhost:")
    for picture, digit in zip(pictures, digits, strict=True):
        status, answer = predict(guarded_server.url, encoded(picture), {"X-API-Key": GUARDED_KEY})
        assert (status, answer["prediction"]) == (200, digit)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("localhost", port), timeout=30)


def test_a_client_that_sends_its_body_too_slowly_is_cut_off_with_408(guarded_server):
    with connect(guarded_server.port) as client:
        client.sendall(
            b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"X-API-Key: " + GUARDED_KEY.encode() + b'\r\nContent-Length: 1000\r\n\r\n{"image": "'
        )
        started = time.monotonic()
        answer = b""
        while chunk := client.recv(4096):  # the server closes the connection after its answer
            answer += chunk
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"the request body did not arrive within 2 s" in answer
    assert GUARDED_READ_TIMEOUT - 0.5 < waited < GUARDED_READ_TIMEOUT + 20


def test_a_client_that_sends_its_headers_too_slowly_is_cut_off(guarded_server):
    # both clients at once: the server's read timeout runs for each while the test waits on the first
    with connect(guarded_server.port) as client, connect(guarded_server.port) as silent:
        client.sendall(b"POST /predict HTTP/1.1\r\nHost: local")  # and nothing more
        started = time.monotonic()
        assert client.recv(4096) == b""  # closed, without an answer
        assert GUARDED_READ_TIMEOUT - 0.5 < time.monotonic() - started < GUARDED_READ_TIMEOUT + 20
        assert silent.recv(4096) == b""  # connected, nothing sent: closed too


def whole_response(client: socket.socket) -> bytes:
    """One HTTP response read to its last byte (its head and body may arrive in separate packets)."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += client.recv(4096)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        body += client.recv(4096)
    return head + b"\r\n\r\n" + body


def test_an_idle_keep_alive_connection_is_closed(guarded_server):
    with connect(guarded_server.port) as client:
        client.sendall(
            b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-API-Key: " + GUARDED_KEY.encode() + b"\r\n\r\n"
        )
        assert whole_response(client).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        assert client.recv(4096) == b""  # closed by the server
        assert 4 < time.monotonic() - started < 25


def test_any_name_or_address_of_this_machine_can_be_listened_on():
    for host in ("localhost", socket.gethostname(), socket.gethostbyname(socket.gethostname()), "::1"):
        with listening_socket(host, free_port()) as listening:
            assert listening.getsockname()[1] > 0


def test_a_host_name_that_does_not_resolve_is_one_error():
    with pytest.raises(
        UserError, match=r"--host 'no-such-host\.invalid' is not an address, nor a name this "
    ):
        listening_socket("no-such-host.invalid", 8000)


def test_an_exported_file_that_is_not_one_is_one_error_paragraph(tmp_path, capfd):
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"not a torch.export archive")
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--model", str(garbage)])
    assert exit_.value.code == 2
    out, err = capfd.readouterr()
    assert out == ""
    assert err.startswith(f"error: --model '{garbage}' cannot be loaded")
    assert err.count("\n") == 1, err  # one paragraph: no torch log lines, no traceback
