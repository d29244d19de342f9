import json
import os
import os.path as osp
import pickle
import random
from collections import defaultdict

import numpy as np
import pytest
from mmdet.registry import DATASETS
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import init_default_scope
from torch.utils.data import DataLoader
from toy_datasets import ToyDetection, ToyLoad  # noqa: F401  (registers)

import xattn_mm.det  # noqa: F401
from xattn_mm.det.datasets import coco_unseen_classes, one_shot_split

DATA = os.environ.get('XATTN_DATA')
needs_data = pytest.mark.skipif(
    not DATA, reason='XATTN_DATA (the shared real datasets) is not set'
)


@pytest.fixture(autouse=True)
def mmdet_scope():
    init_default_scope('mmdet')


def test_coco_unseen_lists_by_name():
    # Hand-checked against ../shared/data/README.md (contiguous index i,
    # unseen when i % 4 == g % 4).
    expected = {
        1: 'person airplane boat parking_meter dog elephant backpack '
        'suitcase sports_ball skateboard wine_glass spoon sandwich hot_dog '
        'chair dining_table mouse microwave refrigerator scissors',
        2: 'bicycle bus traffic_light bench horse bear umbrella frisbee kite '
        'surfboard cup bowl orange pizza couch toilet remote oven book '
        'teddy_bear',
        3: 'car train fire_hydrant bird sheep zebra handbag skis '
        'baseball_bat tennis_racket fork banana broccoli donut '
        'potted_plant tv keyboard toaster clock hair_drier',
        4: 'motorcycle truck stop_sign cat cow giraffe tie snowboard '
        'baseball_glove bottle knife apple carrot cake bed laptop '
        'cell_phone sink vase toothbrush',
    }
    for split, names in expected.items():
        unseen = coco_unseen_classes(split)
        assert unseen == tuple(n.replace('_', ' ') for n in names.split())
    everything = sum((coco_unseen_classes(g) for g in (1, 2, 3, 4)), ())
    assert len(set(everything)) == 80
    with pytest.raises(ValueError, match='1..4'):
        coco_unseen_classes(0)


def test_voc_split():
    from mmdet.datasets import VOCDataset

    seen, unseen = one_shot_split('voc', VOCDataset.METAINFO['classes'])
    assert unseen == ('aeroplane', 'cat', 'cow', 'sheep')
    assert len(seen) == 16 and 'person' in seen and 'aeroplane' not in seen
    with pytest.raises(ValueError, match='standard'):
        one_shot_split('voc', ('a', 'b'))
    with pytest.raises(ValueError, match='split must be one of'):
        one_shot_split('coco5', ())


def toy(images, **kwargs):
    return DATASETS.build(
        dict(
            type='OneShotDataset',
            dataset=dict(type='ToyDetection', images=images),
            **kwargs,
        )
    )


def test_class_choice_is_inverse_to_candidate_count():
    # Image 0 holds a and b; a has 8 candidates in total, b has 2, so b is
    # chosen 4x as often as a.
    images = [[(0, 0), (1, 0)]] + [[(0, 0)]] * 7 + [[(1, 0)]]
    ds = toy(images, unseen_classes=['c'])
    np.random.seed(0)
    labels = [ds.get_pair(0)[1] for _ in range(4000)]
    share_b = np.mean(np.array(labels) == 1)
    # Expected 0.8; 5 standard deviations of a binomial(4000, 0.8) = 0.032.
    assert abs(share_b - 0.8) < 0.032, share_b
    np.testing.assert_allclose(ds.class_weights([0, 1]), [0.2, 0.8])


def test_train_pairs_respect_the_rules():
    images = [
        [(0, 0), (2, 0), (1, 1)],  # c is unseen, the b is ignored
        [(0, 0)],
        [(2, 0)],  # unseen only: dropped
        [(1, 0)],  # b's only candidate: no exemplar elsewhere, dropped
        [(1, 1), (0, 1)],  # only ignored objects: dropped
    ]
    ds = toy(images, unseen_classes=['c'])
    assert ds.seen_classes == ('a', 'b') and ds.unseen_classes == ('c',)
    assert [idx for idx, _ in ds.samples] == [0, 1]
    np.random.seed(1)
    for index in range(len(ds)):
        for _ in range(50):
            idx, label, [(ex_idx, ex_inst)], _ = ds.get_pair(index)
            assert ex_idx != idx
            inst = images[ex_idx][ex_inst]
            assert inst == (label, 0) and label != 2
    # The target keeps every box of the chosen class, as label 0.
    with pytest.raises(KeyError, match='exemplar_pipeline'):
        ds[0]
    ds.exemplar_pipeline = Compose([dict(type='ToyLoad')])
    item = ds[0]
    assert [i['bbox_label'] for i in item['instances']] == [0]
    assert item['exemplar_label'] == 0 and item['draw'] == -1


