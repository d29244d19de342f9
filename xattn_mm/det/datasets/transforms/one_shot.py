"""Transforms for (target, exemplar) pairs."""

from typing import Optional, Tuple

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.datasets.transforms import PackDetInputs
from mmdet.registry import TRANSFORMS
from mmdet.structures.bbox import HorizontalBoxes


@TRANSFORMS.register_module()
class PackOneShotInputs(PackDetInputs):
    """Pack the target as :class:`~mmdet.datasets.transforms.PackDetInputs`
    does, and ``results['exemplar_img']`` (H, W, C) beside it.

    Returns ``inputs=dict(target=Tensor, exemplar=Tensor)`` (each (C, H, W))
    for :class:`OneShotDetDataPreprocessor`; other arguments as
    :class:`PackDetInputs`. The default ``meta_keys`` add the pair's
    ``exemplar_label``, ``exemplar_instance``, ``exemplar_img_path``,
    ``draw`` and ``swap_label`` (set by :class:`OneShotDataset`), and
    ``instances``, the target's ground truth in original image coordinates,
    which :class:`OneShotCocoMetric` evaluates against; missing keys are
    skipped.

    When ``results['exemplar_img']`` is a list of ``K`` images (the
    official IA-DETR protocol of :class:`OneShotDataset`), ``exemplar`` is
    one (K, C, h, w) tensor, each image top-left on a zero canvas of the
    largest height and width, and the metainfo gets ``exemplar_shapes``, the
    ``K`` (h, w). ``gt_instance_classes`` (stage 1's class of every target
    box, :class:`RandomPatchExemplar`) is packed as ``gt_instances.classes``.
    """

    mapping_table = dict(
        PackDetInputs.mapping_table, gt_instance_classes='classes'
    )

    def __init__(
        self,
        meta_keys: Tuple[str, ...] = (
            'img_id',
            'img_path',
            'ori_shape',
            'img_shape',
            'scale_factor',
            'flip',
            'flip_direction',
            'exemplar_label',
            'exemplar_instance',
            'exemplar_img_path',
            'draw',
            'swap_label',
            'instances',
        ),
    ) -> None:
        super().__init__(meta_keys=meta_keys)

    def transform(self, results: dict) -> dict:
        if 'exemplar_img' not in results:
            raise KeyError(
                'PackOneShotInputs needs results["exemplar_img"]; add an '
                'exemplar transform before it.'
            )
        packed = super().transform(results)
        exemplar_img = results['exemplar_img']
        if not isinstance(exemplar_img, (list, tuple)):
            exemplar = super().transform(dict(img=exemplar_img))['inputs']
        else:
            if not exemplar_img:
                raise ValueError('results["exemplar_img"] is an empty list.')
            images = []
            for img in exemplar_img:
                images.append(super().transform(dict(img=img))['inputs'])
            shapes = tuple(tuple(img.shape[-2:]) for img in images)
            exemplar = images[0].new_zeros(
                (
                    len(images),
                    images[0].shape[0],
                    max(h for h, _ in shapes),
                    max(w for _, w in shapes),
                )
            )
            for canvas, img in zip(exemplar, images):
                canvas[:, : img.shape[-2], : img.shape[-1]] = img
            packed['data_samples'].set_metainfo(dict(exemplar_shapes=shapes))
        packed['inputs'] = dict(target=packed['inputs'], exemplar=exemplar)
        return packed


@TRANSFORMS.register_module()
class CropExemplar(BaseTransform):
    """Crop ``results['img']`` to ``results['exemplar_bbox']`` (x1, y1, x2,
    y2 in pixels, clipped to the image; at least one pixel each way).

    Required keys: ``img``, ``exemplar_bbox``. Modified keys: ``img``,
    ``img_shape``.
    """

    def transform(self, results: dict) -> dict:
        img = results['img']
        h, w = img.shape[:2]
        x1, y1, x2, y2 = np.asarray(results['exemplar_bbox'], np.float64)
        x1 = int(np.clip(np.floor(x1), 0, w - 1))
        y1 = int(np.clip(np.floor(y1), 0, h - 1))
        x2 = int(np.clip(np.ceil(x2), x1 + 1, w))
        y2 = int(np.clip(np.ceil(y2), y1 + 1, h))
        results['img'] = img[y1:y2, x1:x2].copy()
        results['img_shape'] = results['img'].shape[:2]
        return results


