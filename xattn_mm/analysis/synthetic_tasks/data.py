"""The two synthetic tasks' data (see the package docstring)."""

import math
from typing import Dict, List

import torch
from torch import Tensor

from .._validation import check_positive_int

TASKS = ('sorting', 'retrieval')


def _check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f'{name} must be one of {choices}, got {value!r}.')


def _generator(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f'seed must be a non-negative int, got {seed!r}.')
    return torch.Generator().manual_seed(seed)


def ordering_pool(
    num_orderings: int = 5, vocab_size: int = 10, seed: int = 0
) -> Tensor:
    """The fixed pool of reference orderings of the sorting task.

    Row ``p`` lists the alphabet in the order of ordering ``p``: symbol
    ``pool[p, r]`` has rank ``r``. The pool depends only on ``seed``, so the
    training and the test pairs of every run share it.

    Args:
        num_orderings (int): Number of permutations in the pool; at most
            ``vocab_size!``. Defaults to 5.
        vocab_size (int): Alphabet size. Defaults to 10.
        seed (int): Seed of the pool. Defaults to 0.

    Returns:
        Tensor: Distinct permutations of ``range(vocab_size)``, long, shape
        (num_orderings, vocab_size).
    """
    check_positive_int('num_orderings', num_orderings)
    check_positive_int('vocab_size', vocab_size)
    if num_orderings > math.factorial(vocab_size):
        raise ValueError(
            f'num_orderings ({num_orderings}) exceeds the number of '
            f'permutations of {vocab_size} symbols.'
        )
    gen = _generator(seed)
    pool: List[Tensor] = []
    while len(pool) < num_orderings:
        perm = torch.randperm(vocab_size, generator=gen)
        if not any(torch.equal(perm, p) for p in pool):
            pool.append(perm)
    return torch.stack(pool)


def sorted_positions(content: Tensor, ordering: Tensor) -> Tensor:
    """Where each token goes when the sequence is sorted by ``ordering``.

    The target of the sorting task: the token at ``i`` moves to
    ``#{j: rank(x_j) < rank(x_i)} + #{j < i: x_j = x_i}``, its position in
    the stable sort by rank. The targets of a sequence are a permutation of
    its positions, so placing every token at its target gives the sorted
    sequence, and repeated symbols keep their order.

    Args:
        content (Tensor): Symbols, long, shape (N, L).
        ordering (Tensor): Reference orderings, long, shape (N, V); symbol
            ``ordering[n, r]`` has rank ``r``.

    Returns:
        Tensor: Target positions in ``[0, L)``, long, shape (N, L).
    """
    ranks = torch.argsort(ordering, dim=1)  # ranks[n, s]: rank of symbol s
    token_ranks = torch.gather(ranks, 1, content)
    return torch.argsort(torch.argsort(token_ranks, dim=1, stable=True), dim=1)


def make_sorting_data(
    num_samples: int,
    seed: int,
    seq_len: int = 10,
    vocab_size: int = 10,
    num_orderings: int = 5,
    ordering_seed: int = 0,
) -> Dict[str, Tensor]:
    """Pairs of the sorting-by-an-arbitrary-ordering task (paper Sec. 6.1,
    Task 1).

    Args:
        num_samples (int): Number of pairs N.
        seed (int): Seed of the sequences and of the ordering draws.
        seq_len (int): Content length L. Defaults to 10.
        vocab_size (int): Alphabet size V. Defaults to 10.
        num_orderings (int): Size of the ordering pool. Defaults to 5.
        ordering_seed (int): Seed of the pool (see :func:`ordering_pool`).
            Defaults to 0.

    Returns:
        dict[str, Tensor]: ``content`` (N, L) symbols drawn with
        replacement; ``condition`` (N, V) the ordering of each pair;
        ``target`` (N, L) from :func:`sorted_positions`. All long.
    """
    check_positive_int('num_samples', num_samples)
    check_positive_int('seq_len', seq_len)
    pool = ordering_pool(num_orderings, vocab_size, ordering_seed)
    gen = _generator(seed)
    content = torch.randint(vocab_size, (num_samples, seq_len), generator=gen)
    which = torch.randint(num_orderings, (num_samples,), generator=gen)
    condition = pool[which]
    return dict(
        content=content,
        condition=condition,
        target=sorted_positions(content, condition),
    )


