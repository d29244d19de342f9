"""Tiny IA-DETR configs (the shipped ones, shrunk) and (target, exemplar)
batches for tests."""

from pathlib import Path
from typing import List, Sequence, Tuple

import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

import xattn_mm

from .configs import shrink


def shipped_config(rel: str) -> Config:
    """A config the project ships, by its path under ``configs/``: the
    installed package's copy (``xattn_mm/.mim/configs``), else the source
    tree's.

    Args:
        rel (str): e.g. ``'_base_/models/ia_detr_r50.py'``.

    Returns:
        Config: The parsed config.
    """
    package = Path(xattn_mm.__file__).resolve().parent
    for root in (package / '.mim' / 'configs', package.parent / 'configs'):
        if (root / rel).is_file():
            return Config.fromfile(str(root / rel))
    raise FileNotFoundError(
        f'{rel} is in neither {package / ".mim" / "configs"} nor '
        f'{package.parent / "configs"}.'
    )


def tiny_ia_detr_cfg(
    decoder_type: str = 'IADETRDecoder', num_layers: int = 2, **kwargs
) -> dict:
    """The shipped ResNet IA-DETR model (``_base_/models/ia_detr_r50.py``)
    shrunk for CPU tests (:func:`xattn_mm.testing.configs.shrink`: ResNet-18
    with 16 base channels cut at stride 16, 32 channels, 10 + 20 queries).

    Args:
        decoder_type (str): Registered decoder type. Defaults to
            'IADETRDecoder'.
        num_layers (int): Decoder layers. Defaults to 2.
        **kwargs: Overrides of the detector's top-level keys.

    Returns:
        dict: The model config.
    """
    model = shrink(shipped_config('_base_/models/ia_detr_r50.py').model)
    model = model.to_dict()
    model['decoder'].update(type=decoder_type, num_layers=num_layers)
    if decoder_type == 'DoubleCrossAttentionDecoder':
        model['decoder']['num_align_layers'] = 1
    model.update(kwargs)
    return model


def tiny_swin_v2_parts() -> dict:
    """``backbone``, ``neck`` and ``data_preprocessor`` of the shipped Swin
    V2 model (``_base_/models/ia_detr_swinv2-s.py``: mmpretrain's Swin V2
    with a global last stage, its stride-32 output upsampled to stride 16,
    the 1x1 conv + GroupNorm input projection, the canvas padded to 32)
    shrunk as :func:`tiny_ia_detr_cfg` is: 16 stem channels, 4 x 4 windows.

    Returns:
        dict: Overrides for :func:`tiny_ia_detr_cfg`.
    """
    model = shrink(shipped_config('_base_/models/ia_detr_swinv2-s.py').model)
    return {
        key: model[key].to_dict()
        for key in ('backbone', 'neck', 'data_preprocessor')
    }


def one_shot_batch(
    sizes: Sequence[Tuple[int, int]] = ((64, 80), (48, 64)),
    exemplar_sizes: Sequence[Tuple[int, int]] = ((32, 32), (40, 24)),
    num_boxes: Sequence[int] = (2, 0),
    seed: int = 0,
    stage1: bool = False,
) -> dict:
    """A collated batch of (target, exemplar) pairs with random images and
    ground-truth boxes (label 0), as a dataloader would give it.

    Args:
        sizes (Sequence[tuple]): (h, w) of each target.
        exemplar_sizes (Sequence[tuple]): (h, w) of each exemplar.
        num_boxes (Sequence[int]): Ground-truth boxes per target.
        seed (int): Random seed.
        stage1 (bool): Stage-1 targets (:class:`RandomPatchExemplar` with
            ``base_boxes``): the first box of a target is the patch (label
            0, class -1), the others base-class boxes (label 1, class
            ``j % 3``), in ``gt_instances.classes``. Defaults to False.

    Returns:
        dict: ``inputs=dict(target=[...], exemplar=[...])`` and
        ``data_samples``.
    """
    g = torch.Generator().manual_seed(seed)
    targets: List[torch.Tensor] = []
    exemplars: List[torch.Tensor] = []
    samples: List[DetDataSample] = []
    for (h, w), (eh, ew), n in zip(sizes, exemplar_sizes, num_boxes):
        targets.append(
            torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        )
        exemplars.append(
            torch.randint(0, 256, (3, eh, ew), generator=g, dtype=torch.uint8)
        )
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 0.5
        wh = (torch.rand(n, 2, generator=g) * 0.4 + 0.1) * torch.tensor([w, h])
        sample = DetDataSample(
            metainfo=dict(
                img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0)
            )
        )
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], -1),
            labels=torch.zeros(n, dtype=torch.long),
        )
        if stage1:
            gt = sample.gt_instances
            gt.labels = (torch.arange(n) > 0).long()
            gt.classes = torch.where(gt.labels > 0, torch.arange(n) % 3, -1)
        samples.append(sample)
    return dict(
        inputs=dict(target=targets, exemplar=exemplars), data_samples=samples
    )
