import importlib.util
from pathlib import Path

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS

import xattn_mm.cls  # noqa: F401
from xattn_mm.testing.amp import AMP_DTYPES, autocast_parity

ROOT = Path(__file__).resolve().parents[2]
ARCH = dict(embed_dims=32, num_layers=4, num_heads=4, feedforward_channels=64)


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    init_default_scope('mmpretrain')


def vit_cfg(type='VisionTransformer', **kwargs):
    cfg = dict(type=type, arch=ARCH, img_size=32, patch_size=8)
    cfg.update(kwargs)
    return cfg


def build(p=1.0, draw='batch', backbone=None, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = MODELS.build(
        dict(
            type='StochCA',
            backbone=backbone or vit_cfg(),
            p=p,
            draw=draw,
            **kwargs,
        )
    )
    model.init_weights()
    return model


def perturb(module, seed=1, scale=0.2):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * scale)


def force_draw(model, draw):
    model.draw_blocks = lambda batch_size: draw


def images(batch=3, seed=5):
    return torch.randn(
        batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)
    )


def count_teacher_blocks(model):
    calls = []
    handles = [
        model.teacher.patch_embed.register_forward_hook(
            lambda *a: calls.append('embed')
        )
    ]
    for i, layer in enumerate(model.teacher.layers):
        handles.append(
            layer.ln1.register_forward_hook(lambda *a, i=i: calls.append(i))
        )
    return calls


def test_p0_is_the_plain_backbone_outputs_and_gradients():
    cfg = vit_cfg(drop_rate=0.1, drop_path_rate=0.2)
    model = build(p=0.0, backbone=cfg)
    plain = MODELS.build(cfg)
    plain.load_state_dict(model.backbone.state_dict())
    assert model.teacher is None  # p = 0 never needs it
    model.train()
    plain.train()
    x = images()
    torch.manual_seed(3)
    ours = model(x)[0]
    torch.manual_seed(3)
    ref = plain(x)[0]
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    ours.square().sum().backward()
    ref.square().sum().backward()
    for (name, a), b in zip(
        model.backbone.named_parameters(), plain.parameters()
    ):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize(
    'backbone',
    [
        vit_cfg(),
        vit_cfg(out_type='featmap', out_indices=(1, 3)),
        vit_cfg(out_type='avg_featmap', qkv_bias=False),
        # CLIP-style: pre-norm, no patch bias.
        vit_cfg(pre_norm=True, final_norm=False, out_type='raw'),
        vit_cfg(type='DistilledVisionTransformer'),
        vit_cfg(layer_scale_init_value=0.1),
    ],
)
@pytest.mark.parametrize('draw', ['batch', 'sample'])
def test_p1_with_teacher_equal_to_student_is_self_attention(backbone, draw):
    model = build(p=1.0, draw=draw, backbone=backbone)
    model.train()
    x = images()
    ours = model(x)
    assert bool(model.last_draw.all())
    ref = model.backbone(x)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        for u, v in zip(
            a if isinstance(a, tuple) else (a,),
            b if isinstance(b, tuple) else (b,),
        ):
            torch.testing.assert_close(u, v, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('draw', ['batch', 'sample'])
def test_p1_with_different_teacher_differs_and_trains_the_student(draw):
    model = build(p=1.0, draw=draw)
    perturb(model.teacher)
    model.train()
    x = images()
    out = model(x)[0]
    ref = model.backbone(x)[0]
    assert (out - ref).abs().max() > 1e-3
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())
    # Cross-attention replaces the block's own keys and values: with every
    # block drawn, the key/value rows of the student's qkv get no gradient.
    dims = ARCH['embed_dims']
    for layer in model.backbone.layers:
        grad = layer.attn.qkv.weight.grad
        assert grad[:dims].abs().sum() > 0
        assert grad[dims:].abs().sum() == 0


