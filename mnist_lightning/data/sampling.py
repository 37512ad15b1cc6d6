"""Batches straight from tensors: exact sharding across devices, mid-epoch resume, one indexing per batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def normalize(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 images (N, 28, 28) -> float32 (N, 1, 28, 28): the operations of ``ToTensor`` + ``Normalize``."""
    return images.unsqueeze(1).float().div_(255).sub_(mean).div_(std)


class ShardedBatchSampler(Sampler[list[int]]):
    """Batches of indices for one rank; every sample used exactly once per epoch, none padded or dropped.

    Each step takes one global batch of ``batch_size * world_size`` samples and splits it between the
    ranks, so all ranks take the same number of steps (DDP needs that) and ``batch_size`` is per device.
    The order is a permutation seeded by ``seed + epoch`` when shuffling: identical on every rank, and
    replayed exactly when a run resumes at that epoch. ``resume_at`` skips the batches of an epoch that a run
    interrupted mid-epoch had already trained on.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._resume_point: tuple[int, int] | None = None
        step = batch_size * world_size
        self._starts = list(range(0, num_samples, step))
        if len(self._starts) > 1 and num_samples - self._starts[-1] < world_size:
            self._starts.pop()  # a tail too small to give every rank a sample joins the previous step

    @property
    def sampler(self) -> ShardedBatchSampler:
        """Itself: Lightning calls ``set_epoch`` on ``dataloader.batch_sampler.sampler`` at each epoch."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Make the next pass, if it is over ``epoch``, leave out its first ``batches_done`` batches."""
        self._resume_point = (epoch, batches_done)

    def __len__(self) -> int:
        return len(self._starts)

    def __iter__(self) -> Iterator[list[int]]:
        resume_epoch, skip = self._resume_point or (self.epoch, 0)
        self._resume_point = None
        if resume_epoch != self.epoch:
            skip = 0
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        ends = self._starts[1:] + [self.num_samples]
        for start, end in zip(self._starts[skip:], ends[skip:], strict=True):
            yield order[start:end].tensor_split(self.world_size)[self.rank].tolist()


class TensorBatchDataset(Dataset):
    """A whole split held as two tensors; the DataLoader fetches each batch with one indexing operation.

    Images stay uint8 (47 MB for all of MNIST, not 188 MB as float) and are normalized a batch at a time
    with the data set's ``mean`` and ``std``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float) -> None:
        self.images = images
        self.labels = labels
        self.mean = mean
        self.std = std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return normalize(self.images[index : index + 1], self.mean, self.std)[0], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, device=self.labels.device)
        return normalize(self.images[index], self.mean, self.std), self.labels[index]


class ResumableDataLoader(DataLoader):
    """The training DataLoader, resumable mid-epoch through Lightning's ``state_dict`` protocol.

    Lightning stores ``state_dict()`` in every checkpoint and, when a run resumes from a checkpoint taken
    mid-epoch (an interrupted run), hands it back to ``load_state_dict()``: the epoch then goes on with
    exactly the batches it had not trained on yet. ``batches_done`` reports how many batches of the current
    epoch the trainer has finished.
    """

    def __init__(self, *args, batches_done: Callable[[], int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batches_done = batches_done

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.batch_sampler.epoch, "batches_done": self.batches_done()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.resume_at(state["epoch"], state["batches_done"])


def keep_batch(batch):
    """collate_fn for TensorBatchDataset, whose __getitems__ already returns a whole batch."""
    return batch
