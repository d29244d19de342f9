"""Convert an official IA-DETR checkpoint (github Bissmella/IA-DETR) to
xattn_mm's IADETR layout.

    python tools/model_converters/ia_detr_to_xattn_mm.py SRC DST
        [--trust-checkpoint]

Mapped: the input projection (to a ChannelMapper neck built with
``bias=True``), queries, level embedding, proposal layers, every decoder
layer (BoxRPB MLPs, indirect attention, the packed self-attention split into
q/k/v, FFN, norms) and the heads. The official class logit has 3 channels
(proposals on channel 0, "matches the exemplar" on channel 1); xattn_mm has
one, so decoder branches take row 1 and the proposal branch row 0. The
official proposal position embedding is ordered (x, y, w, h); mmdet's is
(y, x, w, h), so the input columns of ``pos_trans`` are permuted.

Backbones:

- Swin V2 (``backbone.0.net.body.*`` with ``backbone.0.upsample.*``, or
  ``backbone.0.body.*``) maps to mmpretrain's ``SwinTransformerV2`` layout,
  as built by ``mmpretrain.GlobalSwinTransformerV2`` (the ``*_2global``
  variants). Patch-merging weights are reordered from the official
  concatenation order to ``nn.Unfold``'s; the relative-position buffers
  are dropped (they are recomputed). The upsampling ConvTranspose goes to
  ``neck.necks.0`` (a ``TransposedConvUpsample`` in a ``SequentialNeck``)
  and the input projection to ``neck.necks.1``.
- ResNet (``backbone.0.body.*``, torchvision names) maps to mmdet's
  ``ResNet`` (the same names); its unused ``fc`` is dropped.

Keys the converter does not know are kept under their official names and
reported, so a strict load points at them.
"""

import argparse
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch

from xattn_mm.engine import load_checkpoint_file, trust_checkpoint
from xattn_mm.engine.tool_utils import add_trust_arg

# (official pattern, xattn_mm replacement); first match wins.
RENAMES: List[Tuple[str, str]] = [
    (r'^input_proj\.0\.0\.', 'neck.convs.0.conv.'),
    (r'^input_proj\.0\.1\.', 'neck.convs.0.gn.'),
    (r'^query_embed\.', 'query_embedding.'),
    (r'^transformer\.level_embed$', 'level_embed'),
    (r'^transformer\.enc_output\.', 'memory_trans_fc.'),
    (r'^transformer\.enc_output_norm\.', 'memory_trans_norm.'),
    (r'^transformer\.pos_trans\.', 'pos_trans_fc.'),
    (r'^transformer\.pos_trans_norm\.', 'pos_trans_norm.'),
    (
        r'^transformer\.enc_output_proj\.(\d+)\.(\d+)\.ln\.',
        r'proposal_projs.\1.\2.',
    ),
    (r'^transformer\.enc_output_proj\.', 'proposal_projs.'),
    (r'^transformer\.decoder\.final_layer_norm\.', 'decoder.post_norm.'),
    (r'\.cross_attn\.cpb_mlp1\.', '.cross_attn.box_rpb.x_mlp.'),
    (r'\.cross_attn\.cpb_mlp2\.', '.cross_attn.box_rpb.y_mlp.'),
    (r'\.cross_attn\.q\.', '.cross_attn.attn.q_proj.'),
    (r'\.cross_attn\.k\.', '.cross_attn.attn.k_proj.'),
    (r'\.cross_attn\.v\.', '.cross_attn.attn.v_proj.'),
    (r'\.cross_attn\.proj\.', '.cross_attn.attn.out_proj.'),
    (r'\.norm2\.', '.norms.0.'),
    (r'\.norm1\.', '.norms.1.'),
    (r'\.norm3\.', '.norms.2.'),
    (r'\.linear1\.', '.ffn.layers.0.0.'),
    (r'\.linear2\.', '.ffn.layers.1.'),
]
# The official decoder holds aliases of the heads; Swin's relative-position
# tables are buffers recomputed from the window size; ResNet's classifier is
# unused: dropped.
DROPPED = (
    r'^transformer\.decoder\.(bbox_embed|class_embed)\.',
    r'^backbone\.0\..*\.(relative_coords_table|relative_position_index)$',
    r'^backbone\.0\.(net\.)?body\.fc\.',
)
# Official Swin V2 (after the body prefix) -> mmpretrain SwinTransformerV2.
SWIN_RENAMES: List[Tuple[str, str]] = [
    (r'^patch_embed\.proj\.', 'patch_embed.projection.'),
    (
        r'^layers\.(\d+)\.blocks\.(\d+)\.attn\.',
        r'stages.\1.blocks.\2.attn.w_msa.',
    ),
    (
        r'^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.',
        r'stages.\1.blocks.\2.ffn.layers.0.0.',
    ),
    (
        r'^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.',
        r'stages.\1.blocks.\2.ffn.layers.1.',
    ),
    (r'^layers\.(\d+)\.blocks\.', r'stages.\1.blocks.'),
]


def _rename(key: str) -> str:
    key = re.sub(r'^transformer\.decoder\.layers\.', 'decoder.layers.', key)
    for pattern, repl in RENAMES:
        new = re.sub(pattern, repl, key)
        if new != key:
            key = new
            if pattern.startswith('^'):
                break
    return key