def make_retrieval_data(
    num_samples: int,
    seed: int,
    seq_len: int = 10,
    query_len: int = 3,
    vocab_size: int = 10,
) -> Dict[str, Tensor]:
    """Pairs of the sequence-retrieval task (paper Sec. 6.1, Task 2).

    A query of ``query_len`` symbols and a reference of ``seq_len`` symbols
    are drawn independently, uniformly with replacement; the query is
    inserted into the reference at a uniform position in
    ``[0, seq_len]`` (before reference symbol ``start``; ``seq_len`` appends
    it), so the content is ``seq_len + query_len`` long and the query is a
    contiguous subsequence starting at ``start``. The paper does not say
    what happens when the query also occurs elsewhere; here the reference
    is redrawn until the query occurs only at ``start``, so the answer is
    unique.

    Args:
        num_samples (int): Number of pairs N.
        seed (int): Seed of the pairs.
        seq_len (int): Reference length before the insertion, L.
            Defaults to 10.
        query_len (int): Query length Lq. Defaults to 3.
        vocab_size (int): Vocabulary size V, at least 2. Defaults to 10.

    Returns:
        dict[str, Tensor]: ``content`` (N, L + Lq) the reference with the
        query inserted; ``condition`` (N, Lq) the query; ``target`` (N,)
        the start, in ``[0, L]``. All long.
    """
    check_positive_int('num_samples', num_samples)
    check_positive_int('seq_len', seq_len)
    check_positive_int('query_len', query_len)
    check_positive_int('vocab_size', vocab_size)
    if vocab_size < 2:
        raise ValueError(
            f'vocab_size must be at least 2 for a unique answer, got '
            f'{vocab_size}.'
        )
    gen = _generator(seed)
    total = seq_len + query_len
    query = torch.randint(vocab_size, (num_samples, query_len), generator=gen)
    start = torch.randint(seq_len + 1, (num_samples,), generator=gen)
    positions = torch.arange(total)
    in_query = (positions >= start[:, None]) & (
        positions < start[:, None] + query_len
    )
    # Content position p holds query symbol p - start inside the query,
    # reference symbol p (before it) or p - query_len (after it).
    query_index = (positions - start[:, None]).clamp(0, query_len - 1)
    reference_index = torch.where(
        positions < start[:, None], positions, positions - query_len
    ).clamp(0, seq_len - 1)
    content = torch.empty(num_samples, total, dtype=torch.long)
    todo = torch.ones(num_samples, dtype=torch.bool)
    while bool(todo.any()):
        reference = torch.randint(
            vocab_size, (int(todo.sum()), seq_len), generator=gen
        )
        content[todo] = torch.where(
            in_query[todo],
            torch.gather(query[todo], 1, query_index[todo]),
            torch.gather(reference, 1, reference_index[todo]),
        )
        windows = content.unfold(1, query_len, 1)  # N, L + 1, Lq
        matches = (windows == query[:, None]).all(-1).sum(-1)
        todo = matches > 1
    return dict(content=content, condition=query, target=start)


def make_dataset(task: str, num_samples: int, seed: int) -> Dict[str, Tensor]:
    """Pairs of ``task`` with the paper's sizes (Sec. 6.1: vocabulary 10;
    sorting, 10 symbols and 5 orderings; retrieval, a 3-token query inserted
    into a 10-token reference).

    Args:
        task (str): ``'sorting'`` or ``'retrieval'``.
        num_samples (int): Number of pairs.
        seed (int): Seed of the pairs.

    Returns:
        dict[str, Tensor]: See :func:`make_sorting_data` and
        :func:`make_retrieval_data`.
    """
    _check_choice('task', task, TASKS)
    if task == 'sorting':
        return make_sorting_data(num_samples, seed)
    return make_retrieval_data(num_samples, seed)
