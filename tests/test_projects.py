"""Smoke tests of projects/: each config parses, builds shrunk and trains one
iteration; the TMT project runs its whole chain (DACSM checkpoint -> plain
export -> source model -> TMT fine-tuning with that source)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmdet.registry import MODELS as DET_MODELS
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS as CLS_MODELS
from mmseg.registry import MODELS as SEG_MODELS
from test_configs import seg_batch

import xattn_mm.cls  # noqa: F401
import xattn_mm.det  # noqa: F401
import xattn_mm.seg  # noqa: F401
from xattn_mm.cls.models.backbones import StochCA
from xattn_mm.seg.models.segmentors import TMTEncoderDecoder
from xattn_mm.testing.configs import shrink
from xattn_mm.testing.one_shot import one_shot_batch

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = ROOT / 'projects'
STOCH_CA = PROJECTS / 'ia_detr_stoch_ca'
TMT_DACSM = PROJECTS / 'tmt_dacsm_backbone'
LEAVES = sorted(PROJECTS.glob('*/configs/*.py'))


def test_every_project_has_a_readme_and_configs():
    projects = [p for p in PROJECTS.iterdir() if p.is_dir()]
    assert {p.name for p in projects} >= {STOCH_CA.name, TMT_DACSM.name}
    for project in projects:
        assert (project / 'README.md').is_file(), project
        assert list((project / 'configs').glob('*.py')), project


@pytest.mark.parametrize('path', LEAVES, ids=lambda p: p.stem)
def test_configs_import_the_installed_package(path):
    cfg = Config.fromfile(str(path))
    imports = cfg.custom_imports.imports
    assert cfg.custom_imports.allow_failed_imports is False
    assert any(i.startswith('xattn_mm.') for i in imports)
    assert cfg.model.backbone.type.startswith('mmpretrain.')
    text = path.read_text()
    assert 'sys.path' not in text


def test_ia_detr_with_stoch_ca_vit_trains_an_iteration():
    cfg = Config.fromfile(
        str(
            STOCH_CA
            / 'configs/ia-detr_stoch-ca-vit-base-p16_8xb2-12e_voc-oneshot.py'
        )
    )
    # Cross-host: mmpretrain types, both xattn_mm subpackages imported.
    assert set(cfg.custom_imports.imports) >= {'xattn_mm.det', 'xattn_mm.cls'}
    backbone = cfg.model.backbone
    assert backbone.type == 'mmpretrain.StochCA'
    assert backbone.backbone.type == 'mmpretrain.VisionTransformer'
    assert backbone.backbone.init_cfg.checkpoint == cfg.pretrained
    assert not cfg.custom_hooks  # no backbone freezing with StochCA
    model_cfg = shrink(cfg.model)
    model_cfg.backbone.p = 1.0  # every block cross-attends in training
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        model = DET_MODELS.build(model_cfg)
        model.init_weights()
        assert isinstance(model.backbone, StochCA)
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        before = {k: v.clone() for k, v in model.backbone.named_parameters()}
        data = one_shot_batch(
            sizes=((64, 64), (48, 64)), num_boxes=(2, 1), seed=1
        )
        losses = model.train_step(data, wrapper)
    assert torch.isfinite(sum(losses.values()))
    changed = [
        k
        for k, v in model.backbone.named_parameters()
        if not torch.equal(v, before[k])
    ]
    assert changed, 'the StochCA student did not train'
    # The frozen teacher is not a parameter of the detector.
    assert set(before) == {k for k, _ in model.backbone.named_parameters()}


def export_tiny_dacsm(tmp_path: Path, arch: dict) -> Path:
    """A random tiny DACSM model's checkpoint (DAT backbone + CSM head keys),
    exported by tools/model_converters/dacsm_to_plain.py."""
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dat = CLS_MODELS.build(
            dict(
                type='DAT',
                arch=arch,
                img_size=64,
                patch_size=8,
                cosine_attention=True,
            )
        )
    state = {f'backbone.{k}': v for k, v in dat.state_dict().items()}
    state['head.fc.weight'] = torch.randn(12, arch['embed_dims'])
    src, dst = tmp_path / 'dacsm_stage2.pth', tmp_path / 'dacsm_plain.pth'
    torch.save(dict(state_dict=state, meta={}), src)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / 'tools/model_converters/dacsm_to_plain.py'),
            str(src),
            str(dst),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dst


def test_tmt_on_the_dacsm_backbone_chain(tmp_path):
    configs = TMT_DACSM / 'configs'
    source_cfg = Config.fromfile(
        str(
            configs
            / 'source_dacsm-deit-base-p16-upernet_8xb2-80k_gta5-512x1024.py'
        )
    )
    tmt_cfg = Config.fromfile(
        str(
            configs / 'tmt_dacsm-deit-base-p16-upernet_8xb2-20k_gta5-to-'
            'cityscapes-512x1024.py'
        )
    )
    # The TMT leaf fine-tunes from, and takes ACTE's source model from, the
    # project's own source run.
    assert tmt_cfg.model.type == 'TMTEncoderDecoder'
    assert tmt_cfg.load_from == tmt_cfg.model.source_checkpoint
    assert source_cfg.filename.split('/')[-1][:-3] in tmt_cfg.load_from
    assert tmt_cfg.model.backbone == source_cfg.model.backbone
    keys = source_cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert keys.ln1.decay_mult == keys.ln2.decay_mult == 0.0

    plain = export_tiny_dacsm(
        tmp_path,
        dict(
            embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64
        ),
    )
    num_classes = source_cfg.model.decode_head.num_classes
    with DefaultScope.overwrite_default_scope('mmseg'):
        # Step 3: the source model starts from the DACSM-adapted backbone.
        # shrink drops init_cfg: the DACSM-adapted weights go back in
        init = dict(source_cfg.model.backbone.init_cfg, checkpoint=str(plain))
        model_cfg = shrink(source_cfg.model)
        model_cfg.backbone.init_cfg = init
        torch.manual_seed(0)
        source = SEG_MODELS.build(model_cfg)
        source.init_weights()
        exported = torch.load(plain, weights_only=True)['state_dict']
        torch.testing.assert_close(
            source.backbone.layers[3].ffn.layers[1].weight,
            exported['backbone.layers.3.ffn.layers.1.weight'],
        )
        optim = build_optim_wrapper(source, source_cfg.optim_wrapper)
        losses = source.train_step(seg_batch(num_classes), optim)
        assert torch.isfinite(losses['decode.loss_ce'])
        checkpoint = tmp_path / 'source.pth'
        torch.save(dict(state_dict=source.state_dict()), checkpoint)

        # Step 4: TMT fine-tuning, ACTE reading that source model.
        model_cfg = shrink(tmt_cfg.model)
        model_cfg.backbone.init_cfg = init
        model_cfg.source_checkpoint = str(checkpoint)
        tmt = SEG_MODELS.build(model_cfg)
        assert isinstance(tmt, TMTEncoderDecoder)
        tmt.init_weights()
        missing = tmt.load_state_dict(
            torch.load(checkpoint, weights_only=True)['state_dict'],
            strict=False,
        ).missing_keys
        assert missing and all(k.startswith('neck.blocks.') for k in missing)
        optim = build_optim_wrapper(tmt, tmt_cfg.optim_wrapper)
        losses = tmt.train_step(seg_batch(num_classes), optim)
        assert torch.isfinite(losses['decode.loss_ce'])
        # ACTE ran with the source model, loaded from the source run.
        torch.testing.assert_close(
            tmt.source_model.backbone.layers[3].ffn.layers[1].weight,
            source.backbone.layers[3].ffn.layers[1].weight,
        )
