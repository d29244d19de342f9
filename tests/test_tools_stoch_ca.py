"""tools/train.py and tools/test.py on the StochCA configs, shrunk (a tiny
ViT at 32 px, a few iterations) and otherwise as they are: the DomainBed
protocol on generated domains (shapes drawn in three styles), its plain
fine-tuning twin, the teacher-free export read back by the twin, and, with
XATTN_DATA, the transfer protocol on object crops of COCO128."""

import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from test_tools import TOOLS, check, run

from xattn_mm.cls.testing import write_tiny_vit_checkpoint
from xattn_mm.testing import crop_coco_objects, make_multi_domain_folder
from xattn_mm.testing.configs import multi_domain_leaf, write_shrunk_config

ROOT = Path(__file__).resolve().parents[1]
DG = ROOT / 'configs' / 'stoch_ca' / 'domain_generalization'
TRANSFER = ROOT / 'configs' / 'stoch_ca' / 'transfer'
DG_STEM = 'vit-base-p16_1xb32-5001it_pacs-sketch'
TRANSFER_STEM = 'vit-base-p16_1xb16-10k_dogs-448px-15pct'
XATTN_DATA = os.environ.get('XATTN_DATA')

COMMON = """
default_hooks = dict(
    logger=dict(interval=1), checkpoint=dict(interval={iters})
)
train_cfg = dict(max_iters={iters}, val_interval={val})
"""


def domainbed_config(tmp: Path, kind: str, root: Path, pretrained) -> Path:
    """The shipped PACS config, shrunk, on the three-domain folder."""
    base = write_shrunk_config(
        str(DG / f'{kind}_{DG_STEM}.py'),
        str(tmp / f'{kind}_domainbed_shrunk.py'),
        pretrained,
    )
    text = multi_domain_leaf(base, str(root)) + COMMON.format(iters=6, val=3)
    path = tmp / f'{kind}_domainbed_tiny.py'
    path.write_text(text)
    return path


def metrics_of(output: str, prefix: str) -> dict:
    found = re.findall(rf'{prefix}/(\w+): ([0-9.]+)', output)
    return {k: float(v) for k, v in found}


@pytest.fixture(scope='module')
def domainbed_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('stoch_ca_dg')
    root = make_multi_domain_folder(
        str(tmp / 'domains'),
        ['photo', 'sketch', 'cartoon'],
        images_per_class=10,
    )
    pretrained = write_tiny_vit_checkpoint(tmp / 'pretrained.pth')
    runs = {}
    for kind in ('stochca', 'finetune'):
        cfg = domainbed_config(tmp, kind, Path(root), pretrained)
        work = tmp / kind
        output = check(
            run([TOOLS / 'train.py', cfg, '--work-dir', work], cwd=tmp)
        )
        runs[kind] = (cfg, work, output)
    return tmp, runs


@pytest.mark.slow
def test_domainbed_stoch_ca_and_its_twin_train(domainbed_runs):
    _, runs = domainbed_runs
    for kind, (_, work, output) in runs.items():
        assert 'Iter(train) [6/6]' in output
        metrics = metrics_of(output, 'domain')
        # Hold-outs of photo and cartoon select; sketch is the test domain.
        assert {'photo', 'cartoon', 'sketch', 'train_val', 'test'} <= set(
            metrics
        ), kind
        assert (work / 'iter_6.pth').is_file()
        assert list(work.glob('best_domain_train_val_iter_*.pth')), kind
    # StochCA built its teacher from the pretrained weights; the baseline
    # has none.
    assert 'StochCA: the teacher copies' not in runs['stochca'][2]


@pytest.mark.slow
def test_exported_checkpoint_runs_in_the_plain_twin(domainbed_runs):
    tmp, runs = domainbed_runs
    cfg, work, _ = runs['stochca']
    plain_cfg = runs['finetune'][0]
    checkpoint = work / 'iter_6.pth'
    exported = tmp / 'exported.pth'
    check(
        run(
            [
                TOOLS / 'model_converters' / 'stoch_ca_to_plain.py',
                checkpoint,
                exported,
            ],
            cwd=tmp,
        )
    )
    state = torch.load(exported, weights_only=True)['state_dict']
    assert not any(k.startswith('backbone.backbone.') for k in state)
    outputs = {}
    # The training checkpoint (message hub, random states) and the export
    # (weights) both load under the checkpoint policy with no flag.
    for name, config, ckpt in (
        ('stochca', cfg, checkpoint),
        ('plain', plain_cfg, exported),
    ):
        out = tmp / f'{name}.pkl'
        output = check(
            run(
                [
                    TOOLS / 'test.py',
                    config,
                    ckpt,
                    '--work-dir',
                    tmp / f'test_{name}',
                    '--out',
                    out,
                ],
                cwd=tmp,
            )
        )
        assert 'missing keys' not in output and 'unexpected key' not in output
        with open(out, 'rb') as f:
            outputs[name] = (pickle.load(f), metrics_of(output, 'domain'))
    (ours, ours_metrics), (plain, plain_metrics) = outputs.values()
    assert ours_metrics == plain_metrics and 'test' in ours_metrics
    assert len(ours) == len(plain) == 30  # the whole sketch domain
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a['pred_score'], b['pred_score'])


@pytest.mark.slow
@pytest.mark.skipif(
    XATTN_DATA is None, reason='XATTN_DATA (real COCO128 images) is not set'
)
@pytest.mark.parametrize('kind', ['stochca', 'finetune'])
def test_transfer_protocol_on_coco128_object_crops(kind, tmp_path):
    coco = Path(XATTN_DATA).resolve() / 'coco128'
    crops = tmp_path / 'crops'
    classes = ['person', 'chair', 'bowl', 'cup']
    for split in ('train2017', 'val2017'):
        counts = crop_coco_objects(
            str(coco / 'annotations' / f'instances_{split}.json'),
            str(coco / split),
            str(crops / split),
            classes,
        )
        assert min(counts.values()) >= 10, counts
    pretrained = write_tiny_vit_checkpoint(tmp_path / 'pretrained.pth')
    base = write_shrunk_config(
        str(TRANSFER / f'{kind}_{TRANSFER_STEM}.py'),
        str(tmp_path / 'shrunk.py'),
        pretrained,
    )
    text = f"""_base_ = '{base}'
train_dataloader = dict(
    batch_size=8,
    dataset=dict(
        ratio=0.5,
        dataset=dict(data_root='{crops}', data_prefix='train2017'),
    ),
)
test = dict(data_root='{crops}', data_prefix='val2017')
val_dataloader = dict(batch_size=32, dataset=test)
test_dataloader = val_dataloader
model = dict(data_preprocessor=dict(num_classes=4), head=dict(num_classes=4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, end=2),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=2, end=4),
]
""" + COMMON.format(iters=4, val=4)
    cfg = tmp_path / 'tiny.py'
    cfg.write_text(text)
    output = check(
        run(
            [TOOLS / 'train.py', cfg, '--work-dir', tmp_path / 'work'],
            cwd=tmp_path,
        )
    )
    assert 'Iter(train) [4/4]' in output
    accuracy = metrics_of(output, 'accuracy')
    assert 'top1' in accuracy and 0.0 <= accuracy['top1'] <= 100.0
