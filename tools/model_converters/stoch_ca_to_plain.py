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
from collections import OrderedDict
from typing import Dict

import torch

from xattn_mm.engine import export_checkpoint
from xattn_mm.engine.tool_utils import add_trust_arg

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
    add_trust_arg(parser, 'SRC')
    args = parser.parse_args()
    export_checkpoint(
        args.src, args.dst, args.trust_checkpoint, export_state_dict
    )
    print(f'Wrote the teacher-free checkpoint {args.dst}.')


if __name__ == '__main__':
    main()
