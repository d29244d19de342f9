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

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader
from mmpretrain.models.backbones import (
    DistilledVisionTransformer,
    VisionTransformer,
)
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.models.backbones.vision_transformer import (
    TransformerEncoderLayer,
)
from mmpretrain.models.utils import MultiheadAttention, resize_pos_embed
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from xattn_mm.core import multihead_attention

DRAW_MODES = ('batch', 'sample')
# Forwards whose token embedding ``embed_tokens`` reproduces exactly.
_KNOWN_FORWARDS = (
    VisionTransformer.forward,
    DistilledVisionTransformer.forward,
)


def check_supported_backbone(vit: nn.Module) -> None:
    """Raise unless ``vit`` is a ViT whose blocks StochCA can rewire.

    Supported: mmpretrain's :class:`VisionTransformer` (every ViT / DeiT
    arch, with or without the CLIP-style ``pre_norm``) and
    :class:`DistilledVisionTransformer`, built of the host's
    ``TransformerEncoderLayer`` with its ``MultiheadAttention``.

    Args:
        vit (nn.Module): The built backbone.

    Raises:
        TypeError: For any other backbone, block or attention type.
    """
    name = type(vit).__name__
    if (
        not isinstance(vit, VisionTransformer)
        or type(vit).forward not in _KNOWN_FORWARDS
    ):
        raise TypeError(
            f'StochCA wraps mmpretrain VisionTransformer or '
            f'DistilledVisionTransformer backbones, got {name}.'
        )
    if isinstance(vit, DistilledVisionTransformer) and not isinstance(
        vit.pre_norm, nn.Identity
    ):
        raise TypeError(
            'StochCA does not support DistilledVisionTransformer with '
            'pre_norm=True: the host forward never applies that norm.'
        )
    for i, layer in enumerate(vit.layers):
        if type(layer) is not TransformerEncoderLayer:
            raise TypeError(
                f'StochCA needs TransformerEncoderLayer blocks, but {name} '
                f'block {i} is {type(layer).__name__}.'
            )
        if type(layer.attn) is not MultiheadAttention or layer.attn.v_shortcut:
            raise TypeError(
                f'StochCA needs MultiheadAttention without v_shortcut in '
                f'every block, but {name} block {i} has '
                f'{type(layer.attn).__name__}.'
            )


def embed_tokens(vit: VisionTransformer, x: Tensor) -> Tuple[Tensor, tuple]:
    """The host forward up to the first block: patches, extra tokens,
    position embedding, dropout and (CLIP-style) pre-norm.

    Args:
        vit (VisionTransformer): A supported backbone.
        x (Tensor): Images, shape (B, 3, H, W).

    Returns:
        tuple: Tokens of shape (B, num_extra_tokens + h * w, C) and the
        patch resolution (h, w).
    """
    batch = x.shape[0]
    x, patch_resolution = vit.patch_embed(x)
    extra = [] if vit.cls_token is None else [vit.cls_token]
    if isinstance(vit, DistilledVisionTransformer):
        extra.append(vit.dist_token)
    x = torch.cat([t.expand(batch, -1, -1) for t in extra] + [x], dim=1)
    x = x + resize_pos_embed(
        vit.pos_embed,
        vit.patch_resolution,
        patch_resolution,
        mode=vit.interpolate_mode,
        num_extra_tokens=vit.num_extra_tokens,
    )
    return vit.pre_norm(vit.drop_after_pos(x)), patch_resolution


def packed_projection(
    attn: MultiheadAttention, x: Tensor, rows: slice
) -> Tensor:
    """Some rows of a host attention's packed ``qkv`` projection (queries
    0..C, keys C..2C, values 2C..3C), without computing the others.

    Args:
        attn (MultiheadAttention): The block's attention.
        x (Tensor): The block's LN1 output, shape (B, N, C).
        rows (slice): Output channels of ``qkv`` to compute.

    Returns:
        Tensor: Shape (B, N, len(rows)).
    """
    bias = attn.qkv.bias
    return F.linear(
        x, attn.qkv.weight[rows], None if bias is None else bias[rows]
    )


def project_keys_values(
    attn: MultiheadAttention, x: Tensor
) -> Tuple[Tensor, Tensor]:
    """Keys and values of a host attention, each (B, N, C)."""
    keys_values = packed_projection(attn, x, slice(attn.embed_dims, None))
    return keys_values.chunk(2, dim=-1)


def _load_teacher_state(path: str) -> Dict[str, Tensor]:
    """Backbone weights from an mmpretrain checkpoint: a classifier's
    (``backbone.`` prefix) or a bare backbone state dict."""
    checkpoint = CheckpointLoader.load_checkpoint(path, map_location='cpu')
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
class StochCA(BaseBackbone):
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
    Bernoulli(p) on the CPU's global generator (so the run's seed fixes the
    draws): once per block, shared by the batch (``draw='batch'``, the
    official behaviour), or per sample (``draw='sample'``). The teacher
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
        init_cfg (dict, optional): Initialisation config of the wrapper.
            Defaults to None.
    """

    def __init__(
        self,
        backbone: dict,
        p: float = 0.1,
        draw: str = 'batch',
        teacher_checkpoint: Optional[str] = None,
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
        self.p = float(p)
        self.draw = draw
        self.teacher_checkpoint = teacher_checkpoint
        self.backbone = MODELS.build(backbone)
        check_supported_backbone(self.backbone)
        self._teacher_cfg = copy.deepcopy(backbone)
        self._teacher_cfg.pop('init_cfg', None)
        # A list hides the teacher from nn.Module's registration.
        self._teacher: List[VisionTransformer] = []
        self.last_draw: Optional[Tensor] = None

    @property
    def num_layers(self) -> int:
        """Number of transformer blocks."""
        return len(self.backbone.layers)

    @property
    def teacher(self) -> Optional[VisionTransformer]:
        """The frozen teacher, or None before :meth:`init_weights`."""
        return self._teacher[0] if self._teacher else None

    def init_weights(self) -> None:
        """Initialise the student, then build the teacher (when p > 0)."""
        first_time = not self.is_init
        super().init_weights()
        if first_time and self.p > 0:
            self.build_teacher()

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
            result = teacher.load_state_dict(state, strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise ValueError(
                    f'teacher_checkpoint {self.teacher_checkpoint} does not '
                    f'match the backbone: missing keys '
                    f'{result.missing_keys[:5]}, unexpected keys '
                    f'{result.unexpected_keys[:5]}. Expected an mmpretrain '
                    'checkpoint of the same architecture (convert torchvision '
                    'or timm weights with '
                    'tools/model_converters/vit_to_mmpretrain.py).'
                )
        reference = next(self.backbone.parameters())
        teacher.requires_grad_(False).eval()
        teacher.to(device=reference.device, dtype=reference.dtype)
        self._teacher = [teacher]

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        if self._teacher:
            self._teacher[0]._apply(fn)
        return self

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
        return torch.rand(shape) < self.p

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
            out = torch.where(beta.to(x.device)[:, None, None], cross, own)
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
