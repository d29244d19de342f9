"""Generate the embedded one-shot detection dataset (COCO format).

    python tools/data/generate_synthetic_oneshot.py data/synthetic_oneshot

See ``xattn_mm.det.datasets.synthetic_oneshot`` for what it contains.
"""

import argparse
import os.path as osp
import sys

from xattn_mm.det.datasets.synthetic_oneshot import generate_synthetic_oneshot


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir', help='output directory')
    parser.add_argument('--num-train', type=int, default=1200)
    parser.add_argument('--num-val', type=int, default=240)
    parser.add_argument('--image-size', type=int, default=128)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--force',
        action='store_true',
        help='regenerate even if the annotation files exist',
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    anns = [
        osp.join(args.out_dir, 'annotations', f'instances_{s}.json')
        for s in ('train', 'val')
    ]
    if all(osp.isfile(a) for a in anns) and not args.force:
        print(f'{args.out_dir} exists; pass --force to regenerate.')
        return 0
    files = generate_synthetic_oneshot(
        args.out_dir,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        seed=args.seed,
    )
    for split, path in files.items():
        print(f'{split}: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
