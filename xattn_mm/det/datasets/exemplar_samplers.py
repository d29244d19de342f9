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
    """One exemplar per sample, of the sample's class, from another image.

    - Training: a random candidate of the class chosen by the dataset, from
      a different image (``np.random``, which mmengine seeds per worker).
    - Testing: draw ``k`` is element ``k mod n`` of the class's candidates
      in the other images, shuffled by ``random.Random(img_id)``, so draws
      depend only on the image id, never on workers, ranks or batch size.
      A test (image, class) pair needs a candidate in another image.
    """

    #: The dataset gives one exemplar image per sample.
    stacked = False

    def check(self, test_mode: bool, exemplar_swap: bool) -> None:
        """Refuse dataset settings the protocol does not define."""

    def test_draws(self, draws: Sequence[int]) -> Tuple[int, ...]:
        """The draws a test run makes."""
        return tuple(draws)

    def keeps(self, dataset, idx: int, label: int) -> bool:
        """Whether test image ``idx`` with class ``label`` is a sample."""
        return dataset.has_other_image(label, idx)

    def test_exemplars(
        self, dataset, draw: int, idx: int, label: int
    ) -> List[Instance]:
        """The exemplar of draw ``draw`` for image ``idx``, class ``label``
        (the class the exemplar shows)."""
        others = [c for c in dataset.candidates[label] if c[0] != idx]
        random.Random(dataset.image_id(idx)).shuffle(others)
        return [others[draw % len(others)]]

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
    own instances are candidates too, so every (image, test class) pair is
    a sample.

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
        return True

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
