"""Batched k-means over the tokens of every image at once."""

from typing import Optional, Tuple

import torch
from torch import Tensor


def _squared_distances(points: Tensor, centers: Tensor) -> Tensor:
    """(B, N, D) x (B, K, D) -> (B, N, K) squared Euclidean distances."""
    return (
        points.pow(2).sum(-1, keepdim=True)
        - 2 * points @ centers.transpose(1, 2)
        + centers.pow(2).sum(-1)[:, None, :]
    ).clamp_min(0)


def kmeans_plus_plus(
    points: Tensor, num_clusters: int, generator: torch.Generator
) -> Tensor:
    """k-means++ seeding, batched over images.

    Args:
        points (Tensor): Shape (B, N, D).
        num_clusters (int): K <= N.
        generator (torch.Generator): On ``points.device``; fixes the draw.

    Returns:
        Tensor: Initial centers, shape (B, K, D).
    """
    batch, num_points, _ = points.shape
    rows = torch.arange(batch, device=points.device)
    first = torch.randint(
        num_points, (batch,), generator=generator, device=points.device
    )
    centers = [points[rows, first]]
    nearest = _squared_distances(points, centers[0][:, None]).squeeze(-1)
    for _ in range(num_clusters - 1):
        # A point is drawn with probability proportional to its squared
        # distance to the nearest chosen center; +eps keeps all-equal
        # (e.g. constant) inputs drawable.
        weights = nearest + 1e-12
        index = torch.multinomial(weights, 1, generator=generator)[:, 0]
        center = points[rows, index]
        centers.append(center)
        nearest = torch.minimum(
            nearest, _squared_distances(points, center[:, None]).squeeze(-1)
        )
    return torch.stack(centers, dim=1)


@torch.no_grad()
def batched_kmeans(
    points: Tensor,
    num_clusters: int,
    num_iters: int = 5,
    seed: int = 0,
    generator: Optional[torch.Generator] = None,
) -> Tuple[Tensor, Tensor]:
    """Lloyd's k-means on each image's tokens, all images at once.

    The only Python loops run over the iterations and the K seeding steps,
    never over images. A cluster that loses all its points keeps its
    center. Distances are computed in float32 with autocast off, by design:
    in fp16 the expanded ``|x|^2 - 2 x.c + |c|^2`` cancels and flips
    assignments.

    Args:
        points (Tensor): Shape (B, N, D).
        num_clusters (int): K, with 1 <= K <= N.
        num_iters (int): Assignment/update rounds after seeding.
            Defaults to 5.
        seed (int): Seeds the k-means++ draw when no ``generator`` is
            given, so the result is a function of the input and the seed.
            Defaults to 0.
        generator (torch.Generator, optional): Used instead of ``seed``.
            Defaults to None.

    Returns:
        tuple[Tensor, Tensor]: Labels (B, N) in [0, K) and centers
        (B, K, D).
    """
    if points.dim() != 3:
        raise ValueError(
            f'points must have shape (batch, tokens, dims), got '
            f'{tuple(points.shape)}.'
        )
    if not isinstance(num_clusters, int) or not (
        1 <= num_clusters <= points.shape[1]
    ):
        raise ValueError(
            f'num_clusters must be an int in [1, {points.shape[1]}] (the '
            f'number of tokens), got {num_clusters!r}.'
        )
    if not isinstance(num_iters, int) or num_iters < 0:
        raise ValueError(
            f'num_iters must be a non-negative int, got {num_iters!r}.'
        )
    with torch.autocast(points.device.type, enabled=False):
        points = points.float()
        if generator is None:
            generator = torch.Generator(device=points.device).manual_seed(seed)
        centers = kmeans_plus_plus(points, num_clusters, generator)
        labels = _squared_distances(points, centers).argmin(-1)
        for _ in range(num_iters):
            one_hot = torch.nn.functional.one_hot(labels, num_clusters).to(
                points.dtype
            )
            counts = one_hot.sum(1)[..., None]
            sums = one_hot.transpose(1, 2) @ points
            centers = torch.where(
                counts > 0, sums / counts.clamp_min(1), centers
            )
            labels = _squared_distances(points, centers).argmin(-1)
        return labels, centers
