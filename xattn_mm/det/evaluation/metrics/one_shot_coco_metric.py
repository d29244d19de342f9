"""One-shot detection AP50 (the CoAE, NeurIPS 2019 / BHRL, CVPR 2022
protocol), computed with pycocotools' ``COCOeval`` through mmdet's
wrappers."""

import contextlib
import io
import math
from collections import OrderedDict, defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmdet.datasets.api_wrappers import COCO, COCOeval
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.fileio import dump
from mmengine.logging import MMLogger
from mmengine.structures import BaseDataElement
from terminaltables import AsciiTable

#: Keys every data sample needs, beside ``pred_instances``.
REQUIRED_SAMPLE_KEYS = ('img_id', 'exemplar_label', 'draw', 'instances')
#: Keys ``dataset_meta`` needs (the metainfo of ``OneShotDataset``).
REQUIRED_META_KEYS = (
    'classes',
    'seen_classes',
    'unseen_classes',
    'test_class_names',
)
#: Recall thresholds of the VOC07 11-point AP: exactly k / 10. (COCOeval's
#: ``np.linspace(0, 1, 101)[::10]`` has 0.7000000000000001, which a recall
#: of exactly 7 / 10 would miss.)
VOC07_RECALL_THRS = np.arange(11) / 10


def _to_numpy(value: Any) -> np.ndarray:
    """A tensor, box structure or array-like as a float64 numpy array."""
    if hasattr(value, 'tensor'):  # mmdet box structures
        value = value.tensor
    if hasattr(value, 'detach'):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _mean(values: Sequence[float]) -> float:
    """Mean of the finite values; nan when there are none."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float('nan')


@METRICS.register_module()
class OneShotCocoMetric(BaseMetric):
    """AP50 of one-shot detection, per exemplar draw and averaged over the
    draws, for the unseen and seen test classes.

    Expects the test samples of :class:`OneShotDataset` packed by
    :class:`PackOneShotInputs`: each data sample is one (draw ``k``, target
    image, test class ``c``) and carries ``img_id``, ``exemplar_label``
    (``c``, an index into ``dataset_meta['classes']``), ``draw`` and
    ``instances`` (the target's boxes of ``c`` in original image coordinates,
    with ``ignore_flag``), beside the detector's ``pred_instances``
    (``bboxes`` in original image coordinates, ``scores``; ``labels`` are
    ignored).

    For each draw ``k``, an in-memory COCO ground truth is built from the
    samples of that draw: the images are their distinct ``img_id``, the
    categories the test classes that have samples, and the annotations every
    sample's ``instances`` with category ``c`` (``iscrowd=1`` where
    ``ignore_flag`` is set). Every detection of a sample gets category ``c``.
    ``COCOeval`` (bbox, IoU 0.5, all areas, ``max_dets`` per image and class)
    then gives the interpolated precision at its recall thresholds, and a
    class's AP50 is their mean:

    - ``'coco101'``: COCO's 101 thresholds ``np.linspace(0, 1, 101)`` (as
      mmdet's ``bbox_mAP_50``).
    - ``'voc07'``: the VOC07 11-point AP, at recalls exactly 0, 0.1, ..., 1.
      COCOeval's precision at threshold ``r`` is the largest precision at a
      recall of at least ``r`` (the VOC07 interpolation).

    A class's AP50 is the mean over the draws that have ground truth of it
    (nan if none). The group means are over the classes with a value.

    Output keys (before ``prefix``), fractions in [0, 1] rounded to 3
    decimals as mmdet's ``CocoMetric`` reports them:

    - ``AP50``, ``unseen_AP50``, ``seen_AP50``: mean over all evaluated test
      classes, over the unseen ones, over the seen ones; a group without an
      evaluated class has no key.
    - ``draw{k}_AP50``, ``draw{k}_unseen_AP50``, ``draw{k}_seen_AP50``: the
      same for draw ``k`` alone.
    - ``AP50_{class name}`` (spaces as ``_``), when ``classwise``.

    A per-class table (class, unseen/seen, AP50 per draw, mean) is always
    logged. :meth:`compute_ap50` gives the unrounded values.

    Protocol notes: COCOeval's IoU has no VOC "+1" pixel and matches at
    IoU >= 0.5 (VOC: > 0.5); a detection takes the best-overlapping GT not
    yet matched, preferring non-ignored GT. Ignored GT (VOC difficult, COCO
    crowd) are COCO crowd regions: their IoU is intersection / detection
    area, any number of detections may match one, and those detections are
    neither true nor false positives.

    Args:
        ap_mode (str): ``'coco101'`` or ``'voc07'``. Defaults to 'coco101'.
        classwise (bool): Also return ``AP50_{class name}``.
            Defaults to False.
        max_dets (int): Detections kept per image and class, by score.
            Defaults to 100.
        outfile_prefix (str, optional): Dump each draw's COCO ground truth
            and detections to ``{outfile_prefix}.draw{k}.gt.json`` and
            ``.bbox.json``. Defaults to None.
        collect_device (str): ``'cpu'`` or ``'gpu'``, to gather results
            across ranks. Defaults to 'cpu'.
        prefix (str, optional): Prefix of the output keys. Defaults to None
            (``'oneshot'``).
        collect_dir (str, optional): Directory used to gather results on
            CPU. Defaults to None.
    """

    default_prefix: Optional[str] = 'oneshot'

    def __init__(
        self,
        ap_mode: str = 'coco101',
        classwise: bool = False,
        max_dets: int = 100,
        outfile_prefix: Optional[str] = None,
        collect_device: str = 'cpu',
        prefix: Optional[str] = None,
        collect_dir: Optional[str] = None,
    ) -> None:
        super().__init__(
            collect_device=collect_device,
            prefix=prefix,
            collect_dir=collect_dir,
        )
        if ap_mode not in ('coco101', 'voc07'):
            raise ValueError(
                f"ap_mode must be 'coco101' or 'voc07', got {ap_mode!r}."
            )
        if max_dets < 1:
            raise ValueError(f'max_dets must be >= 1, got {max_dets}.')
        self.ap_mode = ap_mode
        self.classwise = classwise
        self.max_dets = int(max_dets)
        self.outfile_prefix = outfile_prefix

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Keep each sample's draw, image, class, ground truth and
        detections.

        Args:
            data_batch (Any): The batch from the dataloader (unused).
            data_samples (Sequence[dict]): The data samples with predictions,
                as dicts (``DetDataSample.to_dict()``) or data elements.
        """
        for sample in data_samples:
            if isinstance(sample, BaseDataElement):
                sample = sample.to_dict()
            for key in REQUIRED_SAMPLE_KEYS + ('pred_instances',):
                if key not in sample:
                    raise KeyError(
                        f'OneShotCocoMetric: data sample has no {key!r}; '
                        'evaluate OneShotDataset(test_mode=True) samples '
                        'packed by PackOneShotInputs (whose meta_keys keep '
                        "'img_id', 'exemplar_label', 'draw' and "
                        "'instances')."
                    )
            draw = int(sample['draw'])
            if draw < 0:
                raise ValueError(
                    f'OneShotCocoMetric: draw {draw} is a training sample; '
                    'evaluate OneShotDataset(test_mode=True).'
                )
            instances = sample['instances']
            pred = sample['pred_instances']
            self.results.append(
                dict(
                    draw=draw,
                    img_id=sample['img_id'],
                    label=int(sample['exemplar_label']),
                    ori_shape=sample.get('ori_shape'),
                    gt_bboxes=np.array(
                        [inst['bbox'] for inst in instances],
                        dtype=np.float64,
                    ).reshape(-1, 4),
                    gt_ignore=np.array(
                        [
                            bool(inst.get('ignore_flag', 0))
                            for inst in instances
                        ],
                        dtype=bool,
                    ),
                    bboxes=_to_numpy(pred['bboxes']).reshape(-1, 4),
                    scores=_to_numpy(pred['scores']).reshape(-1),
                )
            )

    def _meta(self) -> dict:
        meta = self.dataset_meta or {}
        missing = [key for key in REQUIRED_META_KEYS if key not in meta]
        if missing:
            raise KeyError(
                f'OneShotCocoMetric: dataset_meta has no {missing}; the '
                "metric needs OneShotDataset's metainfo (classes, "
                'seen_classes, unseen_classes, test_class_names).'
            )
        unknown = set(meta['test_class_names']) - set(meta['classes'])
        if unknown:
            raise ValueError(
                f'OneShotCocoMetric: test classes {sorted(unknown)} are not '
                'in dataset_meta["classes"].'
            )
        return meta

    def compute_ap50(self, results: List[dict]) -> Dict[int, Dict[int, float]]:
        """Unrounded AP50 of every evaluated test class in every draw.

        Args:
            results (list[dict]): What :meth:`process` stored.

        Returns:
            dict[int, dict[int, float]]: ``{draw: {class index: AP50}}``,
            nan for a class without non-ignored ground truth in that draw.
        """
        meta = self._meta()
        classes = tuple(meta['classes'])
        test_labels = {classes.index(n) for n in meta['test_class_names']}
        by_draw: Dict[int, List[dict]] = defaultdict(list)
        for result in results:
            if result['label'] not in test_labels:
                raise ValueError(
                    f'OneShotCocoMetric: a sample of class {result["label"]} '
                    'is not among dataset_meta["test_class_names"].'
                )
            by_draw[result['draw']].append(result)
        return {
            draw: self._evaluate_draw(draw, by_draw[draw], classes)
            for draw in sorted(by_draw)
        }

    def _evaluate_draw(
        self, draw: int, samples: List[dict], classes: Tuple[str, ...]
    ) -> Dict[int, float]:
        """AP50 per class of one draw's samples, through COCOeval."""
        cat_ids = sorted({s['label'] for s in samples})
        img_ids: Dict[Any, int] = {}
        images, annotations, detections = [], [], []
        pairs = set()
        for s in samples:
            if (s['img_id'], s['label']) in pairs:
                raise ValueError(
                    f'OneShotCocoMetric: draw {draw} has two samples of image '
                    f'{s["img_id"]!r} and class {s["label"]}; image ids must '
                    'be unique and each sample evaluated once.'
                )
            pairs.add((s['img_id'], s['label']))
            if s['img_id'] not in img_ids:
                img_ids[s['img_id']] = len(img_ids) + 1
                image = dict(id=img_ids[s['img_id']], img_id=s['img_id'])
                if s['ori_shape'] is not None:
                    image.update(
                        height=int(s['ori_shape'][0]),
                        width=int(s['ori_shape'][1]),
                    )
                images.append(image)
            image_id = img_ids[s['img_id']]
            for (x1, y1, x2, y2), ignore in zip(
                s['gt_bboxes'], s['gt_ignore']
            ):
                w, h = float(x2 - x1), float(y2 - y1)
                annotations.append(
                    dict(
                        id=len(annotations) + 1,  # COCOeval needs ids > 0
                        image_id=image_id,
                        category_id=s['label'],
                        bbox=[float(x1), float(y1), w, h],
                        area=w * h,
                        iscrowd=int(ignore),
                    )
                )
            for (x1, y1, x2, y2), score in zip(s['bboxes'], s['scores']):
                detections.append(
                    dict(
                        image_id=image_id,
                        category_id=s['label'],
                        bbox=[
                            float(x1),
                            float(y1),
                            float(x2 - x1),
                            float(y2 - y1),
                        ],
                        score=float(score),
                    )
                )
        gt_json = dict(
            images=images,
            categories=[dict(id=c, name=classes[c]) for c in cat_ids],
            annotations=annotations,
        )
        if self.outfile_prefix is not None:
            dump(gt_json, f'{self.outfile_prefix}.draw{draw}.gt.json')
            dump(detections, f'{self.outfile_prefix}.draw{draw}.bbox.json')

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints
            coco_gt = COCO()
            coco_gt.dataset = gt_json
            coco_gt.createIndex()
            if detections:
                coco_dt = coco_gt.loadRes(detections)
            else:  # loadRes fails on an empty list
                coco_dt = COCO()
                coco_dt.dataset = dict(gt_json, annotations=[])
                coco_dt.createIndex()
            coco_eval = COCOeval(coco_gt, coco_dt, 'bbox')
            params = coco_eval.params
            params.imgIds = sorted(img_ids.values())
            params.catIds = cat_ids
            params.iouThrs = np.array([0.5])
            params.maxDets = [self.max_dets]
            params.areaRng = [[0**2, 1e5**2]]
            params.areaRngLbl = ['all']
            if self.ap_mode == 'voc07':
                params.recThrs = VOC07_RECALL_THRS
            coco_eval.evaluate()
            coco_eval.accumulate()
        # precision: (iou, recall threshold, class, area range, max dets);
        # -1 where a class has no non-ignored ground truth.
        precision = coco_eval.eval['precision'][0, :, :, 0, -1]
        ap = {}
        for k, cat_id in enumerate(cat_ids):
            valid = precision[:, k][precision[:, k] > -1]
            ap[cat_id] = float(valid.mean()) if valid.size else float('nan')
        return ap

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """AP50 per draw and averaged over the draws, by group.

        Args:
            results (list): What :meth:`process` stored, from all ranks.

        Returns:
            dict[str, float]: The metrics (see the class docstring), rounded
            to 3 decimals.
        """
        logger: MMLogger = MMLogger.get_current_instance()
        meta = self._meta()
        classes = tuple(meta['classes'])
        if not results:
            logger.warning('OneShotCocoMetric: no samples to evaluate.')
            return {}
        per_draw = self.compute_ap50(results)
        draws = list(per_draw)
        evaluated = sorted({c for aps in per_draw.values() for c in aps})
        class_ap = {
            c: _mean([per_draw[k].get(c, float('nan')) for k in draws])
            for c in evaluated
        }
        unseen, seen = set(meta['unseen_classes']), set(meta['seen_classes'])
        groups = OrderedDict(
            [
                ('', evaluated),
                ('unseen_', [c for c in evaluated if classes[c] in unseen]),
                ('seen_', [c for c in evaluated if classes[c] in seen]),
            ]
        )

        metrics: Dict[str, float] = OrderedDict()
        summary = []
        for group, labels in groups.items():
            value = _mean([class_ap[c] for c in labels])
            if not math.isnan(value):
                metrics[f'{group}AP50'] = value
                summary.append(
                    (f'mean ({group.rstrip("_") or "all"})', labels)
                )
        for k in draws:
            for group, labels in groups.items():
                value = _mean(
                    [per_draw[k].get(c, float('nan')) for c in labels]
                )
                if not math.isnan(value):
                    metrics[f'draw{k}_{group}AP50'] = value
        if self.classwise:
            for c in evaluated:
                name = '_'.join(classes[c].split())
                metrics[f'AP50_{name}'] = class_ap[c]

        self._log_table(logger, meta, per_draw, class_ap, summary)
        return OrderedDict((k, round(v, 3)) for k, v in metrics.items())

    def _log_table(
        self,
        logger: MMLogger,
        meta: dict,
        per_draw: Dict[int, Dict[int, float]],
        class_ap: Dict[int, float],
        summary: List[Tuple[str, List[int]]],
    ) -> None:
        """Log AP50 per test class and draw, and the group means."""
        classes = tuple(meta['classes'])
        unseen = set(meta['unseen_classes'])
        draws = list(per_draw)

        def fmt(value: float) -> str:
            return '-' if math.isnan(value) else f'{value:.3f}'

        rows = [['class', 'split'] + [f'draw {k}' for k in draws] + ['mean']]
        for name in meta['test_class_names']:
            c = classes.index(name)
            rows.append(
                [name, 'unseen' if name in unseen else 'seen']
                + [fmt(per_draw[k].get(c, float('nan'))) for k in draws]
                + [fmt(class_ap.get(c, float('nan')))]
            )
        for title, labels in summary:
            rows.append(
                [title, '']
                + [
                    fmt(
                        _mean(
                            [per_draw[k].get(c, float('nan')) for c in labels]
                        )
                    )
                    for k in draws
                ]
                + [fmt(_mean([class_ap[c] for c in labels]))]
            )
        logger.info(
            f'One-shot AP50 ({self.ap_mode}, IoU 0.5, {len(draws)} draws):\n'
            + AsciiTable(rows).table
        )