def test_cross_attention_uses_the_teachers_keys_and_values_at_each_block():
    model = build(p=1.0)
    perturb(model.teacher)
    model.train()
    x = images()
    force_draw(model, torch.tensor([False, False, True, False]))
    # Hand-built reference: block 2 attends from the student's queries to
    # the teacher's block-2 keys / values, explicit softmax.
    teacher, student = model.teacher, model.backbone
    with torch.no_grad():
        th = (
            torch.cat(
                [
                    teacher.cls_token.expand(3, -1, -1),
                    teacher.patch_embed(x)[0],
                ],
                1,
            )
            + teacher.pos_embed
        )
        for layer in teacher.layers[:2]:
            th = layer(th)
        tn = teacher.layers[2].ln1(th)
        tqkv = teacher.layers[2].attn.qkv(tn).unflatten(-1, (3, 4, 8))
        h = (
            torch.cat(
                [
                    student.cls_token.expand(3, -1, -1),
                    student.patch_embed(x)[0],
                ],
                1,
            )
            + student.pos_embed
        )
        for layer in student.layers[:2]:
            h = layer(h)
        blk = student.layers[2]
        q = blk.attn.qkv(blk.ln1(h)).unflatten(-1, (3, 4, 8))[:, :, 0]
        k, v = tqkv[:, :, 1], tqkv[:, :, 2]
        w = torch.einsum('bqhd,bkhd->bhqk', q, k).mul(8**-0.5).softmax(-1)
        ca = torch.einsum('bhqk,bkhd->bqhd', w, v).flatten(2)
        h = h + blk.attn.proj(ca)
        h = blk.ffn(blk.ln2(h), identity=h)
        h = student.ln1(student.layers[3](h))
        out = model(x)[0]
    torch.testing.assert_close(out, h[:, 0], atol=1e-5, rtol=1e-5)


