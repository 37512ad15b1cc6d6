"""Fuzzing what reads untrusted image bytes: whatever the bytes, opening and preparing them gives a digit or
refuses them with UnreadableImage, with no other exception and no warning."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import event, given

from mnist_lightning.data.digits import prepare_digit
from mnist_lightning.data.untrusted_images import UnreadableImage, open_image

from helpers.fuzzing import fuzz_settings, untrusted_bytes


@fuzz_settings
@given(data=untrusted_bytes)
def test_any_bytes_give_a_digit_or_a_refusal(data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            digit = prepare_digit(open_image(data))
        except UnreadableImage as refusal:
            assert str(refusal) and "\n" not in str(refusal)
            reason = "over the size limits" if " pixels, over the limits" in str(refusal) else str(refusal)
            event(f"refused: {reason.partition(' (')[0][:40]}")  # --hypothesis-show-statistics
        else:
            assert digit.shape == (28, 28) and digit.dtype == np.uint8
            event("a digit")
