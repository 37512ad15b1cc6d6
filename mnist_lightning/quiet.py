"""A clean terminal: the progress bar, the metrics and the result, without library notices that do not apply.

Each notice is silenced at its source and only where it does not apply to this project; everything else,
including a user's own warnings, still shows. :func:`quiet` is entered by ``main()`` for one run and undoes
itself afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

from lightning.pytorch.callbacks import TQDMProgressBar

# (message regex, module regex): the warnings that never apply to this project's runs
IRRELEVANT_WARNINGS = (
    # Lightning's own pytree helper calls a torch API that torch has deprecated; nothing a user can change
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\.pytorch\.utilities\._pytree"),
    # our epoch metrics are torchmetrics states, summed across processes before they are logged
    (
        r"It is recommended to use `self\.log\('(train|val|test)_(loss|acc)(_best)?', \.\.\., "
        r"sync_dist=True\)`",
        r"lightning\.pytorch\.",  # Lightning reports it from a frame a few calls up
    ),
    # main() passes the arguments it was given, which may also be the process's own
    (r"LightningCLI's args parameter is intended to run from within Python", r"lightning\.pytorch\.cli"),
)
# evaluating a checkpoint: its ModelCheckpoint's "best" bookkeeping is not used, so its folder does not matter
EVALUATION_WARNINGS = ((r"The dirpath has changed from", r"lightning\.pytorch\.callbacks\.model_checkpoint"),)


class _DropRecords(logging.Filter):
    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


ADVERT = _DropRecords(
    "💡 Tip: For seamless cloud logging"
)  # an advert for a logger this project does not use


def ignore_warnings(rules: tuple[tuple[str, str], ...]) -> None:
    for message, module in rules:
        warnings.filterwarnings("ignore", message=message, module=module)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """For one run: leave out the notices above (restored on exit)."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with warnings.catch_warnings():
        ignore_warnings(IRRELEVANT_WARNINGS)
        # jsonargparse's deprecations of the calls LightningCLI itself makes (add_instantiator, skip_none):
        # Lightning's to update, nothing a user of this project can change
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"lightning\.pytorch\.cli")
        rank_zero.addFilter(ADVERT)
        try:
            yield
        finally:
            rank_zero.removeFilter(ADVERT)


class ProgressBar(TQDMProgressBar):
    """Lightning's progress bar without ``v_num`` (the run's folder is printed where it matters), and with the
    bar of an epoch resumed in its middle, counting on from the batches done before."""

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        if trainer.fit_loop.restarted_mid_epoch:  # Lightning does not call on_train_epoch_start for it
            self.on_train_epoch_start(trainer)
            bar = self.train_progress_bar
            bar.n = bar.initial = trainer.fit_loop.epoch_loop.batch_progress.current.completed
            if not bar.disable:
                bar.refresh()

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items
