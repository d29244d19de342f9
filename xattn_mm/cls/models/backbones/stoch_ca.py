"""StochCA: fine-tuning with stochastic cross-attention to a frozen copy of
the pretrained model (Seo, Lee and Hwang, arXiv 2402.16092).

While training, each block of the student draws beta ~ Bernoulli(p); when
beta is 1 the block's queries (student LN1 + query projection) attend to the
keys and values of the frozen teacher at the same depth (teacher LN1 + key /
value projections of the teacher's own hidden state), otherwise the block
runs its ordinary self-attention. Everything after the attention product
(output projection, dropouts, residual, MLP) is the student's. In eval mode,
or with p = 0, the student is the plain backbone and the teacher never runs.
"""

import copy
import logging
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from mmengine.dist import broadcast_object_list, get_rank
from mmengine.logging import MessageHub, print_log
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.models.utils import MultiheadAttention
from mmpretrain.registry import MODELS
from torch import Tensor

from xattn_mm.core import HiddenFrozenMixin, multihead_attention
from xattn_mm.engine.checkpoint import load_checkpoint_file

from .vit_utils import (
    check_supported_backbone,
    embed_tokens,
    packed_projection,
    project_keys_values,
)

DRAW_MODES = ('batch', 'sample')


def _load_teacher_state(path: str) -> Dict[str, Tensor]:
    """Backbone weights from an mmpretrain checkpoint: a classifier's
    (``backbone.`` prefix) or a bare backbone state dict, loaded under the
    checkpoint policy (:func:`xattn_mm.engine.load_checkpoint_file`)."""
    checkpoint = load_checkpoint_file(path, map_location='cpu')
    state = checkpoint.get('state_dict', checkpoint)
    prefix = 'backbone.'
    if any(k.startswith(prefix) for k in state):
        state = {
            k[len(prefix) :]: v
            for k, v in state.items()
            if k.startswith(prefix)
        }
    return state