@TRANSFORMS.register_module()
class RandomPatchExemplar(BaseTransform):
    """Stage-1 pretraining pairs (the official "upretrain", UP-DETR style):
    the exemplar is a random patch of the target image, and the patch's box
    is the target matching it (label 0).

    The patch width is drawn uniformly from ``[min_size, W - min_size]``
    (likewise the height) and placed uniformly inside the image, as the
    official code does. With ``base_boxes``, the image's loaded boxes (the
    seen-class objects :class:`OneShotDataset` keeps with
    ``train_targets='seen_classes'``) follow the patch as targets of label
    1, the base-object channel, and ``gt_instance_classes`` holds each
    target's class (-1 for the patch) for the contrastive loss: the
    official mapper (``PascalVOCPretrainDatasetMapperIX``, github
    Bissmella/IA-DETR 7b3245a) gives the patch its match label and every
    base box a generic object label, and keeps the true classes beside them.

    Required keys: ``img`` (and with ``base_boxes``: ``gt_bboxes``,
    ``gt_bboxes_labels``, ``gt_ignore_flags``). Modified keys:
    ``gt_bboxes``, ``gt_bboxes_labels``, ``gt_ignore_flags``. Added keys:
    ``exemplar_img``, with ``base_boxes`` ``gt_instance_classes``.

    Args:
        min_size (int): Smallest patch side and margin, in pixels.
            Defaults to 8.
        exemplar_size (tuple[int, int], optional): Resize the exemplar to
            this (w, h). Defaults to None (keep the crop's size).
        base_boxes (bool): Keep the loaded boxes as base-object targets.
            Defaults to False (the patch is the only target).
    """

    def __init__(
        self,
        min_size: int = 8,
        exemplar_size: Optional[Tuple[int, int]] = None,
        base_boxes: bool = False,
    ) -> None:
        if min_size < 1:
            raise ValueError(f'min_size must be >= 1, got {min_size}.')
        self.min_size = min_size
        self.exemplar_size = exemplar_size
        self.base_boxes = base_boxes

    def transform(self, results: dict) -> dict:
        img = results['img']
        h, w = img.shape[:2]
        lo = self.min_size
        if min(h, w) < 2 * lo:
            raise ValueError(
                f'image {results.get("img_path", "")} of size {w}x{h} is '
                f'smaller than 2 * min_size ({2 * lo}).'
            )
        pw = np.random.randint(lo, w - lo + 1)
        ph = np.random.randint(lo, h - lo + 1)
        x = np.random.randint(0, w - pw + 1)
        y = np.random.randint(0, h - ph + 1)
        exemplar = img[y : y + ph, x : x + pw].copy()
        if self.exemplar_size is not None:
            exemplar = mmcv.imresize(exemplar, self.exemplar_size)
        results['exemplar_img'] = exemplar
        boxes = np.array([[x, y, x + pw, y + ph]], dtype=np.float32)
        labels = np.zeros(1, dtype=np.int64)
        ignore = np.zeros(1, dtype=bool)
        if self.base_boxes:
            if 'gt_bboxes' not in results:
                raise KeyError(
                    'RandomPatchExemplar(base_boxes=True) needs the loaded '
                    'boxes: put LoadAnnotations(with_bbox=True) before it.'
                )
            base = results['gt_bboxes'].numpy().astype(np.float32)
            classes = results['gt_bboxes_labels'].astype(np.int64)
            boxes = np.concatenate([boxes, base.reshape(-1, 4)])
            labels = np.concatenate([labels, np.ones_like(classes)])
            ignore = np.concatenate([ignore, results['gt_ignore_flags']])
            results['gt_instance_classes'] = np.concatenate([[-1], classes])
        results['gt_bboxes'] = HorizontalBoxes(boxes)
        results['gt_bboxes_labels'] = labels
        results['gt_ignore_flags'] = ignore
        return results

    def __repr__(self) -> str:
        return (
            f'{self.__class__.__name__}(min_size={self.min_size}, '
            f'exemplar_size={self.exemplar_size}, '
            f'base_boxes={self.base_boxes})'
        )
