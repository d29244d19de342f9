"""Pseudo-labels and source-target pairs for DACSM / CDTrans stage 2.

Pure tensor functions, so they are tested on toy clusters and reused by
:class:`PseudoLabelHook`, which feeds them the memory banks of the whole
source and target sets.
"""

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def _cosine_assign(features: Tensor, centroids: Tensor, classes: Tensor):
    """Index in ``classes`` of the nearest centroid by cosine, per row."""
    sim = features @ F.normalize(centroids[classes], dim=-1).t()
    return classes[sim.argmax(dim=1)]


def center_aware_labels(
    features: Tensor,
    probs: Tensor,
    refine_steps: int = 1,
    append_ones: bool = True,
) -> Tensor:
    """SHOT's centre-aware pseudo-labels (Liang et al., ICML 2020).

    Soft centroids weighted by the softmax outputs; every sample takes the
    class of the nearest centroid by cosine; then ``refine_steps`` rounds
    of hard centroids (means of the assigned samples) and reassignment.
    Only classes that the softmax predicts for at least one sample compete
    (SHOT's threshold 0).

    Args:
        features (Tensor): Target features, (N, C).
        probs (Tensor): Softmax outputs of the classifier, (N, K).
        refine_steps (int): Hard-centroid rounds. Defaults to 1.
        append_ones (bool): Append a constant 1 to every feature before
            L2 normalisation, as SHOT does. Defaults to True.

    Returns:
        Tensor: Long (N,), the pseudo-labels.
    """
    if features.dim() != 2 or probs.dim() != 2:
        raise ValueError(
            'features and probs must be 2-D, got shapes '
            f'{tuple(features.shape)} and {tuple(probs.shape)}.'
        )
    if features.shape[0] != probs.shape[0]:
        raise ValueError(
            f'features has {features.shape[0]} rows but probs has '
            f'{probs.shape[0]}.'
        )
    if refine_steps < 0:
        raise ValueError(f'refine_steps must be >= 0, got {refine_steps}.')
    features = features.float()
    probs = probs.float()
    if append_ones:
        features = torch.cat(
            [features, features.new_ones(len(features), 1)], 1
        )
    features = F.normalize(features, dim=1)
    num_classes = probs.shape[1]
    classes = torch.unique(probs.argmax(dim=1))
    weights = probs
    for _ in range(refine_steps + 1):
        centroids = weights.t() @ features
        centroids = centroids / (weights.sum(0)[:, None] + 1e-8)
        labels = _cosine_assign(features, centroids, classes)
        weights = F.one_hot(labels, num_classes).float()
    return labels


def mutual_nearest_neighbours(
    source: Tensor, target: Tensor, chunk_size: int = 4096
) -> Tuple[Tensor, Tensor]:
    """Nearest neighbours both ways between two feature banks, by cosine,
    without holding the (Ns, Nt) similarity matrix.

    Args:
        source (Tensor): Source features, (Ns, C).
        target (Tensor): Target features, (Nt, C).
        chunk_size (int): Source rows per similarity block.
            Defaults to 4096.

    Returns:
        tuple[Tensor, Tensor]: Long ``target_of_source`` (Ns,), the nearest
        target of every source sample, and ``source_of_target`` (Nt,).
    """
    if source.dim() != 2 or target.dim() != 2:
        raise ValueError(
            'source and target features must be 2-D, got '
            f'{tuple(source.shape)} and {tuple(target.shape)}.'
        )
    if chunk_size <= 0:
        raise ValueError(f'chunk_size must be positive, got {chunk_size}.')
    source = F.normalize(source.float(), dim=1)
    target = F.normalize(target.float(), dim=1)
    target_of_source = []
    best = torch.full((len(target),), -float('inf'), device=target.device)
    source_of_target = torch.zeros(
        len(target), dtype=torch.long, device=target.device
    )
    for start in range(0, len(source), chunk_size):
        sim = source[start : start + chunk_size] @ target.t()
        target_of_source.append(sim.argmax(dim=1))
        value, row = sim.max(dim=0)
        better = value > best
        best = torch.where(better, value, best)
        source_of_target = torch.where(better, row + start, source_of_target)
    return torch.cat(target_of_source), source_of_target


def pair_domains(
    source_labels: Tensor,
    pseudo_labels: Tensor,
    target_of_source: Tensor,
    source_of_target: Tensor,
    label_filter: bool = True,
    deduplicate: bool = False,
) -> Tuple[Tensor, Tensor]:
    """CDTrans's two-way pairs: (nearest source of t, t) for every target
    ``t``, then (s, nearest target of s) for every source ``s``.

    Args:
        source_labels (Tensor): Long (Ns,), source ground truth.
        pseudo_labels (Tensor): Long (Nt,), target pseudo-labels.
        target_of_source (Tensor): Long (Ns,).
        source_of_target (Tensor): Long (Nt,).
        label_filter (bool): Keep a pair only when the source label equals
            the target pseudo-label. Defaults to True.
        deduplicate (bool): Keep one copy of a pair found both ways
            (CDTrans keeps both). Defaults to False.

    Returns:
        tuple[Tensor, Tensor]: Long source and target indices of the kept
        pairs, same length.
    """
    if len(target_of_source) != len(source_labels) or len(
        source_of_target
    ) != len(pseudo_labels):
        raise ValueError(
            'Neighbour indices must match the label counts: '
            f'{len(target_of_source)} vs {len(source_labels)} sources, '
            f'{len(source_of_target)} vs {len(pseudo_labels)} targets.'
        )
    device = source_of_target.device
    source_idx = torch.cat(
        [source_of_target, torch.arange(len(source_labels), device=device)]
    )
    target_idx = torch.cat(
        [torch.arange(len(pseudo_labels), device=device), target_of_source]
    )
    if label_filter:
        keep = (
            source_labels.to(device)[source_idx]
            == pseudo_labels.to(device)[target_idx]
        )
        source_idx, target_idx = source_idx[keep], target_idx[keep]
    if deduplicate:
        pairs = torch.unique(torch.stack([source_idx, target_idx], 1), dim=0)
        source_idx, target_idx = pairs[:, 0], pairs[:, 1]
    return source_idx, target_idx