@MODELS.register_module()
class StochCA(HiddenFrozenMixin, BaseBackbone):
    """Stochastic cross-attention wrapper of a ViT backbone.

    The wrapped ``backbone`` is the student, trained as usual. The teacher is
    the same architecture with the pretrained weights, frozen, in eval mode
    and run under no-grad on the same batch. It is built by
    :meth:`init_weights` (mmengine's Runner calls it before training and
    before resuming) and only when ``p > 0``: from ``teacher_checkpoint``,
    or else as a copy of the student right after its own initialisation
    (its ``init_cfg``, e.g. ``Pretrained``), so student and teacher start
    from the same weights, as in the paper. The teacher is deliberately not
    a registered submodule: it is absent from ``state_dict()`` (training
    checkpoints hold the student only, and a resumed run rebuilds the same
    teacher), from ``parameters()`` (so from the optimizer and DDP) and from
    ``train()``; it follows the student's device and dtype.

    In a training forward with ``p > 0``, every block draws beta ~
    Bernoulli(p): once per block, shared by the batch (``draw='batch'``, the
    official behaviour), or per sample (``draw='sample'``). The draws come
    from a generator of their own (the global one is left alone), seeded
    from (``seed``, the iteration, the forward's index within it) and, in
    ``sample`` mode, the rank: every DDP rank takes the same blocks in
    ``batch`` mode (so all ranks run the same graph) and distinct samples in
    ``sample`` mode, and a resumed run repeats the draws of the original.
    The iteration is the Runner's (``MessageHub``'s ``iter``); outside a
    Runner, training forwards are counted. The teacher
    then runs only up to the deepest block that drew cross-attention, and
    not at all when none did. Eval mode (or ``p = 0``) is the plain
    backbone's forward: no teacher, no extra cost.

    Args:
        backbone (dict): Config of a supported mmpretrain backbone (see
            :func:`check_supported_backbone`); pretrained weights go in its
            ``init_cfg``.
        p (float): Probability that a block uses cross-attention in a
            training step. Defaults to 0.1.
        draw (str): ``'batch'`` or ``'sample'``. Defaults to ``'batch'``.
        teacher_checkpoint (str, optional): Local checkpoint of the teacher
            (an mmpretrain classifier or bare backbone state dict of the same
            architecture). Defaults to None (copy of the initialised
            student).
        seed (int, optional): Seed of the draws. Defaults to None: the
            global torch seed at :meth:`init_weights` (the run's
            ``randomness.seed``), rank 0's where ranks differ.
        init_cfg (dict, optional): Initialisation config of the wrapper.
            Defaults to None.
    """

    def __init__(
        self,
        backbone: dict,
        p: float = 0.1,
        draw: str = 'batch',
        teacher_checkpoint: Optional[str] = None,
        seed: Optional[int] = None,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if not isinstance(backbone, dict):
            raise TypeError(
                f'backbone must be a config dict, got {type(backbone)}.'
            )
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f'p must be a float in [0, 1], got {p!r}.')
        if not 0.0 <= p <= 1.0:
            raise ValueError(f'p must be in [0, 1], got {p!r}.')
        if draw not in DRAW_MODES:
            raise ValueError(
                f'draw must be one of {DRAW_MODES}, got {draw!r}.'
            )
        if teacher_checkpoint is not None and not isinstance(
            teacher_checkpoint, str
        ):
            raise TypeError(
                'teacher_checkpoint must be a path or None, got '
                f'{teacher_checkpoint!r}.'
            )
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int) or seed < 0
        ):
            raise TypeError(f'seed must be an int >= 0 or None, got {seed!r}.')
        self.p = float(p)
        self.draw = draw
        self.seed = seed
        self._draw_step: Tuple[Optional[int], int] = (None, 0)
        self.teacher_checkpoint = teacher_checkpoint
        self.backbone = MODELS.build(backbone)
        check_supported_backbone(self.backbone, 'StochCA')
        self._teacher_cfg = copy.deepcopy(backbone)
        self._teacher_cfg.pop('init_cfg', None)
        self.last_draw: Optional[Tensor] = None

    @property
    def num_layers(self) -> int:
        """Number of transformer blocks."""
        return len(self.backbone.layers)

    @property
    def teacher(self) -> Optional[VisionTransformer]:
        """The frozen teacher, or None before :meth:`init_weights`."""
        return self.hidden_frozen('teacher')

    def init_weights(self) -> None:
        """Initialise the student, then build the teacher (when p > 0)."""
        first_time = not self.is_init
        super().init_weights()
        if self.seed is None:
            seed = [torch.initial_seed() % 2**63]
            broadcast_object_list(seed)  # no-op outside DDP
            self.seed = seed[0]
        if first_time and self.p > 0:
            self.build_teacher()

    def random_state(self) -> dict:
        """What :class:`~xattn_mm.engine.RandomStateHook` stores in a
        checkpoint: the seed (the draws are a function of it and the
        iteration) and the position within the current iteration."""
        return dict(seed=self.seed, draw_step=self._draw_step)

    def set_random_state(self, state: dict) -> None:
        """Restore :meth:`random_state` on resume, so the resumed run draws
        what the interrupted one would have, even where the seed came from
        the run's (randomly chosen) torch seed."""
        self.seed = state['seed']
        self._draw_step = tuple(state['draw_step'])

    def build_teacher(self) -> None:
        """(Re)build the frozen teacher from ``teacher_checkpoint`` or from
        the student's current weights."""
        teacher = MODELS.build(self._teacher_cfg)
        if self.teacher_checkpoint is None:
            pretrained = self.backbone.init_cfg
            if not (
                isinstance(pretrained, dict)
                and pretrained.get('type') == 'Pretrained'
            ):
                print_log(
                    'StochCA: the teacher copies the student, whose init_cfg '
                    'is not Pretrained; cross-attention will read randomly '
                    'initialised keys and values.',
                    logger='current',
                    level=logging.WARNING,
                )
            teacher.load_state_dict(self.backbone.state_dict())
        else:
            state = _load_teacher_state(self.teacher_checkpoint)
            expected = (
                'Expected an mmpretrain checkpoint of the same architecture '
                '(convert torchvision or timm weights with '
                'tools/model_converters/vit_to_mmpretrain.py).'
            )
            try:
                result = teacher.load_state_dict(state, strict=False)
            except RuntimeError as e:  # shape mismatches
                mismatched = [
                    f'{k}: {tuple(v.shape)} in the checkpoint, '
                    f'{tuple(teacher.state_dict()[k].shape)} in the backbone'
                    for k, v in state.items()
                    if k in teacher.state_dict()
                    and v.shape != teacher.state_dict()[k].shape
                ]
                raise ValueError(
                    f'teacher_checkpoint {self.teacher_checkpoint} does not '
                    f'match the backbone: {"; ".join(mismatched[:3]) or e}. '
                    + expected
                ) from None
            if result.missing_keys or result.unexpected_keys:
                raise ValueError(
                    f'teacher_checkpoint {self.teacher_checkpoint} does not '
                    f'match the backbone: missing keys '
                    f'{result.missing_keys[:5]}, unexpected keys '
                    f'{result.unexpected_keys[:5]}. ' + expected
                )
        self.hide_frozen('teacher', teacher)

    def get_layer_depth(self, param_name: str, prefix: str = '') -> tuple:
        """Layer depth for layer-wise learning-rate decay, delegated to the
        student (whose parameters live under ``backbone.``)."""
        return self.backbone.get_layer_depth(param_name, prefix + 'backbone.')

    def draw_blocks(self, batch_size: int) -> Tensor:
        """Draw which blocks use cross-attention in this step.

        Args:
            batch_size (int): Samples in the batch.

        Returns:
            Tensor: Bool, (num_layers,) for ``draw='batch'`` or
            (num_layers, batch_size) for ``draw='sample'``; on the CPU.
        """
        shape = (self.num_layers,)
        if self.draw == 'sample':
            shape += (batch_size,)
        return torch.rand(shape, generator=self._draw_generator()) < self.p

    def _draw_generator(self) -> torch.Generator:
        """A CPU generator seeded from (seed, iteration, index of this
        draw within the iteration[, rank in ``sample`` mode])."""
        if self.seed is None:
            raise RuntimeError(
                'StochCA has no seed yet: pass seed= or call init_weights() '
                'first (mmengine Runner does so before training).'
            )
        iteration = MessageHub.get_current_instance().get_info('iter')
        last, count = self._draw_step
        count = count + 1 if iteration == last else 0
        self._draw_step = (iteration, count)
        words = [self.seed, -1 if iteration is None else iteration, count]
        if self.draw == 'sample':
            words.append(get_rank())
        words = [w + 1 for w in words]  # SeedSequence takes ints >= 0
        state = np.random.SeedSequence(words).generate_state(1, np.uint64)
        return torch.Generator().manual_seed(int(state[0]))

    @torch.no_grad()
    def teacher_keys_values(
        self, x: Tensor, layers: List[int]
    ) -> Dict[int, Tuple[Tensor, Tensor]]:
        """Run the teacher up to the deepest of ``layers`` and return its
        keys and values there (its own LN1 + key/value projections of its
        own hidden state; extra tokens included).

        Args:
            x (Tensor): Images, shape (B, 3, H, W).
            layers (list[int]): Block indices; not empty.

        Returns:
            dict[int, tuple[Tensor, Tensor]]: Block index to keys and
            values, each (B, N, C).
        """
        teacher = self.teacher
        if teacher is None:
            raise RuntimeError(
                'StochCA has no teacher yet: call init_weights() first '
                '(mmengine Runner does so before training).'
            )
        wanted = set(layers)
        last = max(wanted)
        hidden, _ = embed_tokens(teacher, x)
        out = {}
        for i, layer in enumerate(teacher.layers[: last + 1]):
            normed = layer.ln1(hidden)
            if i in wanted:
                out[i] = project_keys_values(layer.attn, normed)
            if i < last:  # TransformerEncoderLayer.forward, LN1 reused
                hidden = hidden + layer.attn(normed)
                hidden = layer.ffn(layer.ln2(hidden), identity=hidden)
        return out

    def _attention(
        self,
        attn: MultiheadAttention,
        x: Tensor,
        keys_values: Tuple[Tensor, Tensor],
        beta: Tensor,
    ) -> Tensor:
        """A block's attention branch with cross-attention where beta is
        set: h' = h + (1 - beta) SA + beta CA, through the student's output
        projection, dropouts and layer scale (as the host forward).

        Args:
            attn (MultiheadAttention): The student block's attention.
            x (Tensor): The student's LN1 output, (B, N, C).
            keys_values (tuple[Tensor, Tensor]): Teacher keys and values.
            beta (Tensor): Bool, () for a batch draw or (B,) per sample.

        Returns:
            Tensor: The attention branch, (B, N, C).
        """
        dropout = attn.attn_drop if self.training else 0.0
        key, value = keys_values
        if beta.dim() == 0:
            query = packed_projection(attn, x, slice(0, attn.embed_dims))
            out = multihead_attention(
                query, key, value, attn.num_heads, dropout_p=dropout
            )
        else:
            query, own_key, own_value = attn.qkv(x).chunk(3, dim=-1)
            cross = multihead_attention(
                query, key, value, attn.num_heads, dropout_p=dropout
            )
            own = multihead_attention(
                query, own_key, own_value, attn.num_heads, dropout_p=dropout
            )
            beta = beta.to(x.device, non_blocking=True)
            out = torch.where(beta[:, None, None], cross, own)
        out = attn.proj_drop(attn.proj(out))
        return attn.out_drop(attn.gamma1(out))

    def forward(self, x: Tensor) -> tuple:
        """Forward as the wrapped backbone.

        Args:
            x (Tensor): Images, shape (B, 3, H, W).

        Returns:
            tuple: The wrapped backbone's outputs (its ``out_type`` and
            ``out_indices``).
        """
        if not self.training or self.p == 0:
            return self.backbone(x)
        draw = self.draw_blocks(x.shape[0])
        self.last_draw = draw
        drawn = [i for i in range(self.num_layers) if bool(draw[i].any())]
        if not drawn:
            return self.backbone(x)
        keys_values = self.teacher_keys_values(x, drawn)

        vit = self.backbone
        hidden, patch_resolution = embed_tokens(vit, x)
        outs = []
        for i, layer in enumerate(vit.layers):
            if i in keys_values:
                hidden = hidden + self._attention(
                    layer.attn, layer.ln1(hidden), keys_values[i], draw[i]
                )
                hidden = layer.ffn(layer.ln2(hidden), identity=hidden)
            else:
                hidden = layer(hidden)
            if i == self.num_layers - 1 and vit.final_norm:
                hidden = vit.ln1(hidden)
            if i in vit.out_indices:
                outs.append(vit._format_output(hidden, patch_resolution))
        return tuple(outs)