def test_sample_draw_mixes_per_sample():
    model = build(p=1.0, draw='sample')
    perturb(model.teacher)
    model.train()
    x = images(batch=2)
    draw = torch.tensor(
        [[True, False], [False, False], [True, False], [False, False]]
    )
    force_draw(model, draw)
    mixed = model(x)[0]
    force_draw(model, torch.ones(4, 2, dtype=torch.bool) & draw[:, :1])
    cross = model(x)[0]
    plain = model.backbone(x)[0]
    torch.testing.assert_close(mixed[0], cross[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[1], plain[1], atol=1e-5, rtol=1e-5)
    assert (cross[0] - plain[0]).abs().max() > 1e-3


def test_eval_mode_never_runs_the_teacher():
    model = build(p=1.0)
    calls = count_teacher_blocks(model)
    model.eval()
    x = images()
    with torch.no_grad():
        out = model(x)[0]
    assert calls == []
    torch.testing.assert_close(out, model.backbone(x)[0], rtol=0, atol=0)
    model.train()
    model(x)
    assert calls[0] == 'embed' and len(calls) == 5


def test_teacher_runs_only_as_deep_as_the_deepest_drawn_block():
    model = build(p=0.5)
    calls = count_teacher_blocks(model)
    model.train()
    x = images()
    force_draw(model, torch.tensor([False, True, False, False]))
    model(x)
    assert calls == ['embed', 0, 1]
    calls.clear()
    force_draw(model, torch.zeros(4, dtype=torch.bool))
    model(x)
    assert calls == []


def test_truncated_teacher_gives_the_keys_values_of_a_full_run():
    model = build(p=1.0)
    perturb(model.teacher)
    x = images()
    captured = {}
    for i, layer in enumerate(model.teacher.layers):
        layer.attn.qkv.register_forward_hook(
            lambda m, inp, out, i=i: captured.__setitem__(i, out)
        )
    with torch.no_grad():
        model.teacher(x)
    full = {i: captured[i].chunk(3, -1)[1:] for i in range(4)}
    for layers in ([1], [0, 2], [3]):
        partial = model.teacher_keys_values(x, layers)
        assert sorted(partial) == layers
        for i in layers:
            for a, b in zip(partial[i], full[i]):
                torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_teacher_is_frozen_hidden_and_stays_in_eval():
    model = build(p=0.3)
    teacher = model.teacher
    model.train()
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not teacher_ids & {id(p) for p in model.parameters()}
    assert all(k.startswith('backbone.') for k in model.state_dict())
    for a, b in zip(
        teacher.state_dict().values(), model.backbone.state_dict().values()
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # It follows the student's dtype (and device).
    model.double()
    assert next(teacher.parameters()).dtype == torch.float64


def draw_sequence(model, iterations, hub_name, per_iter=2):
    hub = MessageHub.get_instance(hub_name)
    seq = []
    for it in iterations:
        hub.update_info('iter', it)
        seq += [model.draw_blocks(3) for _ in range(per_iter)]
    return torch.stack(seq)


def test_draws_follow_seed_and_iteration_on_their_own_generator():
    model = build(p=0.5)  # seed: torch.initial_seed() at init_weights
    assert model.seed == 0
    state = torch.get_rng_state()
    first = draw_sequence(model, range(4), 'draws-a')
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert len({tuple(d.tolist()) for d in first}) > 2  # calls differ
    # A resumed run (same seed, same iterations) repeats the draws.
    resumed = build(p=0.5)
    assert torch.equal(draw_sequence(resumed, [2, 3], 'draws-b'), first[4:])
    other = build(p=0.5, seed=3)  # torch seed 3: draw seed 3
    assert other.seed == 3
    assert not torch.equal(draw_sequence(other, range(4), 'draws-c'), first)
    # p is the per-block rate.
    rate = draw_sequence(model, range(250), 'draws-d').float().mean()
    assert abs(float(rate) - 0.5) < 0.05
    assert build(p=0.5, draw='sample').draw_blocks(6).shape == (4, 6)


@pytest.mark.parametrize('draw', ['batch', 'sample'])
def test_simulated_ranks_agree_in_batch_mode_and_differ_per_sample(
    draw, monkeypatch
):
    from xattn_mm.cls.models.backbones import stoch_ca

    ranks = []
    for rank in (0, 1):
        monkeypatch.setattr(stoch_ca, 'get_rank', lambda rank=rank: rank)
        model = build(p=0.5, draw=draw, seed=11)
        ranks.append(draw_sequence(model, [7, 8], f'ranks-{draw}-{rank}'))
    assert torch.equal(ranks[0], ranks[1]) == (draw == 'batch')


def test_teacher_checkpoint(tmp_path):
    source = build(p=0.0, seed=3)
    path = tmp_path / 'teacher.pth'
    torch.save(
        {
            'state_dict': {
                f'backbone.{k}': v
                for k, v in source.backbone.state_dict().items()
            }
        },
        path,
    )
    model = build(p=0.2, seed=0, teacher_checkpoint=str(path))
    for a, b in zip(
        model.teacher.state_dict().values(),
        source.backbone.state_dict().values(),
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    bare = tmp_path / 'bare.pth'
    torch.save(source.backbone.state_dict(), bare)
    build(p=0.2, teacher_checkpoint=str(bare))
    wrong = tmp_path / 'wrong.pth'
    torch.save(
        {'state_dict': {'backbone.layers.0.foo': torch.zeros(1)}}, wrong
    )
    with pytest.raises(ValueError, match='wrong.pth'):
        build(p=0.2, teacher_checkpoint=str(wrong))
    # A teacher of another width: the file, the tensor and both shapes.
    wide = build(p=0.0, backbone=vit_cfg(arch=dict(ARCH, embed_dims=48)))
    other = tmp_path / 'other_width.pth'
    torch.save(wide.backbone.state_dict(), other)
    with pytest.raises(ValueError, match=r'other_width\.pth.*\(1, 1, 48\)'):
        build(p=0.2, teacher_checkpoint=str(other))


def test_pretrained_teacher_starts_equal_and_only_the_student_learns(
    tmp_path,
):
    source = build(p=0.0, seed=3)
    path = tmp_path / 'pretrained.pth'
    torch.save(
        {
            'state_dict': {
                f'backbone.{k}': v
                for k, v in source.backbone.state_dict().items()
            }
        },
        path,
    )
    init = dict(type='Pretrained', checkpoint=str(path), prefix='backbone.')
    model = build(p=1.0, backbone=vit_cfg(init_cfg=init))
    for a, b in zip(model.teacher.parameters(), source.backbone.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    model(images())[0].sum().backward()
    optim.step()
    for a, b in zip(model.teacher.parameters(), source.backbone.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(
        model.backbone.layers[0].attn.qkv.weight,
        source.backbone.layers[0].attn.qkv.weight,
    )


def test_train_without_init_weights_is_a_clear_error():
    model = MODELS.build(dict(type='StochCA', backbone=vit_cfg(), p=1.0))
    model.train()
    with pytest.raises(RuntimeError, match='init_weights'):
        model(images())


def test_layer_depth_is_delegated():
    model = build(p=0.1)
    assert model.get_layer_depth(
        'backbone.backbone.layers.2.attn.qkv.weight', 'backbone.'
    ) == (3, 6)
    assert model.get_layer_depth(
        'backbone.backbone.cls_token', 'backbone.'
    ) == (0, 6)


@pytest.mark.parametrize(
    'kwargs, error, match',
    [
        (dict(p=1.5), ValueError, 'p must be in'),
        (dict(p='0.1'), TypeError, 'p must be a float'),
        (dict(draw='token'), ValueError, 'draw must be one of'),
        (dict(backbone='vit'), TypeError, 'config dict'),
        (dict(teacher_checkpoint=3), TypeError, 'teacher_checkpoint'),
        (dict(seed=-1), TypeError, 'seed must be an int'),
        (
            dict(
                backbone=dict(type='SwinTransformer', arch='tiny', img_size=32)
            ),
            TypeError,
            'got SwinTransformer',
        ),
        (
            dict(
                backbone=dict(
                    type='DeiT3', arch=dict(ARCH), img_size=32, patch_size=8
                )
            ),
            TypeError,
            'DeiT3',
        ),
        (
            dict(
                backbone=vit_cfg(
                    type='DistilledVisionTransformer', pre_norm=True
                )
            ),
            TypeError,
            'pre_norm',
        ),
    ],
)
def test_invalid_arguments(kwargs, error, match):
    cfg = dict(type='StochCA', backbone=vit_cfg())
    cfg.update(kwargs)
    with pytest.raises(error, match=match):
        MODELS.build(cfg)


def test_export_loads_strictly_into_the_plain_classifier():
    path = ROOT / 'tools' / 'model_converters' / 'stoch_ca_to_plain.py'
    spec = importlib.util.spec_from_file_location('stoch_ca_to_plain', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    export = tool.export_state_dict
    head = dict(type='LinearClsHead', num_classes=3, in_channels=32)
    torch.manual_seed(0)
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(type='StochCA', p=0.5, backbone=vit_cfg()),
            head=head,
        )
    )
    model.init_weights()
    perturb(model.backbone.backbone, seed=4)  # "fine-tuned"
    plain = MODELS.build(
        dict(type='ImageClassifier', backbone=vit_cfg(), head=head)
    )
    plain.load_state_dict(export(model.state_dict()), strict=True)
    model.eval()
    plain.eval()
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(
            model(x, mode='tensor'), plain(x, mode='tensor'), rtol=0, atol=0
        )
    with pytest.raises(ValueError, match='not a checkpoint'):
        export(plain.state_dict())


# Measured relative L2 errors against float32 (output, gradients), p = 1:
# fp16 7.7e-4 / 1.4e-3, bf16 7.0e-3 / 1.3e-2 (both draw modes).
AMP_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 0.1}


@pytest.mark.parametrize('dtype', AMP_DTYPES)
@pytest.mark.parametrize('draw', ['batch', 'sample'])
def test_autocast_matches_float32(dtype, draw):
    model = build(p=1.0, draw=draw)
    perturb(model.backbone)  # the teacher's keys differ from the student's
    model.train()
    x = images()
    errors = autocast_parity(model, lambda m: m(x)[-1], dtype)
    assert errors['finite'], errors
    assert errors['output'] < AMP_TOLERANCE[dtype], errors
    assert errors['grad'] < AMP_TOLERANCE[dtype], errors
