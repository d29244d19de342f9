"""Convert torchvision or timm ViT / DeiT checkpoints to mmpretrain's
``VisionTransformer`` layout (the weights users hold locally, e.g. the
ImageNet ViT-B/16 StochCA fine-tunes from).

    python tools/model_converters/vit_to_mmpretrain.py SRC DST
        [--format auto|torchvision|timm] [--no-head] [--img-size N]

SRC is a state dict (``.pth``/``.bin``, optionally under ``state_dict`` or
``model``) or a ``.safetensors`` file. DST is an mmpretrain classifier
checkpoint: backbone weights under ``backbone.``, the classifier (if kept)
under ``head.layers.`` as ``VisionTransformerClsHead`` (``head``,
``pre_logits``) or ``DeiTClsHead`` (``head_dist``) name it. Load the
backbone with ``init_cfg=dict(type='Pretrained', checkpoint=DST,
prefix='backbone.')``.

The architecture options must match the source: LayerNorm ``eps=1e-6``
(torchvision, timm ViT/DeiT) or ``1e-5`` (CLIP); ``pre_norm=True`` for
timm's ``norm_pre`` (CLIP), which also has no patch-embedding bias;
``out_type='avg_featmap'`` for timm's ``fc_norm`` (global-pool) models;
``DistilledVisionTransformer`` for a ``dist_token``. Unknown keys are an
error naming them.

``--img-size N`` resizes the position embedding to an N px input as
torchvision's ``interpolate_embeddings`` does (bicubic, ``align_corners``
True; :func:`xattn_mm.cls.models.utils.interpolate_pos_embed`), which is
what the official StochCA code runs for its 448 px transfer models;
mmpretrain's own load-time resize uses ``align_corners=False``.
"""

import argparse
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch

from xattn_mm.cls.models.utils import interpolate_pos_embed
from xattn_mm.engine import load_checkpoint_file

Rules = List[Tuple[str, str]]

TORCHVISION: Rules = [
    (r'^class_token$', 'backbone.cls_token'),
    (r'^conv_proj\.', 'backbone.patch_embed.projection.'),
    (r'^encoder\.pos_embedding$', 'backbone.pos_embed'),
    (r'^encoder\.ln\.', 'backbone.ln1.'),
    (
        r'^encoder\.layers\.encoder_layer_(\d+)\.ln_1\.',
        r'backbone.layers.\1.ln1.',
    ),
    (
        r'^encoder\.layers\.encoder_layer_(\d+)\.ln_2\.',
        r'backbone.layers.\1.ln2.',
    ),
    (
        r'^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.in_proj_',
        r'backbone.layers.\1.attn.qkv.',
    ),
    (
        r'^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.out_proj\.',
        r'backbone.layers.\1.attn.proj.',
    ),
    # torchvision >= 0.14 names the MLP ``mlp.0`` / ``mlp.3``; older
    # checkpoints ``mlp.linear_1`` / ``mlp.linear_2``.
    (
        r'^encoder\.layers\.encoder_layer_(\d+)\.mlp\.(0|linear_1)\.',
        r'backbone.layers.\1.ffn.layers.0.0.',
    ),
    (
        r'^encoder\.layers\.encoder_layer_(\d+)\.mlp\.(3|linear_2)\.',
        r'backbone.layers.\1.ffn.layers.1.',
    ),
    (r'^heads\.(head|pre_logits)\.', r'head.layers.\1.'),
]

TIMM: Rules = [
    (r'^(cls_token|dist_token|pos_embed)$', r'backbone.\1'),
    (r'^patch_embed\.proj\.', 'backbone.patch_embed.projection.'),
    (r'^norm_pre\.', 'backbone.pre_norm.'),
    (r'^norm\.', 'backbone.ln1.'),
    (r'^fc_norm\.', 'backbone.ln2.'),
    (r'^blocks\.(\d+)\.norm1\.', r'backbone.layers.\1.ln1.'),
    (r'^blocks\.(\d+)\.norm2\.', r'backbone.layers.\1.ln2.'),
    (r'^blocks\.(\d+)\.attn\.qkv\.', r'backbone.layers.\1.attn.qkv.'),
    (r'^blocks\.(\d+)\.attn\.proj\.', r'backbone.layers.\1.attn.proj.'),
    (r'^blocks\.(\d+)\.ls1\.gamma$', r'backbone.layers.\1.attn.gamma1.weight'),
    (r'^blocks\.(\d+)\.ls2\.gamma$', r'backbone.layers.\1.ffn.gamma2.weight'),
    (r'^blocks\.(\d+)\.mlp\.fc1\.', r'backbone.layers.\1.ffn.layers.0.0.'),
    (r'^blocks\.(\d+)\.mlp\.fc2\.', r'backbone.layers.\1.ffn.layers.1.'),
    (r'^head\.', 'head.layers.head.'),
    (r'^head_dist\.', 'head.layers.head_dist.'),
]

