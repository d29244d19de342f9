"""Training and evaluation on the synthetic tasks."""

import math
import time
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_positive_int
from .data import TASKS, _check_choice, _generator, make_dataset
from .models import MODEL_KINDS, build_model


def task_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy over the last dimension, averaged over tokens.

    Args:
        logits (Tensor): Shape (B, C) or (B, L, C).
        target (Tensor): Long, shape (B,) or (B, L).

    Returns:
        Tensor: Scalar loss.
    """
    return F.cross_entropy(logits.flatten(0, -2), target.flatten())


@torch.no_grad()
def accuracy(
    model: nn.Module, data: Dict[str, Tensor], batch_size: int = 200
) -> float:
    """Accuracy of ``model`` on ``data``: per token for sorting, per pair
    for retrieval. Runs in eval mode and restores the previous mode.

    Args:
        model (nn.Module): A :class:`SyntheticTaskModel`.
        data (dict[str, Tensor]): From :func:`make_dataset`.
        batch_size (int): Pairs per forward pass. Defaults to 200.

    Returns:
        float: Fraction of correct predictions.
    """
    was_training = model.training
    model.eval()
    correct = total = 0
    for start in range(0, data['content'].shape[0], batch_size):
        rows = slice(start, start + batch_size)
        logits = model(data['content'][rows], data['condition'][rows])
        target = data['target'][rows]
        correct += int((logits.argmax(-1) == target).sum())
        total += target.numel()
    model.train(was_training)
    return correct / total


def train_and_evaluate(
    task: str,
    model_kind: str,
    seed: int,
    epochs: int = 30,
    num_train: int = 1000,
    num_test: int = 200,
    batch_size: int = 50,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    model_cfg: Optional[dict] = None,
) -> dict:
    """Train one model on one task from ``seed`` and test it.

    Training pairs come from data seed ``2 * seed``, test pairs from
    ``2 * seed + 1``, so no two runs' or splits' draws share a stream. The
    seed also fixes the initialisation and the batch order, so a run is
    reproducible on one machine. AdamW with a cosine schedule to zero over
    all steps, gradient norm clipped at 1. The reported accuracy is the
    last epoch's (no selection on the test pairs).

    Args:
        task (str): ``'sorting'`` or ``'retrieval'``.
        model_kind (str): ``'indirect'``, ``'misaligned'`` or ``'cross'``.
        seed (int): Seed of the run.
        epochs (int): Passes over the training pairs. Defaults to 30.
        num_train (int): Training pairs. Defaults to 1000.
        num_test (int): Test pairs. Defaults to 200.
        batch_size (int): Pairs per step. Defaults to 50.
        lr (float): Peak learning rate. Defaults to 2e-3.
        weight_decay (float): AdamW weight decay. Defaults to 0.01.
        model_cfg (dict, optional): Further :func:`build_model` arguments.
            Defaults to None.

    Returns:
        dict: ``task``, ``model``, ``seed``, ``test_accuracy`` and
        ``train_accuracy`` (float, after the last epoch), ``train_loss``
        and ``test_accuracy_curve`` (list[float], one per epoch),
        ``num_params`` (int) and ``time_s`` (float).
    """
    _check_choice('task', task, TASKS)
    _check_choice('model_kind', model_kind, MODEL_KINDS)
    for name, value in (
        ('epochs', epochs),
        ('num_train', num_train),
        ('num_test', num_test),
        ('batch_size', batch_size),
    ):
        check_positive_int(name, value)
    if not lr > 0:
        raise ValueError(f'lr must be positive, got {lr!r}.')
    begin = time.perf_counter()
    train = make_dataset(task, num_train, 2 * seed)
    test = make_dataset(task, num_test, 2 * seed + 1)
    torch.manual_seed(seed)
    model = build_model(task, model_kind, **(model_cfg or {}))
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=lr, weight_decay=weight_decay
    )
    steps_per_epoch = math.ceil(num_train / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=epochs * steps_per_epoch
    )
    order_gen = _generator(seed)
    losses, curve = [], []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(num_train, generator=order_gen)
        total = 0.0
        for start in range(0, num_train, batch_size):
            rows = order[start : start + batch_size]
            logits = model(train['content'][rows], train['condition'][rows])
            loss = task_loss(logits, train['target'][rows])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(rows)
        losses.append(total / num_train)
        curve.append(accuracy(model, test))
    return dict(
        task=task,
        model=model_kind,
        seed=seed,
        test_accuracy=curve[-1],
        train_accuracy=accuracy(model, train),
        train_loss=losses,
        test_accuracy_curve=curve,
        num_params=sum(p.numel() for p in model.parameters()),
        time_s=time.perf_counter() - begin,
    )
