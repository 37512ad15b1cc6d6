"""What ``POST /predict`` reads, in the server's HTTP processes: the JSON body whatever its Content-Type, how
its ``image`` is decoded and prepared as an MNIST digit (:func:`prepared_digit`, run by ``preparing.py``),
and the 4xx answers that say what was wrong with a bad one.
"""

# No ``from __future__ import annotations``: FastAPI resolves DigitRequest's field types at run time.
import base64
import binascii
from typing import Annotated, Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, WithJsonSchema

from mnist_lightning.data.images import UnreadableImage, prepare_digit
from mnist_lightning.data.untrusted_images import open_image
from mnist_lightning.tools.serve.operations import note_reason


def decode_image(data: bytes) -> Image.Image:
    """Decode an image from untrusted bytes within the limits of ``open_image`` (accepted formats, size
    checked before decoding); ValueError saying why in one sentence when it is refused or does not decode."""
    try:
        return open_image(data)
    except UnreadableImage as err:
        raise ValueError(str(err)) from None


class BadImage(ValueError):
    """An ``image`` refused; ``reason``: the kind (``not_base64``, ``not_an_image``, ``no_digit``, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def prepared_digit(value: Any) -> bytes:
    """The ``image`` field of a request -> the 28x28 MNIST-style digit it shows, as 784 bytes.

    Raises BadImage (a 400 answer) when the text is not base64, the bytes are not an image or one refused
    (its format or size, see ``open_image``), or the image shows no digit.
    """
    if not isinstance(value, str):
        raise BadImage("not_a_string", "must be a string: a base64 PNG or JPEG, optionally a data URL")
    text = value.strip()
    if text.startswith("data:"):  # data:image/png;base64,....
        text = text.partition(",")[2]
    if not text:
        raise BadImage("empty", "is empty")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise BadImage("not_base64", f"is not valid base64 ({err})") from None
    try:
        image = decode_image(data)
    except ValueError as err:
        raise BadImage("not_an_image", str(err)) from None
    try:
        digit = prepare_digit(image)
    except UnreadableImage as err:
        raise BadImage("no_digit", str(err)) from None
    return digit.numpy().tobytes()


ImageText = Annotated[
    Any,  # checked by prepared_digit, off the event loop (see preparing.py): "must be a string" and all
    WithJsonSchema({"type": "string", "description": "base64 PNG or JPEG of one digit; a data URL is fine"}),
]


class DigitRequest(BaseModel):
    """The JSON body of ``POST /predict``. Its ``image`` is decoded and prepared by :func:`prepared_digit` in
    a decoder process (``preparing.py``), not while FastAPI validates the body: that runs in the HTTP
    process's event loop, where one costly image would stall every request.

    Each request is prepared by itself, before it is queued, so a bad image is answered alone with a 400.
    Raising ``HTTPException`` in ``LitAPI.decode_request`` instead would answer every request of the batch it
    arrived in with that error: LitServe's batched loop decodes a whole batch in one ``try``.
    """

    image: ImageText


def validation_error_response(request: Request, error: RequestValidationError) -> JSONResponse:
    """400 with one sentence per problem, e.g. ``image: is not valid base64 (...)``, instead of FastAPI's 422
    list of error objects."""
    problems, reasons = [], []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body") or "body"
        reasons.append(
            {"json_invalid": "not_json", "missing": "no_image"}.get(problem.get("type"), "bad_body")
        )
        if problem.get("type") == "json_invalid":
            problems.append(
                f"the body is not valid JSON ({problem.get('ctx', {}).get('error', 'decode error')})"
            )
        else:
            message = problem.get("msg", "invalid").removeprefix("Value error, ")
            if message[1:2].islower():  # "Field required", not "ICO images ..."
                message = message[0].lower() + message[1:]
            problems.append(f"{where}: {message}" if message else where)
    note_reason(request.scope, reasons[0] if reasons else "bad_body")
    return JSONResponse(status_code=400, content={"detail": "; ".join(problems)})


def body_too_large_response(max_request_bytes: int):
    """The answer to LitServe's 413 (``max_payload_size``), with the limit in it."""

    def respond(request: Request, error: Exception) -> JSONResponse:
        limit = f"{max_request_bytes / 1_000_000:g} MB"
        return JSONResponse(
            status_code=413, content={"detail": f"the request body is over the {limit} limit"}
        )

    return respond


class JsonBody:
    """ASGI middleware: the body of ``POST /predict`` is read as JSON whatever its Content-Type.

    ``curl -d '{"image": ...}'`` sends ``application/x-www-form-urlencoded``, for which FastAPI would validate
    the raw bytes ("body: input should be a valid dictionary"); a body that is not JSON still gets a 400.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/predict":
            headers = [(name, value) for name, value in scope["headers"] if name != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)
