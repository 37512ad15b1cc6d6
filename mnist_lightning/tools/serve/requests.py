"""What ``POST /predict`` reads, in the server's HTTP processes: the JSON body whatever its Content-Type (its
``image`` is decoded and prepared as an MNIST digit by ``image_text.prepared_digit``, run by
``preparing.py``), and the 4xx answers that say what was wrong with a bad one.
"""

# No ``from __future__ import annotations``: FastAPI resolves DigitRequest's field types at run time.
from typing import Annotated, Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, WithJsonSchema

from mnist_lightning.tools.serve.operations import note_reason

ImageText = Annotated[
    Any,  # checked by prepared_digit, off the event loop (see preparing.py): "must be a string" and all
    WithJsonSchema({"type": "string", "description": "base64 PNG or JPEG of one digit; a data URL is fine"}),
]


class DigitRequest(BaseModel):
    """The JSON body of ``POST /predict``. Its ``image`` is decoded and prepared by
    ``image_text.prepared_digit`` in a decoder process (``preparing.py``), not while FastAPI validates the
    body: that runs in the HTTP process's event loop, where one costly image would stall every request.

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
