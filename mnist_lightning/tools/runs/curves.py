"""A run's logged metrics as curves: from the CSV logger's ``metrics.csv`` when the run folder has one, else
from its TensorBoard event files (read with tensorboard's ``Event`` protocol buffer, imported only here)."""

from __future__ import annotations

import csv
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mnist_lightning.run_layout import CSV_METRICS_FILE

Point = tuple[int, "int | None", float]  # step, epoch (when logged with the value), value


@dataclass
class Curve:
    """A metric's values by epoch (0 = the first, as Lightning and the checkpoint names count) or, for one
    logged several times an epoch (the learning rate), by step; a value logged again at the same epoch or
    step (a resumed run) replaces it."""

    x: list[int]
    y: list[float]
    per: str  # "epoch" or "step"


def read_curves(folder: Path, metrics: Iterable[str]) -> tuple[dict[str, Curve], set[str]]:
    """The curves of ``metrics`` that the run in ``folder`` logged, and the names of all it logged."""
    csv_file = folder / CSV_METRICS_FILE
    points = _csv_points(csv_file) if csv_file.is_file() else _event_points(folder)
    curves = {metric: _curve(points[metric]) for metric in metrics if points.get(metric)}
    return curves, set(points) - {"epoch", "step"}


def _curve(points: list[Point]) -> Curve:
    epochs = {epoch for _, epoch, _ in points}
    # by epoch when logged once an epoch (again at the same step is a repeat, as a resumed run may log)
    per_epoch = None not in epochs and len(epochs) == len({(step, epoch) for step, epoch, _ in points})
    values: dict[int, float] = {}
    for step, epoch, value in points:  # in the order logged: the last value at an x wins
        values[epoch if per_epoch else step] = value
    xs = sorted(values)
    return Curve(xs, [values[x] for x in xs], "epoch" if per_epoch else "step")


def _event_points(folder: Path) -> dict[str, list[Point]]:
    """The scalars of the run's event files, in the order written (files by name: by creation time)."""
    from tensorboard.compat.proto.event_pb2 import Event

    points: dict[str, list[Point]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for record in _records(path):
            event = Event.FromString(record)
            for value in event.summary.value:
                if value.WhichOneof("value") == "simple_value":  # how SummaryWriter.add_scalar writes
                    points.setdefault(value.tag, []).append((event.step, None, value.simple_value))
    epoch_at = {step: int(value) for step, _, value in points.get("epoch", [])}
    return {
        tag: [(step, epoch_at.get(step), value) for step, _, value in found] for tag, found in points.items()
    }


def _records(path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file (an event file): length (8 bytes), its CRC (4), data, its CRC (4).

    tensorboard's own readers (``EventAccumulator``) check both CRCs in pure Python, which took 6 of the 8
    seconds of reading 200 runs (a run's test report pictures are 90 kB); the checks are left out here, and a
    record cut short (a run still writing) ends the file.
    """
    with path.open("rb") as file:
        while len(header := file.read(12)) == 12:
            (length,) = struct.unpack("<Q", header[:8])
            record = file.read(length)
            if len(record) < length or len(file.read(4)) < 4:
                return
            yield record


def _csv_points(path: Path) -> dict[str, list[Point]]:
    points: dict[str, list[Point]] = {}
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            step, epoch = row.pop("step", ""), row.pop("epoch", "")
            for name, value in row.items():
                if value not in ("", None) and step:
                    points.setdefault(name, []).append(
                        (int(step), int(epoch) if epoch else None, float(value))
                    )
    return points
