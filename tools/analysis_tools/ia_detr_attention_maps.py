"""Draw IA-DETR's indirect-attention maps for a (target, exemplar) pair.

    python tools/analysis_tools/ia_detr_attention_maps.py CONFIG CHECKPOINT \\
        TARGET --exemplar EXEMPLAR [--exemplar-bbox X1 Y1 X2 Y2] \\
        [--topk 3] [--out-dir work_dirs/attention_maps] [--trust-checkpoint]

For the ``--topk`` best-scoring queries, every decoder layer's attention
over the target grid, per head (``layer{i}.png``: one row per query, one
column per head, the query's reference box in white), and the split of each
head's logits between the content term (query · exemplar key) and the
BoxRPB prior, as the share of logit variance over the attended cells
(``logit_variance_share.png`` and ``attention_maps.json``). A head with a
content share near 1 follows the exemplar alignment; near 0, the box prior.
"""

import argparse
import json
import os
import os.path as osp

import numpy as np
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from mmengine.dataset import pseudo_collate

from xattn_mm.det.apis import OneShotDetInferencer
from xattn_mm.det.visualization import (
    IndirectAttentionMaps,
    collect_attention_maps,
)
from xattn_mm.engine.tool_utils import add_trust_arg


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('target', help='target image')
    parser.add_argument('--exemplar', required=True, help='exemplar image')
    parser.add_argument(
        '--exemplar-bbox',
        type=float,
        nargs=4,
        metavar=('X1', 'Y1', 'X2', 'Y2'),
        help='object box in the exemplar image (default: all of it)',
    )
    parser.add_argument('--topk', type=int, default=3, help='queries shown')
    parser.add_argument('--out-dir', default='work_dirs/attention_maps')
    parser.add_argument('--device', default='cpu')
    add_trust_arg(parser, 'CHECKPOINT')
    return parser.parse_args(argv)


def draw_layer(maps: IndirectAttentionMaps, layer: int, out_file: str):
    """One layer's maps: rows = queries, columns = heads, over the target."""
    weights = maps.weights[layer]  # (heads, topk, H, W)
    heads, topk = weights.shape[:2]
    canvas_h, canvas_w = maps.image.shape[:2]
    up = F.interpolate(
        weights.flatten(0, 1)[:, None],
        size=(canvas_h, canvas_w),
        mode='nearest',
    )[:, 0].unflatten(0, (heads, topk))
    fig = Figure(figsize=(2.2 * heads, 2.2 * topk))
    FigureCanvasAgg(fig)
    axes = fig.subplots(topk, heads, squeeze=False)
    for q in range(topk):
        cx, cy, w, h = maps.boxes[layer, q].tolist()
        for head in range(heads):
            ax = axes[q, head]
            ax.imshow(maps.image)
            ax.imshow(up[head, q].numpy(), cmap='jet', alpha=0.55)
            if not np.isnan(cx):
                ax.add_patch(
                    Rectangle(
                        ((cx - w / 2) * canvas_w, (cy - h / 2) * canvas_h),
                        w * canvas_w,
                        h * canvas_h,
                        fill=False,
                        edgecolor='white',
                        linewidth=1.2,
                    )
                )
            title = (
                f'q{maps.query_indices[q].item()} '
                f's={maps.scores[q].item():.2f} h{head}'
            )
            if q == 0:  # the share is per head, over the top queries
                share = maps.content_share[layer, head].item()
                title = f'head {head}: c={share:.2f}\n' + title
            ax.set_title(title, fontsize=7)
            ax.axis('off')
    fig.suptitle(
        f'layer {layer}: indirect attention (c = var(content) / (var(content)'
        ' + var(BoxRPB)), mean over the top queries)',
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)


def draw_shares(maps: IndirectAttentionMaps, out_file: str) -> None:
    """Per layer and head, the content vs BoxRPB share of logit variance."""
    share = maps.content_share.numpy()  # (layers, heads)
    layers, heads = share.shape
    fig = Figure(figsize=(max(4, 0.5 * layers * heads), 3))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = np.arange(layers * heads)
    flat = share.reshape(-1)
    ax.bar(x, flat, color='tab:blue', label='content (exemplar keys)')
    ax.bar(x, 1 - flat, bottom=flat, color='tab:orange', label='BoxRPB')
    ax.set_xticks(
        x, [f'L{i}h{j}' for i in range(layers) for j in range(heads)]
    )
    ax.tick_params(axis='x', labelsize=6, rotation=90)
    ax.set_ylim(0, 1)
    ax.set_ylabel('share of logit variance')
    ax.legend(fontsize=7, loc='upper right')
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)


def main(argv=None) -> None:
    args = parse_args(argv)
    inferencer = OneShotDetInferencer(
        args.config,
        weights=args.checkpoint,
        device=args.device,
        show_progress=False,
        trust_weights=args.trust_checkpoint,
    )
    exemplar, _ = inferencer.prepare_exemplar(
        args.exemplar, args.exemplar_bbox
    )
    pair = inferencer.pipeline(
        dict(img_path=args.target, exemplar_img=exemplar)
    )
    (maps,) = collect_attention_maps(
        inferencer.model, pseudo_collate([pair]), topk=args.topk
    )
    os.makedirs(args.out_dir, exist_ok=True)
    files = []
    for layer in range(maps.weights.shape[0]):
        files.append(osp.join(args.out_dir, f'layer{layer}.png'))
        draw_layer(maps, layer, files[-1])
    files.append(osp.join(args.out_dir, 'logit_variance_share.png'))
    draw_shares(maps, files[-1])
    summary = dict(
        queries=maps.query_indices.tolist(),
        scores=maps.scores.tolist(),
        content_share=maps.content_share.tolist(),
        weights_shape=list(maps.weights.shape),
    )
    files.append(osp.join(args.out_dir, 'attention_maps.json'))
    with open(files[-1], 'w') as f:
        json.dump(summary, f, indent=1)
    print('content share of the logit variance (rows: layers, cols: heads)')
    for layer, row in enumerate(summary['content_share']):
        print(f'layer {layer}: ' + ' '.join(f'{v:.2f}' for v in row))
    for name in files:
        print(f'saved {name}')


if __name__ == '__main__':
    main()
