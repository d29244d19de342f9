"""TMT: batched k-means, ACTE, the TMA neck and the TMT segmentor."""

import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import xattn_mm.seg  # noqa: F401
from xattn_mm.engine import AutocastOptimWrapper
from xattn_mm.seg.models import ACTE, RegionMap, TMANeck, batched_kmeans
from xattn_mm.testing.amp import AMP_DTYPES, autocast_parity


@pytest.fixture(autouse=True)
def mmseg_scope():
    # Scoped to each test: a global default scope would break the other
    # hosts' tests that run after these.
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


SIZE = 64
NUM_CLASSES = 3
VIT = dict(
    type='VisionTransformer',
    img_size=(SIZE, SIZE),
    patch_size=8,
    embed_dims=32,
    num_layers=4,
    num_heads=2,
    out_indices=(0, 1, 2, 3),
)
MIT = dict(
    type='MixVisionTransformer',
    embed_dims=16,
    num_layers=[1, 1, 1, 1],
    num_heads=[1, 2, 4, 8],
)
SWIN = dict(
    type='SwinTransformer',
    embed_dims=16,
    depths=[1, 1, 1, 1],
    num_heads=[1, 2, 4, 8],
    window_size=4,
)
UPER = dict(
    type='UPerHead',
    in_index=[0, 1, 2, 3],
    pool_scales=(1, 2),
    channels=16,
    num_classes=NUM_CLASSES,
    norm_cfg=dict(type='BN'),
    loss_decode=dict(type='CrossEntropyLoss'),
)
SEGFORMER = dict(
    type='SegformerHead',
    in_index=[0, 1, 2, 3],
    channels=16,
    num_classes=NUM_CLASSES,
    norm_cfg=dict(type='BN'),
    loss_decode=dict(type='CrossEntropyLoss'),
)
# backbone, its level channels, neck extras, decode head
BACKBONES = {
    'vit+uper': (
        VIT,
        [32] * 4,
        dict(rescales=[4, 2, 1, 0.5], pyramid_norm_cfg=dict(type='BN')),
        UPER,
    ),
    'mit+segformer': (MIT, [16, 32, 64, 128], dict(levels=[2, 3]), SEGFORMER),
    'swin+uper': (SWIN, [16, 32, 64, 128], dict(levels=[2, 3]), UPER),
}


def build_segmentor(name='vit+uper', mode='both', tmt=True, **kwargs):
    backbone, channels, neck_extra, head = BACKBONES[name]
    torch.manual_seed(0)
    if tmt:
        neck = dict(
            type='TMANeck',
            in_channels=channels,
            num_heads=2,
            mode=mode,
            num_global_tokens=1,
            **neck_extra,
        )
        model = dict(
            type='TMTEncoderDecoder',
            neck=neck,
            estimator=dict(type='ACTE', num_regions=3),
            **kwargs,
        )
    else:
        model = dict(type='EncoderDecoder')
        if 'rescales' in neck_extra:
            model['neck'] = dict(
                type='Feature2Pyramid',
                embed_dim=channels[0],
                rescales=neck_extra['rescales'],
                norm_cfg=dict(type='BN'),
            )
    model.update(
        backbone=backbone,
        decode_head=dict(head, in_channels=channels),
        data_preprocessor=dict(type='SegDataPreProcessor', size=(SIZE, SIZE)),
    )
    # mmseg reads test_cfg.mode as an attribute, as from a config file.
    model['test_cfg'] = ConfigDict(mode='whole')
    return MODELS.build(model)


