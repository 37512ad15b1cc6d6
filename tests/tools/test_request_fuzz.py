"""Fuzzing what ``POST /predict`` parses: whatever the JSON body or its ``image`` field, the request gives a
digit or a ValueError whose message is one sentence, which the server answers with a 400."""

from __future__ import annotations

import base64
import json
import warnings

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from mnist_lightning.tools.serve.image_text import BadImage, prepared_digit
from mnist_lightning.tools.serve.requests import DigitRequest, validation_error_response

from helpers.fuzzing import fuzz_settings, untrusted_bytes


def as_text(data: bytes, data_url: bool, spaces: bool) -> str:
    text = base64.b64encode(data).decode("ascii")
    text = f"data:image/png;base64,{text}" if data_url else text
    return f"  {text}\n" if spaces else text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
image_fields = st.one_of(
    st.builds(as_text, untrusted_bytes, st.booleans(), st.booleans()),
    st.text(max_size=200),
    st.text(alphabet="ABCDEFGHabcdefgh0123456789+/=", max_size=200),
    json_values,
)

# the kinds of refusal /metrics counts (docs/export-serve.md)
REASONS = {"not_a_string", "empty", "not_base64", "not_an_image", "no_digit"}


def assert_one_sentence(message: str) -> None:
    assert message and "\n" not in message and len(message) < 500, message


@fuzz_settings
@given(value=image_fields)
def test_any_image_field_gives_784_bytes_or_a_one_sentence_refusal_of_a_known_kind(value):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            digit = prepared_digit(value)
        except ValueError as refusal:
            assert type(refusal) is BadImage and refusal.reason in REASONS, refusal
            assert_one_sentence(str(refusal))
        else:
            assert isinstance(digit, bytes) and len(digit) == 784


@fuzz_settings
@given(
    body=st.one_of(json_values, st.fixed_dictionaries({"image": image_fields}, optional={"x": json_values}))
)
def test_any_json_body_gives_a_request_or_a_400_that_says_why(body):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            request = DigitRequest.model_validate_json(json.dumps(body))
        except ValidationError as refusal:
            error = RequestValidationError(refusal.errors())
            answer = validation_error_response(Request({"type": "http"}), error)
            assert answer.status_code == 400
            assert_one_sentence(json.loads(answer.body)["detail"])
        else:  # its image is prepared by a decoder process (tools/serve/preparing.py), as here
            try:
                digit = prepared_digit(request.image)
            except ValueError as refusal:
                assert type(refusal) is BadImage and refusal.reason in REASONS, refusal
                assert_one_sentence(str(refusal))
            else:
                assert isinstance(digit, bytes) and len(digit) == 784
