"""The IA-DETR paper's synthetic sequence tasks (arXiv 2509.26015, Sec. 6.1;
key and value assignment, App. A.4).

Two tasks in which the keys and the values of the attention come from two
different, unaligned sequences, and three models that read them:

- **Sorting by an arbitrary ordering.** The content sequence holds
  ``seq_len`` symbols drawn with replacement from an alphabet of
  ``vocab_size``; the conditioning sequence is a reference ordering of the
  alphabet, one of a pool of ``num_orderings`` fixed permutations. The
  model predicts, for every content token, its index in the content sorted
  by the ordering (a ``seq_len``-way classification per token; metric:
  per-token accuracy).
- **Sequence retrieval.** A query of ``query_len`` symbols is inserted
  into a reference sequence of ``seq_len`` symbols at a random position;
  the model predicts where the query starts (a ``seq_len + 1``-way
  classification; metric: accuracy).

Models (one :class:`SyntheticTaskModel`, parametrised by ``model_kind``):

- ``'indirect'``: indirect attention. Keys from the conditioning sequence,
  values from the content sequence, paired only by the index ``j`` (the
  conditioning sequence is padded to the content length). Queries are
  learnable embeddings plus the content token at the query's initial
  position. Each query carries a reference position that a per-layer head
  refines from the layer output; a per-layer MLP maps the relative position
  (reference minus value position) to one logit bias per head, the 1-D
  analogue of BoxRPB (:mod:`xattn_mm.core.box_rpb`).
- ``'misaligned'``: the same keys, values and queries with plain attention
  (no reference positions, no bias): the paper's naive misaligned
  attention.
- ``'cross'``: cross-attention, queries from one sequence and keys = values
  from the other: the symbols to sort attend to the ordering; the retrieval
  query attends to the reference.

Every layer is pre-norm: self-attention among the queries, then the
model's attention to the two sequences, then an FFN. All attention goes
through :class:`xattn_mm.core.MultiheadAttention`.

Where the paper is silent (its synthetic-task code is not public; the
official repository, github Bissmella/IA-DETR, holds only the detector),
this package chooses and says so in the docstrings; docs/benchmarks.md lists
the choices. Torch (and ``xattn_mm.core``) only.
"""

from .data import (
    TASKS,
    make_dataset,
    make_retrieval_data,
    make_sorting_data,
    ordering_pool,
    sorted_positions,
)
from .models import (
    MODEL_KINDS,
    RelativePositionBias1d,
    SyntheticDecoderLayer,
    SyntheticTaskModel,
    build_model,
)
from .training import accuracy, task_loss, train_and_evaluate

__all__ = [
    'MODEL_KINDS',
    'TASKS',
    'RelativePositionBias1d',
    'SyntheticDecoderLayer',
    'SyntheticTaskModel',
    'accuracy',
    'build_model',
    'make_dataset',
    'make_retrieval_data',
    'make_sorting_data',
    'ordering_pool',
    'sorted_positions',
    'task_loss',
    'train_and_evaluate',
]
