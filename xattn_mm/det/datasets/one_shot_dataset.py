"""One-shot (target, exemplar) pairs over an mmdet detection dataset, with
the CoAE (NeurIPS 2019) / BHRL (CVPR 2022) protocol's splits and exemplar
draws."""

import copy
import random
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from mmdet.registry import DATASETS, TASK_UTILS
from mmengine.dataset import BaseDataset, Compose, force_full_init

from xattn_mm.engine.pipeline import apply_pipeline, build_dataset

from . import exemplar_samplers  # noqa: F401  (registers them)
from .one_shot_splits import one_shot_split
from .reference_pool import load_reference_pool


@DATASETS.register_module()
class OneShotDataset:
    """Wrap an mmdet detection dataset (``VOCDataset``, ``CocoDataset``, or a
    ``ConcatDataset`` of them) into one-shot pairs.

    A class's exemplar pool (``candidates``) is every non-ignored instance
    (not ``difficult``, not crowd) of it, in dataset order (images in the
    annotation file's order, each image's objects in file order), or, with
    ``reference_pool``, CoAE's COCO reference pool in the file's order.

    - **Training** (``test_mode=False``): one sample per target image that
      holds a seen class with a candidate in another image. Each time it is
      loaded, a class ``c`` among those is chosen with probability
      proportional to 1 / (number of candidates of ``c``), and the exemplar is
      a random candidate of ``c`` from a different image. The target's ground
      truth is every box of ``c`` (label 0, ignore flags kept); everything
      else, unseen objects included, is background.
    - **Testing** (``test_mode=True``): one sample per (draw, image, test class
      annotated in the image) that the ``exemplar_sampler`` keeps, with the
      exemplars it draws: :class:`CoAEExemplarSampler` (the default, CoAE's
      and BHRL's rule: one exemplar, entry ``order[k mod n]`` of the class's
      pool, ``order`` shuffled by the image id, the target's own objects
      included) or :class:`IADETRExemplarSampler` (the official IA-DETR
      test protocol: ``num_exemplars`` exemplars per sample under draw 0,
      decoded together by :class:`IADETR`).

    The exemplar's image goes through ``exemplar_pipeline`` with the
    candidate's box in ``exemplar_bbox`` (e.g. ``LoadImageFromFile``,
    ``CropExemplar``, augmentations, a fixed resize); its ``img`` becomes the
    target's ``exemplar_img``, and the target goes through ``pipeline``
    (ending with ``PackOneShotInputs``). ``exemplar_label`` (the class index
    in the wrapped dataset), ``exemplar_instance`` (image id and box),
    ``exemplar_img_path`` and ``draw`` are set for both pipelines.

    Args:
        dataset (dict | BaseDataset): The detection dataset, built with all
            its classes and an empty ``pipeline``.
        split (str, optional): ``'voc'`` or ``'coco1'`` .. ``'coco4'``.
        unseen_classes (Sequence[str], optional): Instead of ``split``: the
            unseen class names (any dataset, e.g. the synthetic one).
        test_mode (bool): Build test samples. Defaults to False.
        test_classes (str): ``'unseen'``, ``'seen'`` or ``'all'``: the classes
            a test run evaluates. Defaults to 'unseen'.
        draws (Sequence[int]): Exemplar draws ``k`` of a test run; the metric
            averages over them. Defaults to (0, 1, 2, 3, 4).
        pipeline (list[dict]): Target pipeline. Defaults to [].
        exemplar_pipeline (list[dict]): Exemplar pipeline. Defaults to [].
        exemplar_swap (bool): The exemplar-swap control (test mode only):
            every sample keeps its target and ground truth, but its exemplar
            shows another class, chosen uniformly among the dataset's other
            classes (present in the target or not) by a generator seeded
            with the image id and the draw; the exemplar is then drawn from
            that class as above. ``swap_label`` records the class shown.
            A model that uses the exemplar scores far lower under it.
            Defaults to False.
        exemplar_sampler (dict): The exemplar-sampling strategy, a
            ``TASK_UTILS`` config (``exemplar_samplers.py``). Defaults to
            ``dict(type='CoAEExemplarSampler')``.
        train_targets (str): The training target's ground truth:
            ``'exemplar_class'`` (every box of the chosen class, label 0;
            stage 2) or ``'seen_classes'`` (every box of every seen class,
            with its class label; stage 1, where
            ``RandomPatchExemplar(base_boxes=True)`` makes them the
            base-class targets). Defaults to 'exemplar_class'.
        reference_pool (str, optional): CoAE's COCO reference pool, BHRL's
            ``id_ref_instances_{train,val}2017.pkl`` format (a dict from COCO
            category id to records with the annotation id under ``'id'``;
            :func:`~.reference_pool.load_reference_pool`): the exemplar pool
            of each class. Training drops its crowd entries. Defaults to
            None (every non-ignored instance).
        lazy_init (bool): Index on first use. Defaults to False.
    """

    def __init__(
        self,
        dataset: Union[dict, BaseDataset],
        split: Optional[str] = None,
        unseen_classes: Optional[Sequence[str]] = None,
        test_mode: bool = False,
        test_classes: str = 'unseen',
        draws: Sequence[int] = (0, 1, 2, 3, 4),
        pipeline: Sequence[dict] = (),
        exemplar_pipeline: Sequence[dict] = (),
        exemplar_swap: bool = False,
        exemplar_sampler: Optional[dict] = None,
        train_targets: str = 'exemplar_class',
        reference_pool: Optional[str] = None,
        lazy_init: bool = False,
    ) -> None:
        if (split is None) == (unseen_classes is None):
            raise ValueError(
                'OneShotDataset needs exactly one of split (voc, coco1..4) '
                'and unseen_classes.'
            )
        if test_classes not in ('unseen', 'seen', 'all'):
            raise ValueError(
                "test_classes must be 'unseen', 'seen' or 'all', got "
                f'{test_classes!r}.'
            )
        if not draws or any(int(k) != k or k < 0 for k in draws):
            raise ValueError(
                f'draws must be non-negative ints, got {tuple(draws)!r}.'
            )
        if train_targets not in ('exemplar_class', 'seen_classes'):
            raise ValueError(
                "train_targets must be 'exemplar_class' or 'seen_classes', "
                f'got {train_targets!r}.'
            )
        if exemplar_swap and not test_mode:
            raise ValueError('exemplar_swap is a test-mode control.')
        self.exemplar_sampler = TASK_UTILS.build(
            exemplar_sampler or dict(type='CoAEExemplarSampler')
        )
        self.exemplar_sampler.check(test_mode, exemplar_swap)
        draws = self.exemplar_sampler.test_draws(draws)
        self.exemplar_swap = exemplar_swap
        self.dataset = (
            build_dataset(DATASETS, dataset)
            if isinstance(dataset, dict)
            else dataset
        )
        self.split = split
        self._unseen_names = unseen_classes
        self.test_mode = test_mode
        self.test_classes = test_classes
        self.draws = tuple(int(k) for k in draws)
        self.reference_pool = reference_pool
        self.train_targets = train_targets
        self.pipeline = Compose(list(pipeline))
        self.exemplar_pipeline = Compose(list(exemplar_pipeline))
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    @property
    def metainfo(self) -> dict:
        """The wrapped dataset's metainfo, plus ``seen_classes``,
        ``unseen_classes``, ``test_class_names`` and ``draws``."""
        self.full_init()
        meta = copy.deepcopy(self.dataset.metainfo)
        meta.update(
            seen_classes=self.seen_classes,
            unseen_classes=self.unseen_classes,
            test_class_names=self.test_class_names,
            draws=self.draws,
        )
        return meta

    def full_init(self) -> None:
        """Index the candidates of every class and build the samples."""
        if self._fully_initialized:
            return
        self.dataset.full_init()
        classes = tuple(self.dataset.metainfo['classes'])
        if self.split is not None:
            seen, unseen = one_shot_split(self.split, classes)
        else:
            missing = set(self._unseen_names) - set(classes)
            if missing:
                raise ValueError(
                    f'unseen_classes {sorted(missing)} are not classes of '
                    f'the dataset {classes}.'
                )
            unseen = tuple(c for c in classes if c in self._unseen_names)
            seen = tuple(c for c in classes if c not in unseen)
        self.seen_classes, self.unseen_classes = seen, unseen
        self.test_class_names = {
            'unseen': unseen,
            'seen': seen,
            'all': classes,
        }[self.test_classes]

        # candidates[label] = [(data index, instance index), ...], the pool;
        # object_labels / annotated_labels[data index] = the labels of the
        # image's non-ignored / all objects.
        self.candidates: Dict[int, List[Tuple[int, int]]] = defaultdict(list)
        self.object_labels: List[set] = []
        self.annotated_labels: List[List[int]] = []
        for idx in range(len(self.dataset)):
            labels, annotated = set(), set()
            for j, inst in enumerate(
                self.dataset.get_data_info(idx)['instances']
            ):
                annotated.add(inst['bbox_label'])
                if not inst.get('ignore_flag', 0):
                    self.candidates[inst['bbox_label']].append((idx, j))
                    labels.add(inst['bbox_label'])
            self.object_labels.append(labels)
            self.annotated_labels.append(sorted(annotated))
        if self.reference_pool is not None:
            self.candidates = defaultdict(
                list,
                load_reference_pool(
                    self.reference_pool,
                    self.dataset,
                    keep_ignored=self.test_mode,
                ),
            )
        self._candidate_images = {
            label: {idx for idx, _ in cands}
            for label, cands in self.candidates.items()
        }

        self.wanted = {classes.index(c) for c in self.test_class_names}
        self.seen_labels = {classes.index(c) for c in seen}
        if self.test_mode:
            keeps = self.exemplar_sampler.keeps
            pairs = [
                (idx, label)
                for idx, labels in enumerate(self.annotated_labels)
                for label in labels
                if label in self.wanted and keeps(self, idx, label)
            ]
            self.samples = [
                (k, idx, label) for k in self.draws for idx, label in pairs
            ]
        else:
            self.samples = []
            for idx, labels in enumerate(self.object_labels):
                usable = [
                    label
                    for label in sorted(labels)
                    if label in self.seen_labels
                    and self.has_other_image(label, idx)
                ]
                if usable:
                    self.samples.append((idx, usable))
        if not self.samples:
            wanted = self.test_class_names if self.test_mode else seen
            kind = 'test' if self.test_mode else 'training'
            sampler = type(self.exemplar_sampler).__name__
            raise ValueError(
                f'OneShotDataset has no {kind} sample: no image of the '
                f'wrapped dataset ({len(self.dataset)} images) holds an '
                f'object of {wanted} that {sampler} can pair with an '
                'exemplar from the pool (training: a '
                'non-ignored object, and a pool entry in another image). '
                'Check the data paths, the split, test_classes and '
                'reference_pool.'
            )
        self._fully_initialized = True

    def has_other_image(self, label: int, idx: int) -> bool:
        """Whether class ``label`` has a candidate outside image ``idx``."""
        images = self._candidate_images.get(label, ())
        return len(images) > 1 or (len(images) == 1 and idx not in images)

    def class_weights(self, labels: Sequence[int]) -> np.ndarray:
        """Probabilities of choosing each of ``labels`` for a training
        target: proportional to 1 / number of candidates."""
        weights = np.array([1.0 / len(self.candidates[c]) for c in labels])
        return weights / weights.sum()

    @force_full_init
    def __len__(self) -> int:
        return len(self.samples)

    @force_full_init
    def get_pair(
        self, index: int
    ) -> Tuple[int, int, List[Tuple[int, int]], int]:
        """(target data index, class label, exemplars, draw) of sample
        ``index``: the exemplars are (data index, instance index) pairs
        drawn by ``exemplar_sampler``; training samples are random (draw
        -1)."""
        sampler = self.exemplar_sampler
        if self.test_mode:
            draw, idx, label = self.samples[index]
            shown = self.swap_label(index) if self.exemplar_swap else label
            return (
                idx,
                label,
                sampler.test_exemplars(self, draw, idx, shown),
                draw,
            )
        idx, labels = self.samples[index]
        label = labels[
            np.random.choice(len(labels), p=self.class_weights(labels))
        ]
        return idx, label, sampler.train_exemplars(self, idx, label), -1

    @force_full_init
    def swap_label(self, index: int) -> int:
        """The class shown by test sample ``index``'s exemplar under the
        exemplar-swap control: any class other than the sample's with an
        exemplar candidate outside the target image."""
        draw, idx, label = self.samples[index]
        choices = sorted(
            c
            for c in self.candidates
            if c != label and self.has_other_image(c, idx)
        )
        if not choices:
            raise ValueError(
                'exemplar_swap needs a second class with exemplar candidates.'
            )
        rng = random.Random(f'{self.image_id(idx)}/{draw}/swap')
        return choices[rng.randrange(len(choices))]

    def image_id(self, idx: int):
        """The image id of data index ``idx`` (its path when it has none)."""
        info = self.dataset.get_data_info(idx)
        return info.get('img_id', info.get('img_path'))

    def _exemplar(self, ex_idx: int, ex_inst: int, label: int, draw: int):
        """Run one exemplar through ``exemplar_pipeline``; return its image
        and the pair's shared metainfo."""
        exemplar_info = self.dataset.get_data_info(ex_idx)
        box = exemplar_info['instances'][ex_inst]['bbox']
        shared = dict(
            exemplar_label=label,
            exemplar_instance=(exemplar_info.get('img_id'), tuple(box)),
            exemplar_img_path=exemplar_info['img_path'],
            draw=draw,
        )
        if self.exemplar_swap:
            shared['swap_label'] = exemplar_info['instances'][ex_inst][
                'bbox_label'
            ]
        exemplar = dict(
            img_path=exemplar_info['img_path'],
            img_id=exemplar_info.get('img_id'),
            exemplar_bbox=np.array(box, dtype=np.float32),
            **shared,
        )
        exemplar = apply_pipeline(self.exemplar_pipeline, exemplar)
        if 'img' not in exemplar:
            raise KeyError(
                'exemplar_pipeline must produce the exemplar image in '
                '"img" (start it with LoadImageFromFile, then CropExemplar).'
            )
        return exemplar['img'], shared

    def __getitem__(self, index: int) -> dict:
        """The target through ``pipeline``, with ``exemplar_img``: one image,
        or with a stacking sampler (:class:`IADETRExemplarSampler`) a list
        of them (then ``exemplar_instance`` and ``exemplar_img_path`` are
        tuples, one entry per exemplar)."""
        idx, label, exemplars, draw = self.get_pair(index)
        loaded = [self._exemplar(*e, label, draw) for e in exemplars]
        img, shared = loaded[0]
        if self.exemplar_sampler.stacked:
            shared = dict(shared)
            for key in ('exemplar_instance', 'exemplar_img_path'):
                shared[key] = tuple(s[key] for _, s in loaded)
            img = [i for i, _ in loaded]
        target = self.dataset.get_data_info(idx)
        if not self.test_mode and self.train_targets == 'seen_classes':
            target['instances'] = [
                inst
                for inst in target['instances']
                if inst['bbox_label'] in self.seen_labels
            ]
        else:
            target['instances'] = [
                dict(inst, bbox_label=0)
                for inst in target['instances']
                if inst['bbox_label'] == label
            ]
        target.update(shared, exemplar_img=img)
        return apply_pipeline(self.pipeline, target)