def test_test_samples_and_draws():
    images = [[(2, 0), (2, 0), (0, 0)], [(2, 0)], [(2, 0)], [(2, 1)], [(1, 0)]]
    ds = toy(images, unseen_classes=['c'], test_mode=True, draws=(0, 1))
    # CoAE / BHRL: (draw, image, class) for every image annotated with c,
    # image 3's ignored c included.
    assert ds.samples == [(k, i, 2) for k in (0, 1) for i in (0, 1, 2, 3)]
    pairs = [ds.get_pair(i) for i in range(len(ds))]
    # Draw k of image i: pool[order[k]], order = range(4) shuffled by
    # random.seed(i); the pool keeps the target's own c.
    pool = [(0, 0), (0, 1), (1, 0), (2, 0)]
    for idx, label, [exemplar], draw in pairs:
        random.seed(idx)
        order = list(range(len(pool)))
        random.shuffle(order)
        assert label == 2 and exemplar == pool[order[draw]]
    assert any(ex[0] == idx for idx, _, [ex], _ in pairs)
    again = toy(images, unseen_classes=['c'], test_mode=True, draws=(0, 1))
    assert [again.get_pair(i) for i in range(len(ds))] == pairs
    # b is annotated only in image 4: still a pair, its exemplar its own b.
    seen = toy(
        images,
        unseen_classes=['c'],
        test_mode=True,
        test_classes='seen',
        draws=(3,),
    )
    assert (3, 4, 1) in seen.samples
    assert seen.get_pair(seen.samples.index((3, 4, 1)))[2] == [(4, 0)]

    # The former rule: candidates in the other images only, and a pair
    # only where the image has a non-ignored c and c exists elsewhere.
    other = toy(
        images,
        unseen_classes=['c'],
        test_mode=True,
        draws=(0, 1),
        exemplar_sampler=dict(
            type='CoAEExemplarSampler', other_images_only=True
        ),
    )
    assert other.samples == [(k, i, 2) for k in (0, 1) for i in (0, 1, 2)]
    others = [(0, 0), (0, 1), (2, 0)]
    random.Random(1).shuffle(others)
    assert other.get_pair(1)[2] == [others[0]]
    assert other.get_pair(4)[2] == [others[1]]
    with pytest.raises(ValueError, match='no test sample'):
        toy(
            images,
            unseen_classes=['a', 'c'],
            test_mode=True,
            test_classes='seen',
            exemplar_sampler=dict(
                type='CoAEExemplarSampler', other_images_only=True
            ),
        )


def _coco(split_file, split, test_mode, **kwargs):
    root = osp.join(DATA, 'coco128')
    return DATASETS.build(
        dict(
            type='OneShotDataset',
            split=split,
            test_mode=test_mode,
            dataset=dict(
                type='CocoDataset',
                data_root=root,
                ann_file=f'annotations/instances_{split_file}.json',
                data_prefix=dict(img=f'{split_file}/'),
                filter_cfg=dict(filter_empty_gt=False),
                pipeline=[],
                test_mode=True,
            ),
            exemplar_pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='CropExemplar'),
                dict(type='Resize', scale=(32, 32), keep_ratio=False),
            ],
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', with_bbox=True),
                dict(type='PackOneShotInputs'),
            ],
            **kwargs,
        )
    )


@needs_data
@pytest.mark.parametrize(
    'split_file, split, seen, unseen',
    [
        # ../shared/data/README.md, "COCO: 4 splits" (non-crowd objects).
        ('train2017', 'coco1', 515, 414),
        ('train2017', 'coco4', 787, 142),
        ('val2017', 'coco2', 755, 143),
        ('val2017', 'coco3', 758, 140),
    ],
)
def test_coco128_counts_match_the_data_readme(split_file, split, seen, unseen):
    ds = _coco(split_file, split, test_mode=False)
    classes = ds.metainfo['classes']

    def count(names):
        return sum(len(ds.candidates[classes.index(c)]) for c in names)

    assert (count(ds.seen_classes), count(ds.unseen_classes)) == (seen, unseen)


