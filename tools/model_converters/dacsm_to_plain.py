"""Export a DACSM training checkpoint for inference with the plain ViT.

    python tools/model_converters/dacsm_to_plain.py SRC DST
        [--trust-checkpoint]

A DACSM model is a DAT backbone (a ViT whose target branch is the host
forward) and a CSM head. Its only training-time parameters are the cosine
cross-attention temperatures (``backbone.cross_logit_scale``, present with
``cosine_attention=True``); exporting drops them and the training state
(optimizer, schedulers, message hub). DST loads with no missing or
unexpected keys into an ``ImageClassifier`` with the same ``VisionTransformer``
arch and ``CSMHead``, and predicts as the DACSM model does.
"""

import argparse
from collections import OrderedDict
from typing import Dict

import torch

from xattn_mm.engine import export_checkpoint
from xattn_mm.engine.tool_utils import add_trust_arg

TRAINING_ONLY = ('backbone.cross_logit_scale',)


def export_state_dict(
    state: Dict[str, torch.Tensor],
) -> 'OrderedDict[str, torch.Tensor]':
    """Drop the training-only entries of a DACSM state dict.

    Args:
        state (dict): A DACSM (UDAClassifier) model state dict.

    Returns:
        OrderedDict: The other tensors, unchanged.

    Raises:
        ValueError: If the state dict has no CSM head (``head.fc.weight``).
    """
    if 'head.fc.weight' not in state:
        raise ValueError(
            'No head.fc.weight: this is not a checkpoint of a DACSM model '
            '(UDAClassifier with a CSMHead).'
        )
    return OrderedDict(
        (k, v) for k, v in state.items() if k not in TRAINING_ONLY
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='DACSM training checkpoint')
    parser.add_argument('dst', help='output checkpoint')
    add_trust_arg(parser, 'SRC')
    args = parser.parse_args()
    export_checkpoint(
        args.src, args.dst, args.trust_checkpoint, export_state_dict
    )
    print(f'Wrote the inference checkpoint {args.dst}.')


if __name__ == '__main__':
    main()
