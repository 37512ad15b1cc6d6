"""Random distortions of training digits, drawn per image and applied to a whole batch at once."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mnist_lightning.errors import UserError


@dataclass
class Augmentation:
    """Random affine (shift, rotation, zoom) and elastic distortion of a batch of images (N, C, H, W).

    Every image gets its own random transform, and the whole batch is resampled with one ``F.grid_sample``
    (bilinear) on the batch's device. Pixels moved in from outside repeat the border, which in MNIST is
    background. The elastic distortion follows Simard et al. (2003) and torchvision's ``ElasticTransform``:
    a uniform random displacement field, smoothed by a Gaussian of std ``elastic_sigma`` and scaled by
    ``elastic_alpha`` pixels.

    Args:
        shift: largest translation along each axis, in pixels.
        rotation: largest rotation either way, in degrees.
        scale: largest relative zoom; zoom factors are drawn from [1 - scale, 1 + scale].
        elastic_alpha: strength of the elastic distortion, in pixels (0 turns it off).
        elastic_sigma: smoothness of the elastic distortion, in pixels.
    """

    shift: float = 2.0
    rotation: float = 10.0
    scale: float = 0.1
    elastic_alpha: float = 0.0
    elastic_sigma: float = 4.0

    def __post_init__(self) -> None:
        for name in ("shift", "rotation", "elastic_alpha"):
            if getattr(self, name) < 0:
                raise UserError(f"data.augment.{name} must be 0 or more, got {getattr(self, name)}.")
        if not 0 <= self.scale < 1:
            raise UserError(f"data.augment.scale must be in [0, 1), got {self.scale}.")
        if self.elastic_sigma <= 0:
            raise UserError(f"data.augment.elastic_sigma must be positive, got {self.elastic_sigma}.")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        theta = self._random_affine(n, height, width, images)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        if self.elastic_alpha > 0:
            grid = grid + self._random_displacement(n, height, width, images)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _random_affine(self, n: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """(n, 2, 3) matrices mapping output to input coordinates, in grid_sample's [-1, 1] units."""
        angle = _uniform(n, math.radians(self.rotation), like)
        zoom = 1 + _uniform(n, self.scale, like)
        cos, sin = angle.cos() / zoom, angle.sin() / zoom
        shift_x = _uniform(n, 2 * self.shift / width, like)
        shift_y = _uniform(n, 2 * self.shift / height, like)
        return torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)

    def _random_displacement(self, n: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """A smooth random field (n, H, W, 2) of offsets in grid_sample's [-1, 1] units."""
        noise = _uniform((n, 2, height, width), 1.0, like)
        # Gaussian blur along H, then W, as two small matrix products (far faster than a 2-D convolution)
        blur_h = _gaussian_blur_matrix(height, self.elastic_sigma, like)
        blur_w = _gaussian_blur_matrix(width, self.elastic_sigma, like)
        field = (blur_h.T @ noise @ blur_w).permute(0, 2, 3, 1)
        pixels_to_units = torch.tensor([2 / width, 2 / height], dtype=like.dtype, device=like.device)
        return field * self.elastic_alpha * pixels_to_units


def _gaussian_blur_matrix(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """(size, size) matrix M: ``x @ M`` blurs x along its last axis (std ``sigma``, edges reflected)."""
    radius = min(math.ceil(3 * sigma), size - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=like.dtype, device=like.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    identity = torch.eye(size, dtype=like.dtype, device=like.device).unsqueeze(1)
    padded = F.pad(identity, (radius, radius), mode="reflect")
    return F.conv1d(padded, (kernel / kernel.sum()).view(1, 1, -1)).squeeze(1)


def _uniform(shape: int | tuple[int, ...], bound: float, like: torch.Tensor) -> torch.Tensor:
    """Uniform samples in [-bound, bound] with ``like``'s dtype and device, from torch's global generator."""
    return (torch.rand(shape, dtype=like.dtype, device=like.device) * 2 - 1) * bound
