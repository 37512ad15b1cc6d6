"""The run's side outputs, each written by one callback that the default config lists.

They act on the stage they belong to and give the same files from the command line and from the Python
API (``Trainer(callbacks=[TestReport(), ...]).test(model, datamodule)``).
"""

from mnist_lightning.callbacks.prediction_writer import PredictionWriter
from mnist_lightning.callbacks.protocols import ReportedData, ReportedModel
from mnist_lightning.callbacks.provenance import Provenance
from mnist_lightning.callbacks.run_summary import RunSummary
from mnist_lightning.callbacks.test_metrics import TestMetricsWriter
from mnist_lightning.callbacks.test_report import TestReport
from mnist_lightning.callbacks.tracker_runs import TrackerRuns
from mnist_lightning.callbacks.val_confusion import ValConfusionMatrix

__all__ = [
    "PredictionWriter",
    "Provenance",
    "ReportedData",
    "ReportedModel",
    "RunSummary",
    "TestMetricsWriter",
    "TestReport",
    "TrackerRuns",
    "ValConfusionMatrix",
]
