"""The IA-DETR configs' real one-shot protocol through tools/train.py,
tools/test.py and the distributed launchers, on the shared real data
(COCO128 train/val with COCO split 1, the VOC samples).

The configs run as they are (datasets, pipelines, metric, schedule, hooks)
with two changes: the model is shrunk (a tiny Swin V2 in the official
layout) and the runs are a few iterations long. The data the configs
expect (``data/coco/{annotations,train2017,val2017}``, ``data/VOCdevkit``)
are symlinks to ``XATTN_DATA``; nothing is copied. COCO128 has no CoAE
reference pools: ``data/coco/ref_ann_file/`` gets pools in BHRL's format
holding every non-crowd object.
"""

import json
import os
import pickle
import re
from collections import defaultdict
from pathlib import Path

import pytest
from mmengine.config import Config
from test_tools import TOOLS, check, run

from xattn_mm.testing.configs import shrink

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get('XATTN_DATA')
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not DATA, reason='XATTN_DATA (the shared real datasets) is not set'
    ),
]


def shrunk_config(tmp: Path, config: str, iters: int = 3) -> Path:
    """A config inheriting ``configs/ia_detr/<config>`` with a tiny model
    and an ``iters``-iteration schedule."""
    shipped = Config.fromfile(str(ROOT / 'configs' / 'ia_detr' / config))
    model = shrink(shipped.model).to_dict()
    model['_delete_'] = True
    loader = dict(batch_size=2, num_workers=0, persistent_workers=False)
    text = f"""
_base_ = {str(ROOT / 'configs' / 'ia_detr' / config)!r}
model = {model!r}
load_from = None
train_dataloader = {loader!r}
val_dataloader = {loader!r}
test_dataloader = {loader!r}
train_cfg = dict(
    _delete_=True, type='IterBasedTrainLoop', max_iters={iters},
    val_interval=1000)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, end={iters})]
default_hooks = dict(
    checkpoint=dict(by_epoch=False, interval={iters}),
    logger=dict(interval=1))
log_processor = dict(by_epoch=False)
"""
    path = tmp / f'shrunk_{config}'
    path.write_text(text)
    return path


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp('one_shot_tools')
    data = Path(DATA).resolve()  # XATTN_DATA may be relative (CI's is)
    coco = root / 'data' / 'coco'
    (coco / 'ref_ann_file').mkdir(parents=True)
    for name in ('annotations', 'train2017', 'val2017'):
        (coco / name).symlink_to(data / 'coco128' / name)
    for split in ('train', 'val'):
        with open(coco / 'annotations' / f'instances_{split}2017.json') as f:
            anns = json.load(f)['annotations']
        pool = defaultdict(list)
        for a in anns:
            if not a['iscrowd']:
                pool[a['category_id']].append(dict(id=a['id']))
        path = coco / 'ref_ann_file' / f'id_ref_instances_{split}2017.pkl'
        with open(path, 'wb') as f:
            pickle.dump(dict(pool), f)
    (root / 'data' / 'VOCdevkit').symlink_to(data / 'VOCdevkit')
    return root


def metrics_of(output: str) -> dict:
    found = dict(re.findall(r'oneshot/(\w+): ([0-9.]+)', output))
    return {k: float(v) for k, v in found.items()}


def test_coco128_split1_train_then_test_with_the_protocol(workspace):
    cfg = shrunk_config(workspace, 'coco_oneshot_split1.py')
    work = workspace / 'coco_single'
    output = check(
        run([TOOLS / 'train.py', cfg, '--work-dir', work], cwd=workspace)
    )
    # The wrapper indexed COCO128 train2017 under split 1 and trained.
    assert 'Iter(train) [3/3]' in output
    assert (work / 'iter_3.pth').is_file()
    output = check(
        run(
            [TOOLS / 'test.py', cfg, work / 'iter_3.pth', '--work-dir', work],
            cwd=workspace,
        )
    )
    metrics = metrics_of(output)
    # Unseen classes only (the default), five draws, averaged.
    assert 'unseen_AP50' in metrics and 'seen_AP50' not in metrics
    assert {f'draw{k}_unseen_AP50' for k in range(5)} <= set(metrics)
    assert 0.0 <= metrics['unseen_AP50'] <= 1.0
    # The per-class table lists split-1 unseen classes, e.g. person.
    assert re.search(r'\| person +\| unseen', output)


def test_voc_train_then_test_seen_classes(workspace):
    cfg = shrunk_config(workspace, 'voc_oneshot.py')
    work = workspace / 'voc'
    # The VOC2007 samples hold no unseen object (data README): there is no
    # unseen-class validation set to build, and the test runs the seen-class
    # variant of the protocol.
    no_val = ['val_cfg=None', 'val_dataloader=None', 'val_evaluator=None']
    output = check(
        run(
            [
                TOOLS / 'train.py',
                cfg,
                '--work-dir',
                work,
                '--cfg-options',
                *no_val,
            ],
            cwd=workspace,
        )
    )
    assert 'Iter(train) [3/3]' in output
    seen_cfg = shrunk_config(
        workspace, 'ia-detr_swinv2-s_8xb2-12e_voc-oneshot-seen.py'
    )
    output = check(
        run(
            [
                TOOLS / 'test.py',
                seen_cfg,
                work / 'iter_3.pth',
                '--work-dir',
                work,
            ],
            cwd=workspace,
        )
    )
    metrics = metrics_of(output)
    assert 'seen_AP50' in metrics and 'unseen_AP50' not in metrics
    assert re.search(r'\| person +\| seen', output)
    # The unseen-class test set of these samples is empty: a clear error.
    output = run(
        [TOOLS / 'test.py', cfg, work / 'iter_3.pth', '--work-dir', work],
        cwd=workspace,
    )
    assert output.returncode != 0
    assert 'OneShotDataset has no test sample' in output.stderr


def test_coco128_split1_dist_train_and_test_two_processes(workspace):
    cfg = shrunk_config(workspace, 'coco_oneshot_split1.py', iters=2)
    work = workspace / 'coco_dist'
    output = check(
        run(
            [TOOLS / 'dist_train.sh', cfg, 2, '--work-dir', work],
            cwd=workspace,
        )
    )
    assert 'using the gloo backend' in output
    (scalars,) = work.glob('*/vis_data/scalars.json')  # one run so far
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    assert [r['step'] for r in records if 'loss' in r] == [1, 2]
    output = check(
        run(
            [
                TOOLS / 'dist_test.sh',
                cfg,
                work / 'iter_2.pth',
                2,
                '--work-dir',
                work,
                '--cfg-options',
                'test_dataloader.dataset.draws=[0]',
            ],
            cwd=workspace,
        )
    )
    metrics = metrics_of(output)
    assert (
        'draw0_unseen_AP50' in metrics and 'draw1_unseen_AP50' not in metrics
    )
