"""Detect an exemplar's class in target images with a trained IA-DETR.

    python demo/oneshot_demo.py TARGET [TARGET ...] --exemplar EXEMPLAR \
        [--exemplar-bbox X1 Y1 X2 Y2] CONFIG --weights CHECKPOINT \
        [--out-dir outputs] [--trust-checkpoint]

After ``make demo``, for example::

    python demo/oneshot_demo.py \
        data/synthetic_oneshot/images/val/000002.png \
        configs/ia_detr/synthetic_oneshot.py \
        --exemplar data/synthetic_oneshot/images/val/000013.png \
        --exemplar-bbox 9 34 47 72 --exemplar-name "green disk" \
        --weights work_dirs/demo/epoch_8.pth

``TARGET`` may be image files or a directory. Rendered images (the
exemplar inset top-left) go to ``OUT_DIR/vis/`` and predictions (JSON) to
``OUT_DIR/preds/``, as mmdet's ``demo/image_demo.py`` writes them.
"""

from argparse import ArgumentParser

from xattn_mm.det.apis import OneShotDetInferencer
from xattn_mm.engine.tool_utils import add_trust_arg


def parse_args():
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('inputs', nargs='+', help='Target image(s) or dir.')
    parser.add_argument('model', help='Config file.')
    parser.add_argument('--exemplar', required=True, help='Exemplar image.')
    parser.add_argument(
        '--exemplar-bbox',
        type=float,
        nargs=4,
        metavar=('X1', 'Y1', 'X2', 'Y2'),
        help='Box of the object in the exemplar image (default: all of it).',
    )
    parser.add_argument(
        '--exemplar-name',
        default='exemplar',
        help='Name drawn on the boxes.',
    )
    parser.add_argument('--weights', help='Checkpoint file.')
    add_trust_arg(parser, 'the --weights checkpoint')
    parser.add_argument('--out-dir', default='outputs', help='Output dir.')
    parser.add_argument('--device', default=None, help='e.g. cpu, cuda:0.')
    parser.add_argument(
        '--pred-score-thr', type=float, default=0.3, help='Drawing threshold.'
    )
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--show', action='store_true', help='Show a window.')
    parser.add_argument('--no-save-vis', action='store_true')
    parser.add_argument('--no-save-pred', action='store_true')
    parser.add_argument('--print-result', action='store_true')
    parser.add_argument('--palette', default='none', help='Box colour.')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    inputs = args.inputs if len(args.inputs) > 1 else args.inputs[0]
    inferencer = OneShotDetInferencer(
        model=args.model,
        weights=args.weights,
        device=args.device,
        palette=args.palette,
        trust_weights=args.trust_checkpoint,
    )
    inferencer(
        inputs,
        exemplar=args.exemplar,
        exemplar_bbox=args.exemplar_bbox,
        exemplar_name=args.exemplar_name,
        out_dir=args.out_dir,
        batch_size=args.batch_size,
        pred_score_thr=args.pred_score_thr,
        show=args.show,
        no_save_vis=args.no_save_vis,
        no_save_pred=args.no_save_pred,
        print_result=args.print_result,
    )
    if args.out_dir and not (args.no_save_vis and args.no_save_pred):
        print(f'results have been saved at {args.out_dir}')


if __name__ == '__main__':
    main()