def seg_samples(batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(batch):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(
            data=torch.randint(
                0, NUM_CLASSES, (1, SIZE, SIZE), generator=generator
            )
        )
        sample.set_metainfo(
            dict(
                img_shape=(SIZE, SIZE),
                ori_shape=(SIZE, SIZE),
                pad_shape=(SIZE, SIZE),
            )
        )
        samples.append(sample)
    return samples


def randomise_residuals(neck):
    """New TMA blocks are the identity; tests of the attention need them
    not to be."""
    torch.manual_seed(1)
    for block in neck.blocks.values():
        for layer in (block.attn.out_proj, block.ffn.layers[-2]):
            torch.nn.init.normal_(layer.weight, std=0.2)
            torch.nn.init.normal_(layer.bias, std=0.2)


# -- k-means -----------------------------------------------------------------


def two_clusters(batch=3, tokens=40, dims=6, gap=4.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(batch, tokens, dims, generator=generator) * 0.3
    truth = torch.randint(0, 2, (batch, tokens), generator=generator)
    points[..., 0] += gap * truth
    return points, truth


def same_partition(labels, truth):
    """Labels equal truth up to a permutation of cluster ids, per image."""
    for a, b in zip(labels, truth):
        pairs = set(zip(a.tolist(), b.tolist()))
        if len(pairs) != len(set(b.tolist())) or len(
            {p[0] for p in pairs}
        ) != len(pairs):
            return False
    return True


def test_kmeans_is_deterministic_for_a_seed_and_covers_every_token():
    points = torch.randn(2, 50, 4)
    labels, centers = batched_kmeans(points, 5, num_iters=3, seed=7)
    again, _ = batched_kmeans(points, 5, num_iters=3, seed=7)
    assert torch.equal(labels, again)
    assert labels.shape == (2, 50) and labels.dtype == torch.long
    assert centers.shape == (2, 5, 4)
    assert labels.min() >= 0 and labels.max() < 5
    # Every token lies in exactly one region and its nearest center wins.
    distances = torch.cdist(points, centers)
    assert torch.equal(labels, distances.argmin(-1))
    others = [batched_kmeans(points, 5, 0, seed=s)[0] for s in range(5)]
    assert any(not torch.equal(o, others[0]) for o in others[1:])


def test_kmeans_recovers_well_separated_clusters_in_every_image():
    points, truth = two_clusters()
    labels, _ = batched_kmeans(points, 2, num_iters=5, seed=0)
    assert same_partition(labels, truth)


def test_kmeans_rejects_bad_arguments():
    with pytest.raises(ValueError, match='num_clusters'):
        batched_kmeans(torch.randn(1, 4, 2), 5)
    with pytest.raises(ValueError, match='num_iters'):
        batched_kmeans(torch.randn(1, 4, 2), 2, num_iters=-1)
    with pytest.raises(ValueError, match='points'):
        batched_kmeans(torch.randn(4, 2), 2)


# -- ACTE --------------------------------------------------------------------


def two_textures(batch=2, size=32, patch=4):
    """Images whose left half has horizontal and right half vertical
    stripes, as raw-patch features (B, patch*patch, size/patch,
    size/patch)."""
    rows = torch.arange(size)
    horizontal = (rows[:, None] % 2).expand(size, size).float()
    vertical = (rows[None, :] % 2).expand(size, size).float()
    image = torch.where(rows[None, :] < size // 2, horizontal, vertical)
    image = image + 0.05 * torch.randn(batch, size, size)
    cells = F.unfold(image[:, None], patch, stride=patch)
    grid = size // patch
    return cells.view(batch, patch * patch, grid, grid)


@pytest.mark.parametrize('coord_weight', [0.0, 0.5])
def test_acte_regions_separate_two_textures(coord_weight):
    features = two_textures()
    acte = ACTE(num_regions=2, coord_weight=coord_weight)
    labels = acte.cluster(features)
    half = labels.shape[-1] // 2
    for image in labels:
        left, right = image[:, :half], image[:, half:]
        assert left.unique().numel() == 1 and right.unique().numel() == 1
        assert left[0, 0] != right[0, 0]


def test_acte_is_deterministic_for_a_seed():
    features = torch.randn(2, 8, 6, 6)
    a = ACTE(num_regions=4, seed=3)(features)
    b = ACTE(num_regions=4, seed=3)(features)
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.priority, b.priority)


def halves(batch=2, channels=8, size=8):
    """Features with a distinct left and right half: ACTE's two regions."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(batch, channels, size, size, generator=generator)
    features[:, 0, :, : size // 2] += 6
    features[:, 1, :, size // 2 :] += 6
    return features


def test_transferability_is_higher_where_the_models_agree():
    features = halves()
    source = features.clone()
    half = features.shape[-1] // 2
    source[..., half:] = torch.randn_like(source[..., half:])
    regions = ACTE(num_regions=2, coord_weight=0.0)(features, source)
    left = regions.labels[:, 0, 0]
    right = regions.labels[:, 0, -1]
    rows = torch.arange(len(left))
    assert (left != right).all()
    t = regions.transferability
    assert torch.allclose(t[rows, left], torch.ones(len(left)))
    assert (t[rows, left] > t[rows, right] + 0.2).all()
    # Low transferability -> high priority.
    p = regions.priority
    assert (p[rows, right] > p[rows, left]).all()
    assert regions.uncertainty is None


def test_uncertainty_is_the_mean_normalised_entropy_of_a_region():
    features = halves()
    size = features.shape[-1]
    logits = torch.zeros(2, 4, 4 * size, 4 * size)
    logits[:, 1, :, : 2 * size] = 20.0  # confident left half
    regions = ACTE(
        num_regions=2, coord_weight=0.0, transferability_weight=0.0
    )(features, features, logits)
    rows = torch.arange(2)
    left = regions.labels[:, 0, 0]
    right = regions.labels[:, 0, -1]
    u = regions.uncertainty
    assert torch.allclose(u[rows, right], torch.ones(2), atol=1e-5)
    assert (u[rows, left] < 1e-3).all()
    # w = 0: the priority is the uncertainty alone.
    assert torch.allclose(regions.priority, u)
    token = regions.token_priority()
    assert token.shape == regions.labels.shape
    assert torch.allclose(token[:, :, -1], torch.ones(2, size), atol=1e-5)


def test_priority_combines_both_signals_and_is_zero_without_them():
    features = halves()
    source = torch.randn_like(features)
    logits = torch.randn(2, 3, 16, 16)
    regions = ACTE(num_regions=3, transferability_weight=0.25)(
        features, source, logits
    )
    expected = 0.25 * (1 - regions.transferability) + 0.75 * (
        regions.uncertainty
    )
    assert torch.allclose(regions.priority, expected)
    bare = ACTE(num_regions=3)(features)
    assert bare.priority.shape == (2, 3) and not bare.priority.any()


@pytest.mark.parametrize(
    'kwargs, match',
    [
        (dict(num_regions=0), 'num_regions'),
        (dict(num_iters=-1), 'num_iters'),
        (dict(coord_weight=-1.0), 'coord_weight'),
        (dict(transferability_weight=1.5), 'transferability_weight'),
    ],
)
def test_acte_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ACTE(**kwargs)


def test_acte_rejects_mismatched_inputs():
    acte = ACTE(num_regions=2)
    with pytest.raises(ValueError, match='source_features'):
        acte(torch.randn(1, 4, 4, 4), torch.randn(1, 4, 2, 2))
    with pytest.raises(ValueError, match='logits'):
        acte(torch.randn(1, 4, 4, 4), logits=torch.randn(2, 3, 4, 4))


# -- TMA neck ----------------------------------------------------------------


def reference_block(block, x, labels=None, priority=None):
    """Explicit-softmax TMA block: per-key bias and same-region mask."""
    batch, tokens, channels = x.shape
    heads = block.num_heads
    g = block.num_global_tokens
    if g:
        x = torch.cat((block.global_tokens.expand(batch, -1, -1), x), 1)
    h = block.norm1(x)
    attn = block.attn

    def split(t):
        return t.view(batch, -1, heads, channels // heads).transpose(1, 2)

    q, k, v = (
        split(attn.q_proj(h)),
        split(attn.k_proj(h)),
        split(attn.v_proj(h)),
    )
    logits = q @ k.transpose(-1, -2) / (channels // heads) ** 0.5
    if priority is not None and block.mode in ('bias', 'both'):
        key_priority = torch.cat((torch.zeros(batch, g), priority), 1)
        logits = logits + (
            block.bias_scale[None, :, None, None]
            * key_priority[:, None, None, :]
        )
    if labels is not None and block.mode in ('mask', 'both'):
        region = torch.cat(
            (torch.full((batch, g), -1, dtype=torch.long), labels), 1
        )
        allowed = (region[:, :, None] == region[:, None, :]) | (
            (region < 0)[:, :, None] | (region < 0)[:, None, :]
        )
        logits = logits.masked_fill(~allowed[:, None], float('-inf'))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(batch, -1, channels)
    x = x + attn.out_proj(out)
    x = x + block.ffn.layers(block.norm2(x))
    return x[:, g:]


def build_neck(mode='both', num_global_tokens=2, **kwargs):
    torch.manual_seed(0)
    neck = TMANeck(
        [16, 16],
        num_heads=2,
        mode=mode,
        num_global_tokens=num_global_tokens,
        bias_scale=1.5,
        **kwargs,
    )
    randomise_residuals(neck)
    return neck


def region_map(batch=2, size=4, num_regions=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(
        0, num_regions, (batch, size, size), generator=generator
    )
    priority = torch.rand(batch, num_regions, generator=generator)
    return RegionMap(labels, priority)


def test_new_tma_blocks_are_the_identity():
    neck = TMANeck([16, 16], num_heads=2, mode='both', num_global_tokens=1)
    neck.init_weights()
    inputs = [torch.randn(2, 16, 4, 4) for _ in range(2)]
    outs = neck(inputs, region_map())
    for x, y in zip(inputs, outs):
        assert torch.equal(x, y)


@pytest.mark.parametrize('mode', ['bias', 'mask', 'both'])
def test_neck_with_a_zero_region_map_is_plain_self_attention(mode):
    neck = build_neck(mode)
    inputs = [torch.randn(2, 16, 4, 4) for _ in range(2)]
    zero = RegionMap(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 3))
    with torch.no_grad():
        plain = neck(inputs)
        zeroed = neck(inputs, zero)
        for lvl, x in enumerate(inputs):
            tokens = x.flatten(2).transpose(1, 2)
            expected = reference_block(neck.blocks[str(lvl)], tokens)
            expected = expected.transpose(1, 2).reshape_as(x)
            torch.testing.assert_close(plain[lvl], expected)
            torch.testing.assert_close(zeroed[lvl], expected)


@pytest.mark.parametrize('mode', ['bias', 'mask', 'both'])
def test_neck_matches_the_explicit_reference(mode):
    neck = build_neck(mode)
    x = torch.randn(2, 16, 4, 4)
    regions = region_map()
    with torch.no_grad():
        out = neck([x, x], regions)[0]
        labels = regions.labels.flatten(1)
        priority = regions.priority.gather(1, labels)
        expected = reference_block(
            neck.blocks['0'], x.flatten(2).transpose(1, 2), labels, priority
        )
    torch.testing.assert_close(out, expected.transpose(1, 2).reshape_as(x))


@pytest.mark.parametrize('num_global_tokens', [0, 2])
def test_mask_mode_forbids_cross_region_attention(num_global_tokens):
    regions = region_map()
    labels = regions.labels
    x = torch.randn(2, 16, 4, 4)
    other = x.clone()
    # Change every token outside region 0.
    outside = (labels != 0)[:, None].expand_as(x)
    other[outside] = torch.randn(int(outside.sum()))
    inside = (labels == 0)[:, None].expand_as(x)
    for mode, isolated in (('mask', True), ('both', True), ('bias', False)):
        neck = build_neck(mode, num_global_tokens)
        with torch.no_grad():
            a = neck([x, x], regions)[0]
            b = neck([other, other], regions)[0]
        assert torch.allclose(a[inside], b[inside]) == isolated, mode


def test_bias_raises_attention_to_high_priority_regions():
    neck = build_neck('bias', num_global_tokens=0)
    block = neck.blocks['0']
    x = torch.randn(1, 16, 4, 4)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[..., 2:] = 1
    captured = {}

    def capture(module, args, kwargs):
        captured['bias'] = kwargs['attn_bias']

    block.attn.register_forward_pre_hook(capture, with_kwargs=True)
    neck([x, x], RegionMap(labels, torch.tensor([[0.0, 1.0]])))
    bias = captured['bias']
    assert bias.shape == (1, 2, 1, 16)
    high = labels.flatten() == 1
    assert torch.allclose(bias[0, :, 0, high], torch.tensor(1.5))
    assert torch.equal(bias[0, :, 0, ~high], torch.zeros(2, 8))


@pytest.mark.parametrize('mode', ['bias', 'mask', 'both'])
def test_neck_gradients_reach_every_parameter(mode):
    neck = build_neck(mode)
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    outs = neck([x, x], region_map())
    sum(o.square().sum() for o in outs).backward()
    for name, param in neck.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_neck_rescales_like_feature2pyramid_and_loads_its_weights():
    from mmseg.models.necks import Feature2Pyramid

    pyramid = Feature2Pyramid(16, [4, 2, 1, 0.5], norm_cfg=dict(type='BN'))
    neck = TMANeck(
        [16] * 4,
        num_heads=2,
        rescales=[4, 2, 1, 0.5],
        pyramid_norm_cfg=dict(type='BN'),
    )
    result = neck.load_state_dict(pyramid.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all(k.startswith('blocks.') for k in result.missing_keys)
    neck.eval(), pyramid.eval()
    inputs = [torch.randn(2, 16, 4, 4) for _ in range(4)]
    outs = neck(inputs, region_map())
    assert [tuple(o.shape[-2:]) for o in outs] == [
        (16, 16),
        (8, 8),
        (4, 4),
        (2, 2),
    ]
    for a, b in zip(outs, pyramid(inputs)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    'kwargs, error, match',
    [
        (dict(in_channels=16), TypeError, 'in_channels'),
        (dict(num_heads=[2]), ValueError, 'num_heads'),
        (dict(levels=[5]), ValueError, 'levels'),
        (dict(mode='gate'), ValueError, 'mode'),
        (dict(num_global_tokens=-1), ValueError, 'num_global_tokens'),
        (dict(in_channels=[16, 32], rescales=[1, 2]), ValueError, 'rescales'),
    ],
)
def test_neck_rejects_bad_arguments(kwargs, error, match):
    args = dict(in_channels=[16, 16], num_heads=2)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        TMANeck(**args)


def test_neck_rejects_the_wrong_number_of_levels():
    with pytest.raises(ValueError, match='expects 2 levels'):
        TMANeck([16, 16], num_heads=2)([torch.randn(1, 16, 2, 2)])


# -- segmentor ---------------------------------------------------------------


@pytest.mark.parametrize('name', list(BACKBONES))
def test_segmentor_train_and_predict_with_each_backbone(name):
    model = build_segmentor(name)
    model.init_weights()
    randomise_residuals(model.neck)
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    data = dict(
        inputs=[torch.randint(0, 255, (3, SIZE, SIZE)).float()] * 2,
        data_samples=seg_samples(),
    )
    losses = model.train_step(data, optim)
    assert torch.isfinite(losses['decode.loss_ce'])
    with torch.no_grad():
        inputs = torch.randn(2, 3, SIZE, SIZE)
        features = model.backbone(inputs)
        outs = model.neck(features, model.estimate_regions(inputs, features))
    channels = BACKBONES[name][1]
    assert [o.shape[1] for o in outs] == channels
    if name == 'vit+uper':
        assert [o.shape[-1] for o in outs] == [32, 16, 8, 4]
    else:
        assert [o.shape[-1] for o in outs] == [16, 8, 4, 2]
    model.eval()
    preds = model.val_step(data)
    assert preds[0].pred_sem_seg.data.shape == (1, SIZE, SIZE)
    # The source model is frozen and hidden: not trained, not saved.
    assert model.source_model is not None
    assert not any(p.requires_grad for p in model.source_model.parameters())
    assert not any(k.startswith('_source') for k in model.state_dict())


def test_segmentor_needs_a_tma_neck_and_an_acte():
    with pytest.raises(TypeError, match='TMANeck'):
        MODELS.build(
            dict(
                type='TMTEncoderDecoder',
                backbone=VIT,
                decode_head=dict(UPER, in_channels=[32] * 4),
                neck=dict(
                    type='Feature2Pyramid',
                    embed_dim=32,
                    norm_cfg=dict(type='BN'),
                ),
                estimator=dict(type='ACTE'),
            )
        )


def test_source_checkpoint_of_the_vanilla_twin(tmp_path):
    """A vanilla (Feature2Pyramid) source checkpoint is the source model,
    and loaded into the TMT twin it predicts exactly as the vanilla model:
    TMT fine-tuning starts from the source model."""
    vanilla = build_segmentor(tmt=False)
    vanilla.init_weights()
    vanilla.eval()
    path = str(tmp_path / 'source.pth')
    torch.save(dict(state_dict=vanilla.state_dict()), path)

    model = build_segmentor(source_checkpoint=path, test_with_source=True)
    model.init_weights()
    assert model.source_model is None  # read lazily
    result = model.load_state_dict(vanilla.state_dict(), strict=False)
    assert all(k.startswith('neck.blocks.') for k in result.missing_keys)
    model.eval()
    inputs = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = vanilla._forward(inputs)
        torch.testing.assert_close(model._forward(inputs), expected)
        features, logits = model.source_forward(inputs)
    torch.testing.assert_close(logits, expected)
    # The current model equals the source: every region fully transfers.
    regions = model.estimate_regions(inputs, model.backbone(inputs))
    torch.testing.assert_close(
        regions.transferability, torch.ones_like(regions.transferability)
    )


def test_source_checkpoint_of_another_architecture_is_refused(tmp_path):
    other = build_segmentor('swin+uper', tmt=False)
    path = str(tmp_path / 'swin.pth')
    torch.save(dict(state_dict=other.state_dict()), path)
    model = build_segmentor(source_checkpoint=path)
    with pytest.raises(ValueError, match='swin.pth does not match'):
        model.build_source_model()


def test_inference_without_source_keeps_regions_and_drops_the_bias():
    model = build_segmentor(mode='both')
    model.init_weights()
    model.eval()
    inputs = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        features = model.backbone(inputs)
        regions = model.estimate_regions(inputs, features)
    assert regions.transferability is None and regions.uncertainty is None
    assert not regions.priority.any()
    assert regions.labels.unique().numel() > 1


def test_bias_mode_infers_with_plain_attention_and_no_kmeans():
    model = build_segmentor(mode='bias')
    model.init_weights()
    randomise_residuals(model.neck)
    model.eval()
    inputs = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        features = model.backbone(inputs)
        assert model.estimate_regions(inputs, features) is None
        regions = model.estimator(features[-1])
        assert not regions.priority.any()
        # The zero-priority bias it skips would not change the output.
        torch.testing.assert_close(
            model.neck(features, regions), model.neck(features)
        )


def test_source_model_follows_device_and_dtype_moves():
    model = build_segmentor()
    model.init_weights()
    model.double()
    assert next(model.source_model.parameters()).dtype == torch.float64
    model.train()
    assert not model.source_model.training
    copy.deepcopy(model)  # the hidden list survives copies


# -- mixed precision ---------------------------------------------------------


def test_kmeans_distances_stay_float32_under_autocast():
    # Far from the origin the expanded |x|^2 - 2 x.c + |c|^2 cancels in
    # fp16: here fp16 distances would flip 1 in 8 assignments.
    points, truth = two_clusters()
    points = points + 60.0
    labels, _ = batched_kmeans(points, 2, num_iters=5, seed=0)
    assert same_partition(labels, truth)
    with torch.autocast('cpu', dtype=torch.float16):
        amp_labels, centers = batched_kmeans(points, 2, num_iters=5, seed=0)
    assert centers.dtype == torch.float32
    assert torch.equal(amp_labels, labels)


# Measured on CPU autocast (relative L2 error against float32, output /
# gradients of a fixed random projection), fixed regions: fp16
# 3.4e-4 / 6.1e-4, bf16 2.7e-3 / 5.0e-3.
NECK_AMP_TOLERANCE = {torch.float16: 5e-3, torch.bfloat16: 3e-2}


@pytest.mark.parametrize('dtype', AMP_DTYPES)
def test_neck_under_autocast_matches_float32(dtype):
    neck = build_neck('both')
    x = torch.randn(2, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    regions = region_map()
    errors = autocast_parity(
        neck, lambda n: torch.stack(n([x, x], regions)), dtype
    )
    assert errors['finite']
    assert errors['output'] < NECK_AMP_TOLERANCE[dtype], errors
    assert errors['grad'] < NECK_AMP_TOLERANCE[dtype], errors


@pytest.mark.parametrize('dtype', AMP_DTYPES)
def test_segmentor_train_step_under_autocast(dtype):
    model = build_segmentor()
    model.init_weights()
    randomise_residuals(model.neck)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    data = dict(
        inputs=[torch.randint(0, 255, (3, SIZE, SIZE)).float()] * 2,
        data_samples=seg_samples(),
    )
    if dtype == torch.bfloat16:  # what tools/train.py --amp runs on a CPU
        losses = model.train_step(data, AutocastOptimWrapper(optimizer))
    else:
        with torch.autocast('cpu', dtype=dtype):
            losses = model.train_step(data, OptimWrapper(optimizer))
    assert torch.isfinite(losses['decode.loss_ce'])
    for name, param in model.named_parameters():
        assert torch.isfinite(param).all(), name
