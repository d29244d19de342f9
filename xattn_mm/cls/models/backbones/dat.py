"""DAT: the Domain-Adaptive Transformer backbone of DACSM (Zang et al.,
arXiv 2603.17474), built on CDTrans's three weight-shared branches.

Every block runs the source stream and the target stream through their own
self-attention, and a third, cross stream whose attention takes its queries
from the source stream and its keys and values from the target stream (the
content of the source, the style of the target). The cross stream adds its
attention output residually and goes through the shared MLP; which tokens
its residual stream starts from is ``cross_residual``: the source tokens by
default, as the DACSM paper's Fig. 3 caption says ("the residual connection
adds the Source Query stream to the attention output"; its code is not
public), or the target tokens as CDTrans's code does. A cross-stream token's
update reads only its own residual and the source / target streams, and the
class token starts alike either way, so the choice reaches the patch tokens
only (``out_type='cls_token'`` outputs are identical). While training, Gaussian
"beneficial noise" perturbs the cross-attention (its logits, keys or values).
Inference is the target branch alone: the host ViT's own forward.
"""

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from xattn_mm.core import multihead_attention

from .vit_utils import check_supported_backbone, embed_tokens

NOISE_PLACEMENTS = ('logits', 'key', 'value')
NOISE_SCHEDULES = ('constant', 'linear')
CROSS_RESIDUALS = ('source', 'target')
# Cosine attention temperature: initial value and cap (Swin V2's choice).
_INIT_LOGIT_SCALE = math.log(10.0)
_MAX_LOGIT_SCALE = math.log(100.0)


