"""``python -m mnist_lightning lr_find``: Lightning's learning-rate range test on the configured recipe.

The recipe is built by the same LightningCLI path as ``fit`` (``cli.build_cli``: every config, option and
check), then Lightning's ``Tuner(trainer).lr_find`` trains it for a few steps while the learning rate grows
from ``--min_lr`` to ``--max_lr``, with the optimizer exactly as the config builds it. Lightning's finder
sets the rate in the optimizer's ``param_groups``; it needs an ``lr`` attribute on the model only to write
its suggestion back (``update_attr``), which is what fails for an optimizer given as class path and init
args, so this command leaves that off and prints the option to pass instead. A configured scheduler is
left out during the search (the finder drives the rate itself, and OneCycleLR would also cycle Adam's
betas). Each step's loss is recorded here (:class:`StepLosses`), smoothed and read by this module, so the
plot, lr_find.csv and the printed suggestion come from the same numbers. Nothing is logged, checkpointed
or written into a run's folder: the plot and the points go to a folder of their own.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from mnist_lightning.cli.console import CommandParser, program_name
from mnist_lightning.cli.lightning_cli import MNISTLightningCLI, build_cli
from mnist_lightning.cli.quiet import quiet
from mnist_lightning.errors import UserError
from mnist_lightning.run_layout import LOG_ROOT, LR_FIND_FOLDER, next_version_folder
from mnist_lightning.schema import class_name

SKIP = 10  # the first steps, left out of the suggestion (Lightning's skip_begin)
# the smoothing of the loss: an average over about 10 steps. Lightning's finder uses 0.98 (about 50 steps),
# which over a 100-step search lags so far that its lowest point comes a decade past the real one
BETA = 0.9
ROOT = Path(LOG_ROOT, LR_FIND_FOLDER)  # the searches' folders, version_N, unless --dir names one

USAGE = "{program} lr_find --config CONFIG [--config ...] [--dir FOLDER] [--min_lr X] [--max_lr X]\n" \
    "       [--num_training N] [fit options, e.g. --data.batch_size 128]"  # fmt: skip
EPILOG = """\
Any other option (--config files, --data.data_dir ...) is a 'fit' option (see: {program} fit --help): the
search runs the recipe they configure. It prints the suggested rate (the steepest fall of the loss) and the
options that train with it; with a OneCycleLR scheduler, its peak max_lr: a tenth of the rate at the lowest
loss (the steepest fall is a low peak for one cycle). lr_find.png and lr_find.csv (rate, loss) go to --dir."""


def parse_args(args: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = CommandParser(
        "lr_find",
        usage=USAGE.replace("{program}", program_name()),
        description="Find a learning rate for the configured recipe: Lightning's learning-rate range test "
        "with the config's optimizer, its loss-vs-rate plot and a suggested rate.",
        epilog=EPILOG.replace("{program}", program_name()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dir", help="where the plot goes (default: lightning_logs/lr_find/version_N)")
    parser.add_argument("--min_lr", type=float, default=1e-6, help="the first rate tried (default: 1e-6)")
    parser.add_argument("--max_lr", type=float, default=1.0, help="the last rate tried (default: 1)")
    parser.add_argument(
        "--num_training", type=int, default=100, help="training steps, one rate each (default: 100)"
    )
    return parser.parse_own_and_fit_options(args)


def end_processes_together(trainer) -> None:
    """Under DDP, every process waits for rank 0's report, then the process group is closed. The tuner runs
    no ``Trainer.fit`` teardown, and a process that exited with gloo's threads still running was aborted
    ("terminate called without an active exception", exit -6) now and then."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        trainer.strategy.barrier("lr_find report")
        dist.destroy_process_group()


