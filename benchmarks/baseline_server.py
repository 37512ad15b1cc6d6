"""The baseline ``benchmarks/serve.py`` compares ``serve`` with: what a user might write instead.

One FastAPI app in one uvicorn process, running an exported ONNX file with onnxruntime (its default session
options unless ``--threads``), one request at a time (no batching), with the same image preparation as
``serve`` (``mnist_lightning.data.images.prepare_digit``) and the same answer:

    python benchmarks/baseline_server.py model.onnx --port 8001
"""

from __future__ import annotations

import argparse
import base64
import io
import json

import numpy as np
import onnxruntime
import uvicorn
from fastapi import FastAPI
from PIL import Image
from pydantic import BaseModel

from mnist_lightning.data.digits import prepare_digit


class Digit(BaseModel):
    image: str  # base64 PNG or JPEG, optionally a data URL


def build_app(model_path: str, threads: int | None = None) -> FastAPI:
    options = onnxruntime.SessionOptions()
    if threads:  # else onnxruntime's default, one intra-op thread per core
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    classes = json.loads(session.get_modelmeta().custom_metadata_map["classes"])
    app = FastAPI()

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.post("/predict")
    def predict(digit: Digit) -> dict:
        data = base64.b64decode(digit.image.rpartition(",")[2])
        pixels = prepare_digit(Image.open(io.BytesIO(data)))
        images = (pixels[None, None] / np.float32(255)).astype(np.float32)
        probabilities = session.run(None, {"images": images})[0][0]
        best = int(probabilities.argmax())
        return {
            "prediction": best,
            "label": classes[best],
            "confidence": float(probabilities[best]),
            "probabilities": probabilities.tolist(),
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="an .onnx file written by 'python -m mnist_lightning export'")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--threads", type=int, help="onnxruntime's intra-op threads (default: its own)")
    options = parser.parse_args()
    app = build_app(options.model, options.threads)
    uvicorn.run(app, host="127.0.0.1", port=options.port, log_level="warning")


if __name__ == "__main__":
    main()