@MODELS.register_module()
class DAT(VisionTransformer):
    """Domain-Adaptive Transformer: a ViT / DeiT with source, target and
    cross branches sharing every weight.

    ``forward(x)`` is :class:`VisionTransformer`'s forward, i.e. the target
    branch, with no extra cost: a DAT checkpoint is a ViT checkpoint (plus
    the cross-attention temperatures when ``cosine_attention``).
    :meth:`forward_branches` runs the three branches for a training step.

    Args:
        noise_std (float): Std of the Gaussian noise in the cross-attention
            while training. Defaults to 0 (no noise).
        noise_placement (str): Where the noise goes: ``'logits'`` (added to
            the attention logits), ``'key'`` or ``'value'`` (added to the
            projected target keys or values). Defaults to ``'logits'``.
        noise_schedule (str): ``'constant'`` or ``'linear'`` (decays from
            ``noise_std`` to 0 over training; :class:`NoiseScheduleHook`
            reports the progress). Defaults to ``'constant'``.
        cosine_attention (bool): Cross-attention logits as cosine
            similarities of L2-normalised queries and keys times a learnable
            per-head temperature. Defaults to False (scaled dot product).
        cross_residual (str): The tokens the cross stream's residual starts
            from: ``'source'`` (the query stream; the DACSM paper, Fig. 3)
            or ``'target'`` (the key/value stream; CDTrans). Defaults to
            ``'source'``.
        **kwargs: :class:`VisionTransformer` arguments (``arch``,
            ``img_size``, ``drop_path_rate``, ``init_cfg``, ...).
    """

    def __init__(
        self,
        noise_std: float = 0.0,
        noise_placement: str = 'logits',
        noise_schedule: str = 'constant',
        cosine_attention: bool = False,
        cross_residual: str = 'source',
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_supported_backbone(self, 'DAT')
        if isinstance(noise_std, bool) or not isinstance(
            noise_std, (int, float)
        ):
            raise TypeError(f'noise_std must be a float, got {noise_std!r}.')
        if noise_std < 0:
            raise ValueError(f'noise_std must be >= 0, got {noise_std}.')
        if noise_placement not in NOISE_PLACEMENTS:
            raise ValueError(
                f'noise_placement must be one of {NOISE_PLACEMENTS}, got '
                f'{noise_placement!r}.'
            )
        if noise_schedule not in NOISE_SCHEDULES:
            raise ValueError(
                f'noise_schedule must be one of {NOISE_SCHEDULES}, got '
                f'{noise_schedule!r}.'
            )
        if cross_residual not in CROSS_RESIDUALS:
            raise ValueError(
                f'cross_residual must be one of {CROSS_RESIDUALS}, got '
                f'{cross_residual!r}.'
            )
        self.cross_residual = cross_residual
        self.noise_std = float(noise_std)
        self.noise_placement = noise_placement
        self.noise_schedule = noise_schedule
        self.progress = 0.0
        self.cosine_attention = cosine_attention
        if cosine_attention:
            num_heads = self.layers[0].attn.num_heads
            self.cross_logit_scale = nn.Parameter(
                torch.full((self.num_layers, num_heads), _INIT_LOGIT_SCALE)
            )

    def set_progress(self, progress: float) -> None:
        """Record the fraction of training done, in [0, 1], for the noise
        schedule."""
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f'progress must be in [0, 1], got {progress}.')
        self.progress = float(progress)

    @property
    def current_noise_std(self) -> float:
        """The noise std of the next training step (0 in eval mode)."""
        if not self.training:
            return 0.0
        if self.noise_schedule == 'linear':
            return self.noise_std * (1.0 - self.progress)
        return self.noise_std

    def cross_attention(
        self, index: int, query: Tensor, key: Tensor, value: Tensor
    ) -> Tensor:
        """The cross branch's attention product at block ``index``, with the
        training noise and the optional cosine logits.

        Args:
            index (int): Block index.
            query (Tensor): Projected source queries, (B, N, C).
            key (Tensor): Projected target keys, (B, N, C).
            value (Tensor): Projected target values, (B, N, C).

        Returns:
            Tensor: Shape (B, N, C), before the output projection.
        """
        attn = self.layers[index].attn
        num_heads = attn.num_heads
        std = self.current_noise_std
        bias = None
        if std > 0:
            if self.noise_placement == 'key':
                key = key + std * torch.randn_like(key)
            elif self.noise_placement == 'value':
                value = value + std * torch.randn_like(value)
            else:
                batch, tokens = query.shape[:2]
                bias = (
                    std
                    * query.new_empty(
                        batch, num_heads, tokens, key.shape[1]
                    ).normal_()
                )
        scale = None
        if self.cosine_attention:
            heads = (num_heads, -1)
            temperature = (
                self.cross_logit_scale[index].clamp(max=_MAX_LOGIT_SCALE).exp()
            )
            query = F.normalize(query.unflatten(-1, heads), dim=-1)
            query = (query * temperature[:, None]).flatten(-2)
            key = F.normalize(key.unflatten(-1, heads), dim=-1).flatten(-2)
            scale = 1.0
        return multihead_attention(
            query,
            key,
            value,
            num_heads,
            attn_bias=bias,
            dropout_p=attn.attn_drop if self.training else 0.0,
            scale=scale,
        )

    def forward_branches(
        self, source: Tensor, target: Tensor
    ) -> Tuple[tuple, tuple, tuple]:
        """Run the source, target and cross branches.

        The source and target streams are batched together through every
        shared layer; the cross stream joins them after the attention
        product, so a block costs one qkv projection of source + target,
        and output projection, norms and MLP of the three streams.

        Args:
            source (Tensor): Source images, (B, 3, H, W).
            target (Tensor): Target images, same shape as ``source``.

        Returns:
            tuple: ``(source_outs, target_outs, cross_outs)``, each shaped
            as :meth:`forward`'s output (``out_type``, ``out_indices``).
        """
        if source.shape != target.shape:
            raise ValueError(
                'source and target batches must have the same shape (the '
                'three streams run stacked on the batch, the cross stream '
                'pairs source and target tokens), got '
                f'{tuple(source.shape)} and {tuple(target.shape)}.'
            )
        batch = source.shape[0]
        tokens, patch_resolution = embed_tokens(
            self, torch.cat([source, target])
        )
        # Streams stacked on the batch: source, target, cross (which starts
        # from the source or the target embeddings: ``cross_residual``).
        if self.cross_residual == 'source':
            start = tokens[:batch]
        else:
            start = tokens[batch:]
        hidden = torch.cat([tokens, start])
        outs = ([], [], [])
        for i, layer in enumerate(self.layers):
            attn = layer.attn
            query, key, value = attn.qkv(layer.ln1(hidden[: 2 * batch])).chunk(
                3, dim=-1
            )
            dropout = attn.attn_drop if self.training else 0.0
            own = multihead_attention(
                query, key, value, attn.num_heads, dropout_p=dropout
            )
            cross = self.cross_attention(
                i, query[:batch], key[batch:], value[batch:]
            )
            out = attn.proj_drop(attn.proj(torch.cat([own, cross])))
            hidden = hidden + attn.out_drop(attn.gamma1(out))
            hidden = layer.ffn(layer.ln2(hidden), identity=hidden)
            if i == self.num_layers - 1 and self.final_norm:
                hidden = self.ln1(hidden)
            if i in self.out_indices:
                for stream, part in zip(outs, hidden.chunk(3)):
                    stream.append(self._format_output(part, patch_resolution))
        return tuple(tuple(stream) for stream in outs)
