"""Print the lowest versions pyproject.toml allows of the pure-Python libraries the code leans on most
(lightning, torchmetrics, jsonargparse), as pip requirements: ``make test-lowest`` installs them over the
project's .venv and runs the quick suite on them. Lightning's ``pytorch-lightning`` comes at the same
version as ``lightning``, which imports it."""

import re
import sys
from pathlib import Path

LIBRARIES = ("lightning", "torchmetrics", "jsonargparse")

text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
lowest = {}
for name in LIBRARIES:
    found = re.search(rf'^\s*"{name}(\[[\w,]+\])?>=([\w.]+)[,"]', text, re.MULTILINE)
    if found is None:
        sys.exit(f"error: pyproject.toml gives {name} no lower bound (>=)")
    lowest[name] = found.group(2)
lowest["pytorch-lightning"] = lowest["lightning"]
print(" ".join(f"{name}=={version}" for name, version in lowest.items()))