def unfold_order(weight: torch.Tensor) -> torch.Tensor:
    """Reorder a patch-merging ``reduction`` weight's input columns from
    the official concatenation of the 2x2 neighbours, offsets (row, col)
    (0, 0), (1, 0), (0, 1), (1, 1), each a block of C channels, to
    ``nn.Unfold``'s order: channel-major, then row, then column."""
    out_dims, in_dims = weight.shape
    blocks = weight.view(out_dims, 4, in_dims // 4)
    # Unfold position p = 2 * row + col holds official block [0, 2, 1, 3][p].
    return blocks[:, [0, 2, 1, 3]].transpose(1, 2).reshape(out_dims, in_dims)


def _convert_swin_v2(
    key: str, value: torch.Tensor
) -> Tuple[str, torch.Tensor]:
    """One official Swin V2 key (body prefix removed) in mmpretrain's
    layout; unknown keys come back unchanged."""
    match = re.match(r'^layers\.(\d+)\.downsample\.(.+)$', key)
    if match:
        # Official stages end with their downsampling, mmpretrain's begin
        # with it.
        stage, name = int(match.group(1)), match.group(2)
        if name == 'reduction.weight':
            value = unfold_order(value)
        return f'stages.{stage + 1}.downsample.{name}', value
    for pattern, repl in SWIN_RENAMES:
        new = re.sub(pattern, repl, key)
        if new != key:
            return new, value
    return key, value


def _backbone_keys(
    state_dict: Dict[str, torch.Tensor],
) -> Tuple[OrderedDict, List[str], bool]:
    """The backbone and upsampling tensors in xattn_mm's layout, the
    official names kept unchanged, and whether there is an upsampling neck."""
    out: OrderedDict = OrderedDict()
    kept = []
    upsample = any(k.startswith('backbone.0.upsample.') for k in state_dict)
    is_swin = any(
        k.startswith('backbone.') and '.blocks.' in k for k in state_dict
    )
    for key, value in state_dict.items():
        if not key.startswith('backbone.') or any(
            re.match(p, key) for p in DROPPED
        ):
            continue
        match = re.match(r'^backbone\.0\.(?:net\.)?body\.(.+)$', key)
        if match and is_swin:
            name, value = _convert_swin_v2(match.group(1), value)
            if name.startswith(('patch_embed.', 'stages.', 'norm')):
                out['backbone.' + name] = value
                continue
        elif match:
            out['backbone.' + match.group(1)] = value  # ResNet: same names
            continue
        match = re.match(r'^backbone\.0\.upsample\.(\d+)\.(?:ln\.)?(.+)$', key)
        if match:
            out[f'neck.necks.0.layers.{match.group(1)}.{match.group(2)}'] = (
                value
            )
            continue
        out[key] = value
        kept.append(key)
    return out, kept, upsample


def convert(
    state_dict: Dict[str, torch.Tensor], num_decoder_layers: int = 6
) -> Tuple[OrderedDict, List[str]]:
    """Convert an official IA-DETR ``model`` state dict.

    Args:
        state_dict (dict[str, Tensor]): The official ``checkpoint['model']``.
        num_decoder_layers (int): Decoder layers; the head branch with this
            index is the proposal branch. Defaults to 6.

    Returns:
        tuple[OrderedDict, list[str]]: The xattn_mm state dict and the
        official keys the converter does not know, kept unchanged.
    """
    out, passed, upsample = _backbone_keys(state_dict)
    neck = 'neck.necks.1.' if upsample else 'neck.'
    for key, value in state_dict.items():
        if key.startswith('backbone.') or any(
            re.match(p, key) for p in DROPPED
        ):
            continue
        match = re.match(r'^class_embed\.(\d+)\.(weight|bias)$', key)
        if match:
            index = int(match.group(1))
            row = 0 if index == num_decoder_layers else 1
            out[f'bbox_head.cls_branches.{index}.{match.group(2)}'] = value[
                row : row + 1
            ].clone()
            continue
        match = re.match(r'^bbox_embed\.(\d+)\.layers\.(\d)\.(.+)$', key)
        if match:
            index, layer, name = match.groups()
            out[f'bbox_head.reg_branches.{index}.{2 * int(layer)}.{name}'] = (
                value
            )
            continue
        match = re.match(r'^(.*\.self_attn)\.in_proj_(weight|bias)$', key)
        if match:
            prefix = _rename(match.group(1))
            for name, part in zip(
                ('q_proj', 'k_proj', 'v_proj'), value.chunk(3)
            ):
                out[f'{prefix}.{name}.{match.group(2)}'] = part.clone()
            continue
        new_key = _rename(key)
        if new_key.startswith('neck.'):
            new_key = neck + new_key[len('neck.') :]
        if new_key == 'pos_trans_fc.weight':
            # Input blocks (x, y, w, h) -> mmdet's (y, x, w, h).
            x, y, w, h = value.chunk(4, dim=1)
            value = torch.cat([y, x, w, h], dim=1)
        out[new_key] = value
    return out, passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='official IA-DETR checkpoint')
    parser.add_argument('dst', help='output path')
    parser.add_argument('--num-decoder-layers', type=int, default=6)
    add_trust_arg(parser, 'SRC')
    args = parser.parse_args()
    if args.trust_checkpoint:
        trust_checkpoint(args.src)
    # Official checkpoints keep their argparse arguments beside the weights.
    with torch.serialization.safe_globals([argparse.Namespace]):
        checkpoint = load_checkpoint_file(args.src, map_location='cpu')
    state_dict = checkpoint.get('model', checkpoint)
    converted, passed = convert(state_dict, args.num_decoder_layers)
    torch.save(
        {'state_dict': converted, 'meta': {'converted_from': args.src}},
        args.dst,
    )
    print(
        f'wrote {len(converted)} tensors to {args.dst}; {len(passed)} '
        f'tensors kept under their official names: {passed}'
    )


if __name__ == '__main__':
    main()
