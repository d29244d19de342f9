"""The three models of the synthetic tasks (see the package docstring)."""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from xattn_mm.core import MultiheadAttention

from .._validation import check_positive_int
from .data import TASKS, _check_choice

MODEL_KINDS = ('indirect', 'misaligned', 'cross')


class RelativePositionBias1d(BaseModule):
    """Per-head logit bias from each query's reference position to every
    value position: the 1-D analogue of BoxRPB.

    ``bias[b, h, q, j] = mlp(ref[b, q] - (j + 0.5))[h]``, the distance in
    token units from the reference to the centre of value token ``j``. The
    MLP is BoxRPB's (Linear, ReLU, Linear without bias).

    Args:
        num_heads (int): Number of attention heads (MLP outputs).
        hidden_dims (int): Hidden width of the MLP. Defaults to 32.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(
        self,
        num_heads: int,
        hidden_dims: int = 32,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        check_positive_int('num_heads', num_heads)
        check_positive_int('hidden_dims', hidden_dims)
        self.mlp = nn.Sequential(
            nn.Linear(1, hidden_dims),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dims, num_heads, bias=False),
        )

    def forward(self, reference: Tensor, num_values: int) -> Tensor:
        """Compute the bias.

        Args:
            reference (Tensor): Reference positions in token units (0 to
                ``num_values``), shape (B, Q).
            num_values (int): Number of value tokens N.

        Returns:
            Tensor: Shape (B, num_heads, Q, N).
        """
        centres = torch.arange(
            num_values, device=reference.device, dtype=reference.dtype
        )
        delta = reference[:, :, None] - (centres + 0.5)
        return self.mlp(delta[..., None]).permute(0, 3, 1, 2)


class SyntheticDecoderLayer(BaseModule):
    """Pre-norm layer: self-attention among the queries, attention to the
    (key, value) sequences, FFN.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Attention heads.
        ffn_dims (int): FFN hidden channels.
        dropout (float): Dropout on every residual branch and inside the
            FFN. Defaults to 0.
        position_bias (bool): Add a :class:`RelativePositionBias1d` from the
            queries' reference positions to the value positions (indirect
            attention). Defaults to False.
        bias_hidden_dims (int): Hidden width of that bias MLP.
            Defaults to 32.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        ffn_dims: int,
        dropout: float = 0.0,
        position_bias: bool = False,
        bias_hidden_dims: int = 32,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        check_positive_int('ffn_dims', ffn_dims)
        # No dropout on the attention weights: it would force the explicit
        # softmax path of scaled_dot_product_attention, the slowest on CPU.
        self.self_attn = MultiheadAttention(embed_dims, num_heads)
        self.cross_attn = MultiheadAttention(embed_dims, num_heads)
        self.position_bias = (
            RelativePositionBias1d(num_heads, bias_hidden_dims)
            if position_bias
            else None
        )
        self.ffn = nn.Sequential(
            nn.Linear(embed_dims, ffn_dims),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_dims, embed_dims),
        )
        self.norms = nn.ModuleList(nn.LayerNorm(embed_dims) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        reference: Optional[Tensor] = None,
    ) -> Tensor:
        """Update the queries.

        Args:
            query (Tensor): Shape (B, Q, C).
            key (Tensor): Shape (B, N, C), paired with ``value`` by index.
            value (Tensor): Shape (B, N, C).
            reference (Tensor, optional): Reference positions in token
                units, shape (B, Q); required with ``position_bias``.
                Defaults to None.

        Returns:
            Tensor: Shape (B, Q, C).
        """
        bias = None
        if self.position_bias is not None:
            if reference is None:
                raise ValueError(
                    'reference (batch, num_queries) is required when '
                    'position_bias=True.'
                )
            bias = self.position_bias(reference, value.shape[1])
        x = self.norms[0](query)
        query = query + self.dropout(self.self_attn(x, x, x))
        x = self.norms[1](query)
        query = query + self.dropout(
            self.cross_attn(x, key, value, attn_bias=bias)
        )
        return query + self.dropout(self.ffn(self.norms[2](query)))


