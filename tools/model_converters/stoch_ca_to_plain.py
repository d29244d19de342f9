"""Export a StochCA training checkpoint for inference with the plain
backbone.

    python tools/model_converters/stoch_ca_to_plain.py SRC DST
        [--trust-checkpoint]

The StochCA wrapper keeps its student under ``backbone.backbone.`` and
never saves the teacher, so exporting renames the student to ``backbone.``
and drops the training state (optimizer, schedulers, message hub). DST loads
with no missing or unexpected keys into the model of the same config with
the wrapper removed (the ``*_baseline`` twin of every StochCA config), e.g.
``tools/test.py <baseline config> DST``.
"""

import argparse
import pickle
from collections import OrderedDict
from typing import Dict

import torch

WRAPPED = 'backbone.backbone.'


def export_state_dict(
    state: Dict[str, torch.Tensor],
) -> 'OrderedDict[str, torch.Tensor]':
    """Rename the wrapped student to the plain backbone's keys.

    Args:
        state (dict): A StochCA model state dict.

    Returns:
        OrderedDict: The same tensors, ``backbone.backbone.*`` renamed to
        ``backbone.*``; every other key (head, neck) unchanged.

    Raises:
        ValueError: If no key is under ``backbone.backbone.``.
    """
    if not any(k.startswith(WRAPPED) for k in state):
        raise ValueError(
            f'No key starts with {WRAPPED!r}: this is not a checkpoint of a '
            'model with a StochCA backbone.'
        )
    return OrderedDict(
        (
            'backbone.' + k[len(WRAPPED) :] if k.startswith(WRAPPED) else k,
            v,
        )
        for k, v in state.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='StochCA training checkpoint')
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='unpickle the whole file (mmengine training checkpoints store '
        'the message hub beside the weights); only for files you trust',
    )
    args = parser.parse_args()
    try:
        checkpoint = torch.load(
            args.src,
            map_location='cpu',
            weights_only=not args.trust_checkpoint,
        )
    except pickle.UnpicklingError as e:
        raise SystemExit(
            f'{args.src} holds more than weights ({e}). If you trust it, '
            'rerun with --trust-checkpoint.'
        ) from None
    state = checkpoint.get('state_dict', checkpoint)
    meta = dict(checkpoint.get('meta') or {}, exported_from=args.src)
    torch.save(
        {'meta': meta, 'state_dict': export_state_dict(state)}, args.dst
    )
    print(f'Wrote the teacher-free checkpoint {args.dst}.')


if __name__ == '__main__':
    main()
