"""One-shot detection inference: find an exemplar's class in target images."""

import copy
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
from mmcv.transforms import Compose
from mmdet.apis import DetInferencer
from mmdet.structures import DetDataSample
from mmengine.config import ConfigDict
from mmengine.runner.checkpoint import _load_checkpoint_to_model
from torch import nn

from xattn_mm.engine import (
    apply_pipeline,
    checkpoint_policy,
    trust_checkpoint,
)

from ..visualization import OneShotDetLocalVisualizer

ImageType = Union[str, np.ndarray]

# The one class a one-shot detector predicts, drawn in crimson.
_DEFAULT_PALETTE = [(220, 20, 60)]


def _replace_loader(pipeline: List[dict], which: str) -> List[dict]:
    """``pipeline`` with its ``LoadImageFromFile`` replaced by mmdet's
    ``InferencerLoader`` (paths and arrays) and annotation loading removed.
    """
    pipeline = [
        copy.deepcopy(t)
        for t in pipeline
        if t['type'] not in ('LoadAnnotations', 'mmdet.LoadAnnotations')
    ]
    for t in pipeline:
        if t['type'] in ('LoadImageFromFile', 'mmdet.LoadImageFromFile'):
            t['type'] = 'mmdet.InferencerLoader'
            return pipeline
    raise ValueError(
        f"LoadImageFromFile is not found in the config's {which}."
    )


def _check_box_overlaps(box: np.ndarray, results: dict, exemplar) -> None:
    """Refuse an exemplar box that lies outside its image (the crop would
    silently shrink to a 1 x 1 patch)."""
    height, width = results['img'].shape[:2]
    x1, y1, x2, y2 = box
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        name = exemplar if isinstance(exemplar, str) else 'the exemplar array'
        raise ValueError(
            f'exemplar_bbox {tuple(box.tolist())} lies outside {name} '
            f'({width} x {height} pixels); expected (x1, y1, x2, y2) in its '
            'pixels, overlapping the image.'
        )