@needs_data
def test_voc_train_drops_unseen_only_images_and_difficult_exemplars():
    root = osp.join(DATA, 'VOCdevkit')
    ds = DATASETS.build(
        dict(
            type='OneShotDataset',
            split='voc',
            dataset=dict(
                type='VOCDataset',
                data_root=root,
                ann_file='VOC2012/ImageSets/Main/trainval.txt',
                data_prefix=dict(sub_data_root='VOC2012/'),
                pipeline=[],
            ),
        )
    )
    kept = [ds.dataset.get_data_info(i)['img_id'] for i, _ in ds.samples]
    # Hand-checked from the XML: 000033 holds only aeroplanes (unseen);
    # 000039 (tvmonitor) and 000042 (train) hold the only instances of their
    # class, so no exemplar from another image exists; the people of 000027
    # and 000032 pair with each other.
    assert kept == ['2007_000027', '2007_000032']
    for index in range(len(ds)):
        idx, label, [(ex_idx, ex_inst)], _ = ds.get_pair(index)
        inst = ds.dataset.get_data_info(ex_idx)['instances'][ex_inst]
        assert ex_idx != idx and not inst['ignore_flag']
        assert ds.metainfo['classes'][label] in ds.seen_classes


@needs_data
def test_coco_test_draws_ignore_workers_and_ranks():
    ds = _coco('val2017', 'coco1', test_mode=True)
    subset = list(range(0, len(ds), max(1, len(ds) // 12)))[:12]

    def drawn(loader):
        return {
            (s.draw, s.img_id, s.exemplar_label): s.exemplar_instance
            for batch in loader
            for s in batch['data_samples']
        }

    def loader(indices, workers, batch):
        return DataLoader(
            [ds[i] for i in indices] if workers == 0 else _Subset(ds, indices),
            batch_size=batch,
            num_workers=workers,
            collate_fn=pseudo_collate,
        )

    single = drawn(loader(subset, 0, 1))
    assert len(single) == len(subset)
    assert drawn(loader(subset, 2, 3)) == single
    ranks = {}
    for rank in range(2):  # DefaultSampler gives rank r indices[r::2]
        ranks.update(drawn(loader(subset[rank::2], 0, 2)))
    assert ranks == single


def bhrl_test_draws(ann_file, split, positions=range(5), pool=None):
    """BHRL's test pairs and exemplar draws, straight from the COCO file
    (BHRL ``mmdet/datasets/one_shot_coco.py`` at 9ad7438: the split
    ``(i + 1) % 4 == split % 4`` over the sorted category ids, 73-82; one
    pair per image and unseen category in annotation order, 84-120;
    ``random.seed(img_id)``, ``shuffle(range(n))``, ``position % n``,
    233-248). ``pool``: category id -> annotation ids (default: the
    category's non-crowd annotations in file order, pycocotools'
    ``getAnnIds(catIds=[c], iscrowd=False)``)."""
    with open(ann_file) as f:
        coco = json.load(f)
    cats = sorted(c['id'] for c in coco['categories'])
    unseen = {c for i, c in enumerate(cats) if (i + 1) % 4 == split % 4}
    anns = {a['id']: a for a in coco['annotations']}
    of_image = defaultdict(list)
    for a in coco['annotations']:
        of_image[a['image_id']].append(a)
    pairs = []
    for img in coco['images']:
        found = []
        for a in of_image[img['id']]:
            if a['category_id'] in unseen and a['category_id'] not in found:
                found.append(a['category_id'])
        pairs += [(img['id'], c) for c in found]
    if pool is None:
        pool = defaultdict(list)
        for a in coco['annotations']:
            if not a['iscrowd']:
                pool[a['category_id']].append(a['id'])
    draws = {}
    for position in positions:
        for img_id, cat in pairs:
            random.seed(img_id)
            order = list(range(len(pool[cat])))
            random.shuffle(order)
            ref = anns[pool[cat][order[position % len(order)]]]
            x, y, w, h = ref['bbox']
            draws[position, img_id, cat] = (
                ref['image_id'],
                (x, y, x + w, y + h),
            )
    return draws


def drawn_instances(ds):
    """(draw, image id, category id) -> (exemplar image id, box)."""
    cat_ids = ds.dataset.cat_ids
    out = {}
    for index in range(len(ds)):
        idx, label, [(ex_idx, j)], draw = ds.get_pair(index)
        info = ds.dataset.get_data_info(ex_idx)
        key = (draw, ds.image_id(idx), cat_ids[label])
        out[key] = (info['img_id'], tuple(info['instances'][j]['bbox']))
    return out


@needs_data
def test_coco128_test_draws_are_bhrls():
    ds = _coco('val2017', 'coco1', test_mode=True)
    ann_file = osp.join(DATA, 'coco128/annotations/instances_val2017.json')
    expected = bhrl_test_draws(ann_file, split=1)
    ours = drawn_instances(ds)
    assert len(expected) == 5 * 148 and ours == expected
    # The target's own objects are candidates: some draws are one.
    own = sum(ex_img == img for (_, img, _), (ex_img, _) in ours.items())
    assert own > 0
    # The former rule drops the 3 pairs whose class is only in that image.
    other = _coco(
        'val2017',
        'coco1',
        test_mode=True,
        exemplar_sampler=dict(
            type='CoAEExemplarSampler', other_images_only=True
        ),
    )
    assert len(other) == 5 * 145


@needs_data
def test_reference_pool_sets_the_pool_and_its_order(tmp_path):
    ann_file = osp.join(DATA, 'coco128/annotations/instances_val2017.json')
    with open(ann_file) as f:
        anns = json.load(f)['annotations']
    # A pool of every other annotation per category, in reverse id order,
    # as BHRL's records (dicts with the annotation id).
    by_cat = defaultdict(list)
    for a in sorted(anns, key=lambda a: -a['id']):
        by_cat[a['category_id']].append(a['id'])
    pool = {c: ids[::2] for c, ids in by_cat.items()}
    path = tmp_path / 'id_ref_instances_val2017.pkl'
    with open(path, 'wb') as f:
        pickle.dump(
            {c: [{'id': i} for i in ids] for c, ids in pool.items()}, f
        )
    ds = _coco('val2017', 'coco1', test_mode=True, reference_pool=str(path))
    expected = bhrl_test_draws(ann_file, split=1, pool=pool)
    assert drawn_instances(ds) == expected
    # Training draws come from the pool, never from the target image.
    train = _coco(
        'val2017', 'coco2', test_mode=False, reference_pool=str(path)
    )
    cat_ids = train.dataset.cat_ids
    in_pool = {
        (train.dataset.get_data_info(i)['img_id'], j)
        for label in train.candidates
        for i, j in train.candidates[label]
    }
    assert len(in_pool) == sum(len(ids) for ids in pool.values())
    np.random.seed(0)
    for index in range(0, len(train), 7):
        idx, label, [(ex_idx, j)], _ = train.get_pair(index)
        assert ex_idx != idx and (ex_idx, j) in train.candidates[label]
        assert pool[cat_ids[label]]
    # Bad input names the file and what was expected.
    with pytest.raises(FileNotFoundError, match='missing.pkl'):
        _coco(
            'val2017',
            'coco1',
            True,
            reference_pool=str(tmp_path / 'missing.pkl'),
        )
    with open(path, 'wb') as f:
        pickle.dump({1: [{'id': -5}]}, f)
    with pytest.raises(ValueError, match='annotation id -5'):
        _coco('val2017', 'coco1', True, reference_pool=str(path))


class _Subset:
    def __init__(self, ds, indices):
        self.ds, self.indices = ds, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.ds[self.indices[i]]


def test_exemplar_swap_control():
    images = [[(0, 0), (1, 0)], [(0, 0), (2, 0)], [(1, 0), (2, 0)]] * 2
    ds = toy(images, unseen_classes=['c'], test_mode=True, test_classes='all')
    swap = toy(
        images,
        unseen_classes=['c'],
        test_mode=True,
        test_classes='all',
        exemplar_swap=True,
    )
    assert swap.samples == ds.samples
    shown = []
    for index, (_, idx, label) in enumerate(swap.samples):
        t_idx, t_label, [(ex_idx, ex_inst)], _ = swap.get_pair(index)
        assert (t_idx, t_label) == (idx, label)  # same target and truth
        ex_label = images[ex_idx][ex_inst][0]
        assert ex_label != label
        assert ex_label == swap.swap_label(index)
        shown.append(ex_label)
    # Deterministic, and both other classes occur.
    assert shown == [
        images[e][i][0]
        for e, i in (swap.get_pair(j)[2][0] for j in range(len(swap)))
    ]
    assert len(set(shown)) == 3
    with pytest.raises(ValueError, match='test-mode'):
        toy(images, unseen_classes=['c'], exemplar_swap=True)


def test_empty_sample_list_is_a_clear_error():
    with pytest.raises(ValueError, match=r"no test sample.*\('c',\)"):
        toy([[(0, 0)], [(1, 0)]], unseen_classes=['c'], test_mode=True)
    with pytest.raises(ValueError, match='no training sample'):
        toy([[(2, 0)], [(2, 0)]], unseen_classes=['c'])
