"""Exemplar-sampling strategies of :class:`OneShotDataset`, one per
protocol, registered in mmdet's ``TASK_UTILS`` and selected by the
dataset's ``exemplar_sampler`` config (docs/protocols.md)."""

import os.path as osp
import random
from typing import Dict, List, Sequence, Tuple

import numpy as np
from mmdet.registry import TASK_UTILS

Instance = Tuple[int, int]  # (data index, instance index)


@TASK_UTILS.register_module()
class CoAEExemplarSampler:
    """One exemplar per sample, of the sample's class: CoAE's and BHRL's
    rule (docs/protocols.md gives each rule's source line).

    - Testing: every (image, test class annotated in it) is a sample, an
      object flagged ignored (crowd, difficult) included (BHRL
      ``OneShotCocoDataset.load_annotations``). Draw ``k`` of image ``i``
      is ``pool[order[k % n]]``: ``pool`` is the class's exemplar pool
      (:attr:`OneShotDataset.candidates`, ``n`` entries, the target
      image's own instances included), ``order`` is ``list(range(n))``
      shuffled by Python's ``random`` seeded with the image id (BHRL
      ``prepare_test_ref_img``; CoAE ``roibatchLoader.load_query``), so a
      draw depends only on the image id, never on workers, ranks or batch
      size. ``k`` is BHRL's ``position`` (its ``--average`` runs 0..4).
    - Training: a random pool entry of the class chosen by the dataset,
      from a different image (``np.random``, which mmengine seeds per
      worker; BHRL ``prepare_train_ref_img`` redraws until the image
      differs).

    Args:
        other_images_only (bool): The rule this project used before: test
            draws among the class's pool entries in the other images (the
            shuffle of those), and a test (image, class) pair only where the
            class has a non-ignored object in the image and an entry in
            another image. Defaults to False (CoAE / BHRL).
    """

    #: The dataset gives one exemplar image per sample.
    stacked = False

    def __init__(self, other_images_only: bool = False) -> None:
        self.other_images_only = bool(other_images_only)

    def check(self, test_mode: bool, exemplar_swap: bool) -> None:
        """Refuse dataset settings the protocol does not define."""

    def test_draws(self, draws: Sequence[int]) -> Tuple[int, ...]:
        """The draws a test run makes."""
        return tuple(draws)

    def keeps(self, dataset, idx: int, label: int) -> bool:
        """Whether test image ``idx`` with class ``label`` (annotated in
        it) is a sample."""
        if self.other_images_only:
            return label in dataset.object_labels[idx] and (
                dataset.has_other_image(label, idx)
            )
        return bool(dataset.candidates.get(label))

    def test_exemplars(
        self, dataset, draw: int, idx: int, label: int
    ) -> List[Instance]:
        """The exemplar of draw ``draw`` for image ``idx``, class ``label``
        (the class the exemplar shows)."""
        pool = dataset.candidates[label]
        if self.other_images_only:
            pool = [c for c in pool if c[0] != idx]
        order = list(range(len(pool)))
        random.Random(dataset.image_id(idx)).shuffle(order)
        return [pool[order[draw % len(order)]]]

    def train_exemplars(self, dataset, idx: int, label: int) -> List[Instance]:
        """A random exemplar of ``label`` for training image ``idx``."""
        cands = dataset.candidates[label]
        while True:  # some candidate is in another image (the dataset's)
            exemplar = cands[np.random.randint(len(cands))]
            if exemplar[0] != idx:
                return [exemplar]


@TASK_UTILS.register_module()
class IADETRExemplarSampler(CoAEExemplarSampler):
    """The official IA-DETR test protocol: ``num_exemplars`` exemplars per
    sample, decoded together (see :class:`IADETR`), one draw (0).

    As the official ``PascalVOCSegDatasetMapperIX.get_prompts`` (``evalall``
    branch), one generator ``random.Random(exemplar_seed)`` is seeded per
    image with its file name; the test classes present are visited in the
    official ``list(set(list(set(ids))))`` order (``ids``: their category ids
    in annotation order, the COCO ids when the wrapped dataset has
    ``cat_ids``), and for each one the list of its ``n`` candidates (in
    dataset order), repeated ``K // n + 1`` times when ``n < K``, is
    shuffled and its first ``K`` taken. As officially, the target image's
    own instances are candidates too, so every (image, test class with a
    non-ignored object in it) pair is a sample.

    Args:
        num_exemplars (int): Exemplars per sample (``K``). Defaults to 5.
        exemplar_seed (str): The string that seeds an image's generator, a
            format string with the fields ``img_path``, ``file_name`` (its
            base name) and ``img_id``. The official seed is the image path
            as registered in detectron2, e.g.
            ``'data/coco/val2017/{file_name}'``. Defaults to '{img_path}'.
    """

    stacked = True

    def __init__(
        self, num_exemplars: int = 5, exemplar_seed: str = '{img_path}'
    ) -> None:
        super().__init__()
        if not isinstance(num_exemplars, int) or num_exemplars < 1:
            raise ValueError(
                f'num_exemplars must be a positive int, got {num_exemplars!r}.'
            )
        self.num_exemplars = num_exemplars
        self.exemplar_seed = exemplar_seed

    def check(self, test_mode: bool, exemplar_swap: bool) -> None:
        if not test_mode or exemplar_swap:
            raise ValueError(
                'IADETRExemplarSampler is a test protocol: it needs '
                'test_mode=True and no exemplar_swap.'
            )

    def test_draws(self, draws: Sequence[int]) -> Tuple[int, ...]:
        return (0,)

    def keeps(self, dataset, idx: int, label: int) -> bool:
        return label in dataset.object_labels[idx]

    def test_exemplars(
        self, dataset, draw: int, idx: int, label: int
    ) -> List[Instance]:
        return self.official_exemplars(dataset, idx)[label]

    def official_exemplars(self, dataset, idx: int) -> Dict[int, List]:
        """The exemplars of every test class in image ``idx``.

        Args:
            dataset (OneShotDataset): The indexed dataset.
            idx (int): Target data index.

        Returns:
            dict[int, list[tuple[int, int]]]: For each test class label
            present in the image, its ``num_exemplars`` exemplars as (data
            index, instance index), in the official order (repeats when
            the class has fewer candidates).
        """
        info = dataset.dataset.get_data_info(idx)
        cat_ids = getattr(dataset.dataset, 'cat_ids', None)
        ids, key_label = [], {}
        for inst in info['instances']:
            label = inst['bbox_label']
            if not inst.get('ignore_flag', 0) and label in dataset.wanted:
                ids.append(label if cat_ids is None else cat_ids[label])
                key_label[ids[-1]] = label
        img_path = info.get('img_path', '')
        rng = random.Random(
            self.exemplar_seed.format(
                img_path=img_path,
                file_name=osp.basename(img_path),
                img_id=info.get('img_id'),
            )
        )
        k = self.num_exemplars
        chosen = {}
        # The official visiting order, list(set(list(set(ids)))) with ids
        # in annotation order, decides how the one generator's stream is
        # shared out among the classes (CPython's set order).
        for key in list(set(list(set(ids)))):
            cands = dataset.candidates[key_label[key]]
            n = len(cands)
            order = list(range(n * (k // n + 1) if n < k else n))
            rng.shuffle(order)
            chosen[key_label[key]] = [cands[i % n] for i in order[:k]]
        return chosen

    def train_exemplars(self, dataset, idx: int, label: int) -> List:
        raise ValueError('IADETRExemplarSampler is a test protocol.')