class OneShotDetInferencer(DetInferencer):
    """Detect every instance of an exemplar's class in target images.

    mmdet's :class:`~mmdet.apis.DetInferencer` conventions (a config path or
    name, ``weights``, ``device``; calling it returns ``dict(predictions,
    visualization)``, saves ``vis/`` images and ``preds/`` JSON under
    ``out_dir``), with one exemplar per call::

        inferencer = OneShotDetInferencer(
            'configs/ia_detr/synthetic_oneshot.py',
            weights='work_dirs/demo/epoch_8.pth', trust_weights=True)
        result = inferencer(
            'target.jpg', exemplar='exemplar.jpg',
            exemplar_bbox=(12, 30, 80, 96), out_dir='outputs')

    The exemplar (a path or a BGR array, cropped to ``exemplar_bbox`` when
    given) goes through the config's ``test_dataloader.dataset.
    exemplar_pipeline`` and each target through its ``pipeline`` (ground
    truth loading dropped), exactly as in ``tools/test.py``; the rendered
    images come from :class:`OneShotDetLocalVisualizer`, with the exemplar
    inset. Predictions have label 0, "the exemplar's class", named
    ``exemplar_name`` in the drawings.

    Args:
        model (str or dict, optional): A config path or config; see
            :class:`DetInferencer`. Defaults to None (the config stored in
            ``weights``).
        weights (str, optional): Checkpoint path. Defaults to None (random
            weights, with a warning).
        device (str, optional): Device. Defaults to None (CUDA if
            available).
        scope (str): Registry scope. Defaults to 'mmdet'.
        palette (str or list, optional): Box colour(s). Defaults to 'none'
            (crimson).
        show_progress (bool): Show a progress bar. Defaults to True.
        trust_weights (bool): Unpickle ``weights`` in full, beyond the
            checkpoint policy's allow-list of OpenMMLab checkpoint types
            (training checkpoints of this project load without it); only
            for files you trust. The file stays trusted for the rest of the
            process (:func:`xattn_mm.engine.trust_checkpoint`). Defaults to
            False. ``weights`` loads under the policy from any scheme
            (local, http(s), ``open-mmlab://`` ...).
    """

    visualize_kwargs: set = DetInferencer.visualize_kwargs | {'exemplar_name'}

    def __init__(
        self,
        model: Optional[Union[str, dict]] = None,
        weights: Optional[str] = None,
        device: Optional[str] = None,
        scope: str = 'mmdet',
        palette: Union[str, list] = 'none',
        show_progress: bool = True,
        trust_weights: bool = False,
    ) -> None:
        if trust_weights and weights is not None:
            trust_checkpoint(weights)
        self._exemplar: Optional[np.ndarray] = None
        self._inset: Optional[np.ndarray] = None
        with checkpoint_policy():  # mmengine's loader, for this call only
            super().__init__(
                model=model,
                weights=weights,
                device=device,
                scope=scope,
                palette=palette,
                show_progress=show_progress,
            )

    def _load_weights_to_model(
        self,
        model: nn.Module,
        checkpoint: Optional[dict],
        cfg: Optional[ConfigDict],
    ) -> None:
        """Load the weights; unlike :class:`DetInferencer`, never build the
        test dataset (a one-shot model has a single class, the exemplar's),
        so inference needs no dataset on disk."""
        if checkpoint is not None:
            _load_checkpoint_to_model(model, checkpoint)
        else:
            warnings.warn(
                'No weights given: the predictions come from a randomly '
                'initialised model.',
                stacklevel=2,
            )
        meta = {} if checkpoint is None else checkpoint.get('meta', {})
        model.dataset_meta = dict(meta.get('dataset_meta', {}))

    def _init_pipeline(self, cfg: ConfigDict) -> Compose:
        """The target pipeline; the exemplar pipeline is kept beside it."""
        dataset = cfg.test_dataloader.dataset
        for key in ('pipeline', 'exemplar_pipeline'):
            if key not in dataset:
                raise KeyError(
                    f'test_dataloader.dataset has no {key!r}: '
                    'OneShotDetInferencer needs a OneShotDataset config.'
                )
        whole = [
            t
            for t in _replace_loader(
                dataset.exemplar_pipeline, 'exemplar_pipeline'
            )
            if t['type'] != 'CropExemplar'
        ]
        # Crop right after loading, whether or not the config crops (a
        # stage-1 exemplar pipeline does not): the user's box must apply.
        loader = next(
            i for i, t in enumerate(whole) if t['type'].endswith('Loader')
        )
        self._whole_pipeline = Compose(whole)
        self._crop_pipeline = Compose(
            whole[: loader + 1]
            + [dict(type='CropExemplar')]
            + whole[loader + 1 :]
        )
        self._crop_stage = loader + 2  # transforms up to the crop
        return Compose(_replace_loader(dataset.pipeline, 'pipeline'))

    def _init_visualizer(self, cfg: ConfigDict) -> OneShotDetLocalVisualizer:
        """The config's visualizer as a :class:`OneShotDetLocalVisualizer`
        (mmdet's default ``DetLocalVisualizer`` is upgraded to it)."""
        vis_cfg = cfg.get('visualizer') or dict(
            vis_backends=[dict(type='LocalVisBackend')]
        )
        if str(vis_cfg.get('type')).split('.')[-1] in (
            'None',
            'DetLocalVisualizer',
        ):
            vis_cfg['type'] = 'OneShotDetLocalVisualizer'
        cfg.visualizer = vis_cfg
        visualizer = super()._init_visualizer(cfg)
        if not isinstance(visualizer, OneShotDetLocalVisualizer):
            raise TypeError(
                "the config's visualizer must be a OneShotDetLocalVisualizer "
                f'(or DetLocalVisualizer), got {vis_cfg["type"]!r}.'
            )
        return visualizer

    def prepare_exemplar(
        self,
        exemplar: ImageType,
        exemplar_bbox: Optional[Sequence[float]] = None,
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Run an exemplar through the config's exemplar pipeline.

        Args:
            exemplar (str or np.ndarray): Image path or BGR array (H, W, 3).
            exemplar_bbox (Sequence[float], optional): (x1, y1, x2, y2) in
                the exemplar's pixels. Defaults to None (the whole image).

        Returns:
            tuple[np.ndarray, np.ndarray]: The processed exemplar the model
            reads, BGR (h, w, 3), and the crop as given (before resizing),
            RGB, for drawing.
        """
        if isinstance(exemplar, str):
            results = dict(img_path=exemplar)
        elif isinstance(exemplar, np.ndarray) and exemplar.ndim == 3:
            results = dict(img=exemplar)
        else:
            raise TypeError(
                'exemplar must be an image path or an (H, W, 3) array, got '
                f'{type(exemplar).__name__}.'
            )
        pipeline, stage = self._whole_pipeline, self._crop_stage - 1
        if exemplar_bbox is not None:
            box = np.asarray(exemplar_bbox, dtype=np.float64)
            if box.shape != (4,) or not (box[2:] > box[:2]).all():
                raise ValueError(
                    'exemplar_bbox must be (x1, y1, x2, y2) with x2 > x1 '
                    f'and y2 > y1, got {exemplar_bbox!r}.'
                )
            results['exemplar_bbox'] = box
            pipeline, stage = self._crop_pipeline, self._crop_stage
        crop, box = None, results.get('exemplar_bbox')
        for i, transform in enumerate(pipeline.transforms):
            results = apply_pipeline(transform, results)
            if box is not None and 'img' in results:
                _check_box_overlaps(box, results, exemplar)
                box = None
            if i + 1 == stage:
                crop = mmcv.bgr2rgb(results['img'])
        return results['img'], crop

    def __call__(
        self,
        inputs: Union[ImageType, Sequence[ImageType]],
        exemplar: ImageType,
        exemplar_bbox: Optional[Sequence[float]] = None,
        exemplar_name: str = 'exemplar',
        **kwargs,
    ) -> Dict[str, list]:
        """Detect the exemplar's class in every target.

        Args:
            inputs (str or np.ndarray or Sequence): Target image path(s),
                BGR array(s) or a directory of images.
            exemplar (str or np.ndarray): The exemplar image (path or BGR).
            exemplar_bbox (Sequence[float], optional): Its object's box
                (x1, y1, x2, y2). Defaults to None (the whole image).
            exemplar_name (str): Name drawn on the boxes.
                Defaults to 'exemplar'.
            **kwargs: :meth:`DetInferencer.__call__` arguments
                (``batch_size``, ``out_dir``, ``pred_score_thr``,
                ``return_vis``, ``no_save_pred``, ``return_datasamples``...).

        Returns:
            dict: ``predictions`` (one dict per target with ``bboxes``
            (x1, y1, x2, y2 in the target's pixels), ``scores`` and
            ``labels``, or :class:`DetDataSample` with
            ``return_datasamples=True``) and ``visualization`` (RGB arrays
            with ``return_vis=True``).
        """
        self._exemplar, self._inset = self.prepare_exemplar(
            exemplar, exemplar_bbox
        )
        try:
            return super().__call__(
                inputs, exemplar_name=exemplar_name, **kwargs
            )
        finally:
            self._exemplar = self._inset = None

    def preprocess(self, inputs: list, batch_size: int = 1, **kwargs):
        """Pair every target with the prepared exemplar, then batch as
        :meth:`DetInferencer.preprocess`."""
        pairs = []
        for target in inputs:
            if isinstance(target, str):
                pair = dict(img_path=target)
            elif isinstance(target, np.ndarray):
                pair = dict(img=target)
            else:
                raise TypeError(
                    'each target must be an image path or a BGR array, got '
                    f'{type(target).__name__}.'
                )
            pairs.append(dict(pair, exemplar_img=self._exemplar))
        yield from super().preprocess(pairs, batch_size=batch_size)

    def pred2dict(
        self, data_sample: DetDataSample, pred_out_dir: str = ''
    ) -> dict:
        """As :meth:`DetInferencer.pred2dict`; an array target (no path)
        is saved under its running number, not ``None``."""
        if 'img_path' in data_sample and data_sample.img_path is None:
            del data_sample.img_path
        return super().pred2dict(data_sample, pred_out_dir)

    def visualize(
        self,
        inputs: list,
        preds: List[DetDataSample],
        exemplar_name: str = 'exemplar',
        **kwargs,
    ) -> Optional[List[np.ndarray]]:
        """Draw the predictions with the exemplar inset; arguments as
        :meth:`DetInferencer.visualize`."""
        palette = self.palette if self.palette != 'none' else None
        self.visualizer.dataset_meta = dict(
            classes=(exemplar_name,), palette=palette or _DEFAULT_PALETTE
        )
        self.visualizer.default_exemplar = self._inset
        # DetInferencer.visualize flips loaded paths to RGB but draws arrays
        # as given; arrays come in BGR, as mmdet's loaders read them.
        inputs = [
            mmcv.bgr2rgb(x) if isinstance(x, np.ndarray) else x for x in inputs
        ]
        try:
            return super().visualize(inputs, preds, **kwargs)
        finally:
            self.visualizer.default_exemplar = None
