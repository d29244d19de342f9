"""tools/train.py on the Potsdam -> Vaihingen TMT configs, shrunk (a tiny
ViT at 64 px) and otherwise as they are: source training, then vanilla
fine-tuning and its TMT twin from the source checkpoint, on generated data
and, with XATTN_DATA, on the real Potsdam and Vaihingen samples."""

import os
import re
from pathlib import Path

import pytest
from test_tools import TOOLS, check, run

from xattn_mm.testing import make_segmentation_folder

ROOT = Path(__file__).resolve().parents[1]
TMT = ROOT / 'configs' / 'tmt'
PAIR = '8xb2-20k_potsdam-to-vaihingen-512x512.py'
SOURCE = TMT / 'source_vit-base-p16-upernet_8xb2-80k_potsdam-512x512.py'
VANILLA = TMT / f'vanilla_vit-base-p16-upernet_{PAIR}'
TWIN = TMT / f'tmt_vit-base-p16-upernet_{PAIR}'
XATTN_DATA = os.environ.get('XATTN_DATA')


def tiny_config(
    base: Path,
    source: Path,
    target: Path,
    iters: int,
    size: int,
    load_from: Path = None,
) -> str:
    """``base`` shrunk to a random-init 4-layer ViT at ``size`` px, trained
    on ``source`` (or, when ``load_from`` is set, on ``target``) and
    evaluated on ``target``; ``img_dir`` / ``ann_dir`` folders."""
    tmt = base.name.startswith('tmt_')
    neck = (
        'dict(in_channels=[32] * 4, num_heads=2, pyramid_norm_cfg=norm)'
        if tmt
        else 'dict(embed_dim=32, norm_cfg=norm)'
    )
    train_root = target if load_from else source
    text = f"""_base_ = '{base}'
norm = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(img_size=({size}, {size}), patch_size=8, embed_dims=32,
                  num_layers=4, num_heads=2, out_indices=(0, 1, 2, 3),
                  drop_path_rate=0.0, init_cfg=None),
    neck={neck},
    decode_head=dict(in_channels=[32] * 4, channels=16, pool_scales=(1, 2),
                     norm_cfg=norm),
    auxiliary_head=dict(in_channels=32, channels=16, norm_cfg=norm),
    test_cfg=dict(mode='whole'),
)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=({size}, {size}), ratio_range=(1.0, 1.5),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=({size}, {size})),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=({size}, {size}), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
prefix = dict(img_path='img_dir', seg_map_path='ann_dir')
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(
    batch_size=2,
    dataset=dict(data_root='{train_root}', data_prefix=prefix,
                 pipeline=train_pipeline),
    **loader,
)
val_dataloader = dict(
    dataset=dict(data_root='{target}', data_prefix=prefix,
                 pipeline=test_pipeline),
    **loader,
)
test_dataloader = val_dataloader
train_cfg = dict(max_iters={iters}, val_interval={iters})
param_scheduler = [dict(type='PolyLR', power=1.0, by_epoch=False, begin=0,
                        end={iters})]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval={iters}),
                     visualization=dict(draw=False))
load_from = {f"'{load_from}'" if load_from else None}
"""
    if tmt:
        text += 'model.update(source_checkpoint=load_from)\n'
    return text


def train(text: str, tmp: Path, name: str, *extra) -> str:
    cfg = tmp / f'{name}.py'
    cfg.write_text(text)
    return check(
        run(
            [TOOLS / 'train.py', cfg, '--work-dir', tmp / name, *extra],
            cwd=tmp,
        )
    )


def miou(output: str) -> float:
    values = re.findall(r'mIoU: ([0-9.]+)', output)
    assert values, output[-3000:]
    return float(values[-1])


def source_then_twins(tmp: Path, source: Path, target: Path, size: int):
    """Train the source model, then the vanilla and TMT fine-tunings from
    its checkpoint; return their outputs."""
    output = train(tiny_config(SOURCE, source, target, 4, size), tmp, 'src')
    miou(output)
    checkpoint = tmp / 'src' / 'iter_4.pth'
    assert checkpoint.is_file()
    outputs = {}
    for base in (VANILLA, TWIN):
        name = base.name.split('_')[0]
        text = tiny_config(base, source, target, 3, size, checkpoint)
        outputs[name] = train(text, tmp, name)
        assert f'Load checkpoint from {checkpoint}' in outputs[name]
        assert 0.0 <= miou(outputs[name]) <= 100.0
    return outputs


def test_source_vanilla_and_tmt_train_on_generated_domains(tmp_path):
    source = Path(make_segmentation_folder(
        str(tmp_path / 'potsdam'), num_classes=6, num_images=4,
        image_size=(64, 64), seed=0))  # fmt: skip
    target = Path(make_segmentation_folder(
        str(tmp_path / 'vaihingen'), num_classes=6, num_images=4,
        image_size=(64, 64), seed=1))  # fmt: skip
    outputs = source_then_twins(tmp_path, source, target, 64)
    # Only the TMA blocks are new to the source checkpoint; the pyramid
    # weights load into the TMA neck.
    missing = re.search(r'missing keys in source state_dict: (.*)', outputs[
        'tmt'])[1].split(', ')  # fmt: skip
    assert missing and all(k.startswith('neck.blocks.') for k in missing)
    assert 'missing keys' not in outputs['vanilla']


@pytest.mark.slow
@pytest.mark.skipif(
    not XATTN_DATA, reason='XATTN_DATA (the shared real samples) is not set'
)
def test_potsdam_to_vaihingen_real_samples(tmp_path):
    samples = Path(XATTN_DATA).resolve() / 'seg_samples'
    source_then_twins(
        tmp_path, samples / 'potsdam', samples / 'vaihingen', 128
    )


def test_gta5_label_ids_become_cityscapes_train_ids(tmp_path):
    import cv2
    import numpy as np

    labels = tmp_path / 'gta5' / 'labels'
    labels.mkdir(parents=True)
    ids = np.array([[7, 8, 26, 33], [0, 9, 34, 255]], dtype=np.uint8)
    cv2.imwrite(str(labels / '00001.png'), ids)
    output = check(
        run(
            [TOOLS / 'data' / 'gta5_train_ids.py', tmp_path / 'gta5'],
            cwd=tmp_path,
        )  # fmt: skip
    )
    assert 'Wrote 1 _labelTrainIds.png files' in output
    train_ids = cv2.imread(
        str(labels / '00001_labelTrainIds.png'), cv2.IMREAD_UNCHANGED
    )
    expected = [[0, 1, 13, 18], [255, 255, 255, 255]]
    assert train_ids.tolist() == expected
    # A rerun skips the written maps.
    output = check(
        run(
            [TOOLS / 'data' / 'gta5_train_ids.py', tmp_path / 'gta5'],
            cwd=tmp_path,
        )  # fmt: skip
    )
    assert 'Wrote 1 ' in output
    missing = run([TOOLS / 'data' / 'gta5_train_ids.py', tmp_path / 'none'],
                  cwd=tmp_path)  # fmt: skip
    assert missing.returncode != 0
    assert 'expected the extracted GTA5 dataset' in missing.stderr