class SyntheticTaskModel(BaseModule):
    """Indirect, naive misaligned or cross-attention model of a synthetic
    task (paper Sec. 6.1 and App. A.4).

    Shared by all three kinds: one embedding table for the symbols (both
    sequences use the same alphabet) plus a padding token, learned
    positional embeddings added to both sequences (IA-DETR adds positional
    embeddings to its keys and values), ``num_layers``
    :class:`SyntheticDecoderLayer`, a final LayerNorm and a linear head on
    the queries. The kinds differ in what the queries, keys and values are
    (App. A.4: keys from the conditioning sequence, values from the content
    sequence, queries learned and enriched with the value sequence):

    - ``'indirect'``/``'misaligned'``: query ``i`` = learnable embedding
      ``i`` + the embedding of content token ``i`` (one query per content
      token); keys = the conditioning sequence (the ordering; the retrieval
      query) padded to ``seq_len`` with the padding token (never masked:
      IA-DETR masks only where both images are padding); values = the
      content sequence (the symbols to sort; the reference).
      ``'indirect'`` adds reference positions, starting at the centre of
      token ``i`` and refined after every layer but the last
      by ``ref = L * sigmoid(logit(ref / L) + head(output))`` (the DETR
      box-refinement rule, not detached: no loss supervises the references,
      so they learn only through the next layer's bias), and the per-layer
      relative position bias.
    - ``'cross'``: Sec. 6.1's assignment, queries from one sequence and
      keys = values from the other. Sorting: queries = the symbols to sort,
      keys = values = the ordering. Retrieval: queries = the query
      sequence, keys = values = the reference (the content). Every token
      adds its sequence's positional embedding.

    Outputs: sorting, ``seq_len`` logits per query (the target position of
    content token ``i``). Retrieval, logits over the
    ``seq_len - cond_len + 1`` possible starts: with one query per content
    token (indirect, misaligned) one score per query, the first
    ``seq_len - cond_len + 1`` being the logits; with the query sequence as
    the queries (cross) a pointer over the reference: the score of start
    ``s`` is the scaled dot product of the projected first query token
    (whose position in the reference is the start) with the projected key
    ``s``. A linear head from that token to the 11 starts instead
    memorised the training pairs (100 %) and tested at chance (11.0 % and
    7.5 %, seeds 0 and 1, 100 epochs; chance 9.1 %; docs/benchmarks.md): a
    pointer reads the answer per position, as the other kinds do.

    Args:
        task (str): ``'sorting'`` or ``'retrieval'``.
        model_kind (str): ``'indirect'``, ``'misaligned'`` or ``'cross'``.
        seq_len (int): Content length L: the symbols to sort, or the
            reference with the query inserted. Defaults to 10.
        cond_len (int): Conditioning length, at most L: the ordering's
            length (``vocab_size``) for sorting, the query's for retrieval.
            Defaults to 10.
        vocab_size (int): Alphabet size. Defaults to 10.
        embed_dims (int): Hidden channels. Defaults to 128.
        num_heads (int): Attention heads. Defaults to 4.
        num_layers (int): Layers. Defaults to 6.
        ffn_dims (int): FFN hidden channels. Defaults to 256.
        dropout (float): Dropout. Defaults to 0.1.
        bias_hidden_dims (int): Hidden width of the bias MLPs (BoxRPB uses
            512 for its two box edges; one scalar distance needs far less).
            Defaults to 32.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(
        self,
        task: str,
        model_kind: str,
        seq_len: int = 10,
        cond_len: int = 10,
        vocab_size: int = 10,
        embed_dims: int = 128,
        num_heads: int = 4,
        num_layers: int = 6,
        ffn_dims: int = 256,
        dropout: float = 0.1,
        bias_hidden_dims: int = 32,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        _check_choice('task', task, TASKS)
        _check_choice('model_kind', model_kind, MODEL_KINDS)
        for name, value in (
            ('seq_len', seq_len),
            ('cond_len', cond_len),
            ('vocab_size', vocab_size),
            ('embed_dims', embed_dims),
            ('num_layers', num_layers),
        ):
            check_positive_int(name, value)
        if cond_len > seq_len:
            raise ValueError(
                f'cond_len ({cond_len}) must not exceed seq_len ({seq_len}): '
                'the conditioning sequence is padded to the content length.'
            )
        if task == 'retrieval' and cond_len == seq_len:
            raise ValueError(
                'retrieval needs cond_len (the query length) less than '
                f'seq_len, got {cond_len} and {seq_len}.'
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f'dropout must be in [0, 1), got {dropout!r}.')
        self.task = task
        self.model_kind = model_kind
        self.seq_len = seq_len
        self.cond_len = cond_len
        self.vocab_size = vocab_size
        self.pad_token = vocab_size
        self.token_embed = nn.Embedding(vocab_size + 1, embed_dims)
        self.pos_embed = nn.Parameter(torch.randn(seq_len, embed_dims) * 0.02)
        self.query_embed = (
            None
            if model_kind == 'cross'
            else nn.Parameter(torch.randn(seq_len, embed_dims) * 0.02)
        )
        indirect = model_kind == 'indirect'
        self.layers = nn.ModuleList(
            SyntheticDecoderLayer(
                embed_dims,
                num_heads,
                ffn_dims,
                dropout,
                position_bias=indirect,
                bias_hidden_dims=bias_hidden_dims,
            )
            for _ in range(num_layers)
        )
        # The last layer's output feeds no further bias: no head after it.
        self.reference_heads = (
            nn.ModuleList(
                self._reference_head(embed_dims) for _ in range(num_layers - 1)
            )
            if indirect
            else None
        )
        self.norm = nn.LayerNorm(embed_dims)
        self.num_starts = seq_len - cond_len + 1
        if task == 'sorting':
            head_dims = seq_len
        elif model_kind == 'cross':
            head_dims = embed_dims
        else:
            head_dims = 1
        self.head = nn.Linear(embed_dims, head_dims)
        self.pointer_key = (
            nn.Linear(embed_dims, embed_dims)
            if task == 'retrieval' and model_kind == 'cross'
            else None
        )

    @staticmethod
    def _reference_head(embed_dims: int) -> nn.Sequential:
        head = nn.Sequential(
            nn.LayerNorm(embed_dims),
            nn.Linear(embed_dims, embed_dims),
            nn.ReLU(inplace=True),
            nn.Linear(embed_dims, 1),
        )
        # Small, not zero: the references start near their tokens, and the
        # first Linear still gets a gradient at initialisation.
        nn.init.normal_(head[-1].weight, std=0.01)
        nn.init.zeros_(head[-1].bias)
        return head

    def initial_reference(self, batch: int, device=None) -> Tensor:
        """The centre of content token ``i`` for query ``i``.

        Args:
            batch (int): Batch size B.
            device (torch.device, optional): Device. Defaults to None.

        Returns:
            Tensor: Shape (B, seq_len), in token units.
        """
        centres = torch.arange(self.seq_len, device=device) + 0.5
        return centres.float().expand(batch, -1)

    def forward(
        self,
        content: Tensor,
        condition: Tensor,
        return_references: bool = False,
    ):
        """Predict the task's logits.

        Args:
            content (Tensor): Content symbols, long, shape (B, seq_len).
            condition (Tensor): Conditioning symbols, long, shape
                (B, cond_len).
            return_references (bool): Also return the reference positions
                each layer used (``'indirect'`` only). Defaults to False.

        Returns:
            Tensor or tuple[Tensor, Tensor]: Sorting, logits (B, seq_len,
            seq_len); retrieval, logits (B, seq_len - cond_len + 1). With
            ``return_references``, also the references, shape
            (num_layers, B, seq_len), in token units.
        """
        batch = content.shape[0]
        if tuple(content.shape) != (batch, self.seq_len):
            raise ValueError(
                f'content must have shape (batch, {self.seq_len}), got '
                f'{tuple(content.shape)}.'
            )
        if tuple(condition.shape) != (batch, self.cond_len):
            raise ValueError(
                f'condition must have shape (batch, {self.cond_len}), got '
                f'{tuple(condition.shape)}.'
            )
        if return_references and self.model_kind != 'indirect':
            raise ValueError(
                'return_references needs model_kind="indirect", got '
                f'{self.model_kind!r}.'
            )
        content_tokens = self.token_embed(content)
        condition_tokens = (
            self.token_embed(condition) + self.pos_embed[: self.cond_len]
        )
        if self.model_kind == 'cross' and self.task == 'sorting':
            query = content_tokens + self.pos_embed
            key = value = condition_tokens
        elif self.model_kind == 'cross':
            query = condition_tokens
            key = value = content_tokens + self.pos_embed
        else:
            query = self.query_embed + content_tokens
            padded = F.pad(
                condition,
                (0, self.seq_len - self.cond_len),
                value=self.pad_token,
            )
            key = self.token_embed(padded) + self.pos_embed
            value = content_tokens + self.pos_embed

        reference = None
        references = []
        if self.model_kind == 'indirect':
            reference = self.initial_reference(batch, content.device)
        for i, layer in enumerate(self.layers):
            query = layer(query, key, value, reference)
            if reference is None:
                continue
            references.append(reference)
            if i < len(self.reference_heads):
                offset = self.reference_heads[i](query).squeeze(-1)
                fraction = torch.logit(reference / self.seq_len, eps=1e-5)
                reference = self.seq_len * torch.sigmoid(fraction + offset)

        if self.task == 'retrieval' and self.model_kind == 'cross':
            pointer = self.head(self.norm(query[:, 0]))  # B, C
            keys = self.pointer_key(key[:, : self.num_starts])  # B, S, C
            return torch.einsum('bc,bsc->bs', pointer, keys) / math.sqrt(
                pointer.shape[-1]
            )
        logits = self.head(self.norm(query))
        if self.task == 'retrieval':
            logits = logits.squeeze(-1)[:, : self.num_starts]
        if return_references:
            return logits, torch.stack(references)
        return logits


def build_model(task: str, model_kind: str, **kwargs) -> SyntheticTaskModel:
    """A :class:`SyntheticTaskModel` sized for :func:`make_dataset`'s pairs
    (sorting: 10 symbols, a 10-symbol ordering; retrieval: a 13-token
    content, a 3-token query).

    Args:
        task (str): ``'sorting'`` or ``'retrieval'``.
        model_kind (str): ``'indirect'``, ``'misaligned'`` or ``'cross'``.
        **kwargs: Further :class:`SyntheticTaskModel` arguments
            (``embed_dims``, ``num_layers``, ...).

    Returns:
        SyntheticTaskModel: The model, randomly initialised.
    """
    _check_choice('task', task, TASKS)
    seq_len, cond_len = (10, 10) if task == 'sorting' else (13, 3)
    return SyntheticTaskModel(
        task, model_kind, seq_len=seq_len, cond_len=cond_len, **kwargs
    )