class LRFindCLI(MNISTLightningCLI):
    """``fit``'s parser, checks and objects, with ``Tuner.lr_find`` run instead of ``Trainer.fit``."""

    def __init__(self, *args, options: argparse.Namespace, **kwargs) -> None:
        self.options = options
        self.folder = Path(options.dir or ROOT)  # lr_find.png's: a new version_N of ROOT, chosen by rank 0
        self.scheduler: str | None = None
        super().__init__(*args, **kwargs)

    def adjust_config(self, subcommand, config) -> None:
        scheduler = config.model.get("scheduler")
        self.scheduler = class_name(scheduler.get("class_path")) if scheduler else None
        config.model.scheduler = None
        trainer = config.trainer
        trainer.logger, trainer.callbacks, trainer.enable_checkpointing = False, [], False
        trainer.default_root_dir = str(self.folder)  # where the finder keeps the initial weights meanwhile
        trainer.max_epochs, trainer.max_steps = None, self.options.num_training
        self.save_config_callback = None  # a config.yaml would make the folder look like a run's

    def fit(self, model, datamodule=None, **_) -> None:
        """Run by LightningCLI in place of ``Trainer.fit`` (a CLI method named as the subcommand)."""
        from lightning.pytorch.tuner import Tuner

        losses = StepLosses(model)
        finder = Tuner(self.trainer).lr_find(
            model, datamodule=datamodule, min_lr=self.options.min_lr, max_lr=self.options.max_lr,
            num_training=self.options.num_training, update_attr=False,
        )  # fmt: skip
        if finder is None:
            raise UserError("lr_find runs no search with trainer.fast_dev_run; leave that out.")
        try:
            if self.trainer.is_global_zero:
                rates = finder.results["lr"][: len(losses.values)]
                self.report(rates, losses.values[: len(rates)], type(self.trainer.optimizers[0]).__name__)
        finally:
            end_processes_together(self.trainer)

    def report(self, rates: list[float], losses: list[float], optimizer: str) -> None:
        """The points (lr_find.csv), the plot (lr_find.png) and the suggestion, from the same numbers."""
        if not self.options.dir:
            self.folder = next_version_folder(ROOT)
        smoothed = smooth(losses)
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "lr_find.csv").open("w", newline="") as file:
            csv.writer(file).writerows(
                [("lr", "loss", "smoothed_loss"), *zip(rates, losses, smoothed, strict=True)]
            )
        steepest = steepest_fall(rates, smoothed)
        lowest = min(
            (i for i in range(SKIP, len(smoothed)) if math.isfinite(smoothed[i])),
            key=lambda i: smoothed[i], default=None,
        )  # fmt: skip
        left_out = (
            f"; the scheduler {self.scheduler} was left out during the search" if self.scheduler else ""
        )
        print(
            f"Learning-rate range test: {optimizer} as configured, {len(rates)} steps from "
            f"{self.options.min_lr:g} to {self.options.max_lr:g}{left_out}.\n"
            f"Loss by rate: {self.folder / 'lr_find.png'} (points: lr_find.csv)"
        )
        if steepest is None or lowest is None:
            self.draw(rates, losses, smoothed, optimizer, None, "")
            raise UserError(
                f"too few steps to suggest a rate ({len(rates)}: the loss diverged at once, or the data has "
                f"too few batches); try a lower --max_lr or more --num_training steps."
            )
        print(f"Suggested learning rate: {rates[steepest]:.2g} (where the loss falls fastest)")
        chosen, why = rates[steepest], "the steepest fall"
        options = f"--model.optimizer.init_args.lr {chosen:.2g}"
        if self.scheduler == "OneCycleLR":  # the schedule sets the rate from max_lr, up to it and down again
            chosen, why = rates[lowest] / 10, "OneCycleLR's peak: a tenth of the rate at the lowest loss"
            print(f"OneCycleLR's peak (max_lr): {chosen:.2g}, a tenth of the rate at the lowest loss, "
                  f"{rates[lowest]:.2g}")  # fmt: skip
            options = (
                f"--model.optimizer.init_args.lr {chosen:.2g} --model.scheduler.init_args.max_lr {chosen:.2g}"
            )
        print(f"Train with it: {options}")
        self.draw(rates[: lowest + 1], losses, smoothed, optimizer, chosen, why)

    def draw(
        self,
        shown: list[float],
        losses: list[float],
        smoothed: list[float],
        optimizer: str,
        chosen: float | None,
        why: str,
    ) -> None:
        """The loss (faint) and its smoothed curve by rate, up to the lowest point so the blow-up past it does
        not flatten the rest, with the rate that the printed options train with marked and named."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(7, 4.5), layout="constrained")
        FigureCanvasAgg(figure)
        ax = figure.subplots()
        count = len(shown)
        ax.plot(shown, losses[:count], color="tab:blue", alpha=0.3, linewidth=1, label="loss of each step")
        ax.plot(shown, smoothed[:count], color="tab:blue", label="smoothed (as the suggestion reads it)")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        if chosen is not None:  # on the curve where the search passed that rate
            y = smoothed[min(range(count), key=lambda i: abs(math.log(shown[i] / chosen)))]
            ax.plot([chosen], [y], "o", color="red", markersize=9, label=f"train with {chosen:.2g} ({why})")
        ax.legend(frameon=False, fontsize=8)
        ax.set_title(f"{optimizer}: loss by learning rate over {len(losses)} steps")
        ax.grid(alpha=0.3, which="both")
        figure.savefig(self.folder / "lr_find.png", dpi=100)


class StepLosses:
    """Each training step's loss during the search, recorded by the model's ``on_train_batch_end`` hook (the
    finder runs with its own callback alone). Lightning's finder keeps only its smoothed loss, and corrects
    the average's start-up bias by ``global_step``, already one ahead when it reads it: its first points are
    about half the loss (1.2 for an untrained network's 2.3), rising as the correction fades."""

    def __init__(self, model) -> None:
        self.values: list[float] = []
        self.model_hook = model.on_train_batch_end
        model.on_train_batch_end = self.on_train_batch_end
        self.model = model

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % self.model.trainer.accumulate_grad_batches:  # as the finder: optimizer steps
            self.model_hook(outputs, batch, batch_idx)
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self.values.append(float(loss) if loss is not None else math.nan)
        self.model_hook(outputs, batch, batch_idx)


def smooth(losses: list[float], beta: float = BETA) -> list[float]:
    """The exponential moving average of ``losses``, its start-up bias corrected (the first value is the
    first loss): the curve the suggestion reads."""
    smoothed, average, seen = [], 0.0, 0
    for loss in losses:
        if math.isfinite(loss):
            seen += 1
            average = beta * average + (1 - beta) * loss
        smoothed.append(average / (1 - beta**seen) if seen and math.isfinite(loss) else math.nan)
    return smoothed


def steepest_fall(rates: list[float], smoothed: list[float]) -> int | None:
    """The step where the smoothed loss falls fastest per decade of rate, as the log-scaled plot shows it,
    past the first SKIP steps and before the last; None with too few points. (Lightning's ``suggestion``
    takes the gradient by the rate itself, which favours the tiny rates' steps, a millionth apart.)"""
    import torch

    indices = [i for i in range(SKIP, len(smoothed) - 1) if math.isfinite(smoothed[i])]
    if len(indices) < 2:
        return None
    losses = torch.tensor([smoothed[i] for i in indices])
    spacing = torch.tensor([math.log10(rates[i]) for i in indices])
    return indices[int(torch.argmin(torch.gradient(losses, spacing=[spacing])[0]))]


def main(args: list[str]) -> None:
    options, fit_args = parse_args(list(args))
    if any(arg == "--ckpt_path" or arg.startswith("--ckpt_path=") for arg in fit_args):
        raise UserError("lr_find starts from the recipe's initial weights; leave out --ckpt_path.")
    if not 0 < options.min_lr < options.max_lr:
        raise UserError(
            f"--min_lr and --max_lr must be 0 < min < max, got {options.min_lr}, {options.max_lr}."
        )
    if options.num_training < 2:
        raise UserError(f"--num_training must be at least 2, got {options.num_training}.")
    from mnist_lightning.cli.checks import check_config_files
    from mnist_lightning.cli.process import prepare_process

    prepare_process()
    check_config_files(fit_args)
    with quiet():
        build_cli(["fit", *fit_args], cli_class=LRFindCLI, options=options)