FORMATS: Dict[str, Rules] = {'torchvision': TORCHVISION, 'timm': TIMM}
# A key only one of the formats has.
SIGNATURES = {
    'torchvision': 'conv_proj.weight',
    'timm': 'patch_embed.proj.weight',
}


def detect_format(state: Dict[str, torch.Tensor]) -> str:
    """Name the source layout from its patch-embedding key.

    Args:
        state (dict): Source state dict.

    Returns:
        str: ``'torchvision'`` or ``'timm'``.
    """
    found = [name for name, key in SIGNATURES.items() if key in state]
    if len(found) != 1:
        raise ValueError(
            'Cannot tell the checkpoint layout: expected exactly one of '
            f'{sorted(SIGNATURES.values())} among its keys. Pass --format.'
        )
    return found[0]


def convert(
    state: Dict[str, torch.Tensor], fmt: str = 'auto', head: bool = True
) -> 'OrderedDict[str, torch.Tensor]':
    """Rename a torchvision / timm ViT state dict to mmpretrain's layout.

    Args:
        state (dict): Source state dict.
        fmt (str): ``'auto'``, ``'torchvision'`` or ``'timm'``.
            Defaults to ``'auto'``.
        head (bool): Keep the classifier. Defaults to True.

    Returns:
        OrderedDict: ``backbone.*`` (and ``head.layers.*``) weights.

    Raises:
        ValueError: For a key no rule of the format maps.
    """
    if fmt == 'auto':
        fmt = detect_format(state)
    if fmt not in FORMATS:
        raise ValueError(f'format must be auto or one of {sorted(FORMATS)}.')
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    unknown = []
    for key, value in state.items():
        for pattern, repl in FORMATS[fmt]:
            if re.search(pattern, key):
                new = re.sub(pattern, repl, key)
                break
        else:
            unknown.append(key)
            continue
        if head or not new.startswith('head.'):
            out[new] = value
    if unknown:
        raise ValueError(
            f'{len(unknown)} {fmt} keys have no mmpretrain counterpart: '
            f'{unknown[:8]}.'
        )
    return out


def load_source(path: str) -> Dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a weights-only torch file.

    Args:
        path (str): Source file.

    Returns:
        dict: The state dict.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'No checkpoint at {path}.')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file

        return load_file(path)
    state = load_checkpoint_file(path, map_location='cpu')
    for wrapper in ('state_dict', 'model'):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return state


def resize_for(state: Dict[str, torch.Tensor], img_size: int) -> None:
    """Resize ``backbone.pos_embed`` in ``state`` for ``img_size`` px
    inputs (torchvision's rule), in place."""
    patch = state['backbone.patch_embed.projection.weight'].shape[-1]
    if img_size % patch:
        raise ValueError(
            f'--img-size {img_size} is not a multiple of the patch size '
            f'{patch}.'
        )
    extra = 2 if 'backbone.dist_token' in state else 1
    state['backbone.pos_embed'] = interpolate_pos_embed(
        state['backbone.pos_embed'], img_size // patch, extra
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='torchvision or timm checkpoint')
    parser.add_argument('dst', help='output mmpretrain checkpoint')
    parser.add_argument(
        '--format', default='auto', choices=['auto', *sorted(FORMATS)]
    )
    parser.add_argument(
        '--no-head', action='store_true', help='drop the classifier'
    )
    parser.add_argument(
        '--img-size',
        type=int,
        help='resize the position embedding to this input size (torchvision)',
    )
    args = parser.parse_args()
    state = convert(load_source(args.src), args.format, not args.no_head)
    if args.img_size is not None:
        resize_for(state, args.img_size)
    torch.save(
        {'meta': {'converted_from': args.src}, 'state_dict': state}, args.dst
    )
    print(f'Wrote {len(state)} tensors to {args.dst}.')


if __name__ == '__main__':
    main()
