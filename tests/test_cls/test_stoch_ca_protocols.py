"""The pieces of StochCA's protocols: DomainBed splits and batches, the
per-domain metric, stratified subsets, and the L2-SP / BSS regularisers."""

import copy
import math
from collections import Counter

import numpy as np
import pytest
import torch
from mmengine.dataset import InfiniteSampler
from mmengine.registry import init_default_scope
from mmpretrain.registry import DATASETS, MODELS
from mmpretrain.structures import DataSample

import xattn_mm.cls  # noqa: F401
from xattn_mm.cls.datasets import (
    DomainBalancedBatchSampler,
    domainbed_seed,
)
from xattn_mm.cls.evaluation import DomainAccuracy
from xattn_mm.cls.models.backbones.vit_utils import embed_tokens
from xattn_mm.testing import (
    make_classification_folder,
    make_multi_domain_folder,
)

DOMAINS = ['photo', 'sketch', 'cartoon']
PIPELINE = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    init_default_scope('mmpretrain')


@pytest.fixture(scope='module')
def domain_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('domains')
    return str(
        make_multi_domain_folder(str(root), DOMAINS, images_per_class=5)
    )


def leave_one_out(root, split, test_domain='sketch'):
    return DATASETS.build(
        dict(
            type='LeaveOneDomainOut',
            data_root=root,
            domains=DOMAINS,
            test_domain=test_domain,
            split=split,
            pipeline=PIPELINE,
        )
    )


def test_domainbed_seed_and_split_match_domainbed():
    # Values of DomainBed's misc.seed_hash, checked by hand with hashlib.
    assert domainbed_seed(0, 0) == 894182419
    assert domainbed_seed(0, 1) == 1514274641
    assert domainbed_seed(1, 2) == 1981683110


def test_domain_split_parts(domain_root):
    inner = dict(
        type='CustomDataset',
        data_root=domain_root,
        data_prefix='sketch',
        pipeline=PIPELINE,
    )

    def split(part):
        return DATASETS.build(
            dict(
                type='DomainSplit',
                dataset=inner,
                domain='sketch',
                domain_index=1,
                part=part,
            )
        )

    whole, train, holdout = split('all'), split('train'), split('holdout')
    assert len(whole) == 15
    # int(15 * 0.2) = 3 held out: the first 3 of DomainBed's shuffle.
    keys = list(range(15))
    np.random.RandomState(1514274641).shuffle(keys)
    assert holdout.indices == keys[:3]
    assert sorted(train.indices + holdout.indices) == list(range(15))
    sample = holdout[0]['data_samples']
    assert sample.domain == 'sketch' and sample.domain_part == 'holdout'
    assert holdout.metainfo['classes'] == ('disk', 'square', 'triangle')
    with pytest.raises(ValueError, match='part must be one of'):
        split('val')


def test_leave_one_domain_out_splits(domain_root):
    train = leave_one_out(domain_root, 'train')
    val = leave_one_out(domain_root, 'val')
    test = leave_one_out(domain_root, 'test')
    assert [d.domain for d in train.datasets] == ['photo', 'cartoon']
    assert [(d.domain, d.part) for d in val.datasets] == [
        ('photo', 'holdout'),
        ('cartoon', 'holdout'),
        ('sketch', 'all'),
    ]
    assert [(d.domain, d.part) for d in test.datasets] == [('sketch', 'all')]
    assert len(train) == 2 * 12 and len(val) == 2 * 3 + 15 and len(test) == 15
    # DomainBed numbers the domains in sorted order: cartoon, photo, sketch.
    assert [d.domain_index for d in val.datasets] == [1, 0, 2]
    with pytest.raises(ValueError, match="test_domain 'clipart'"):
        leave_one_out(domain_root, 'train', test_domain='clipart')
    with pytest.raises(ValueError, match='split must be one of'):
        leave_one_out(domain_root, 'holdout')


def test_domain_balanced_batches(domain_root):
    train = leave_one_out(domain_root, 'train')
    sampler = InfiniteSampler(train, shuffle=True, seed=3)
    batches = DomainBalancedBatchSampler(sampler, batch_size=4)
    first = DomainBalancedBatchSampler(
        InfiniteSampler(train, shuffle=True, seed=3), batch_size=4
    )
    it = iter(batches)
    seen = Counter()
    for _ in range(12):
        batch = next(it)
        domains = [0 if i < 12 else 1 for i in batch]
        assert Counter(domains) == {0: 4, 1: 4}
        assert len(set(batch)) == 8
        seen.update(batch)
    # Over 12 batches every training image of both domains is drawn.
    assert set(seen) == set(range(24))
    # The sampler's seed fixes the batches.
    again = DomainBalancedBatchSampler(
        InfiniteSampler(train, shuffle=True, seed=3), batch_size=4
    )
    assert next(iter(again)) == next(iter(first))
    with pytest.raises(TypeError, match='ConcatDataset'):
        DomainBalancedBatchSampler(
            InfiniteSampler(train.datasets[0], seed=0), batch_size=4
        )


def test_domain_accuracy_means_of_parts():
    metric = DomainAccuracy()
    samples = []
    # photo hold-out: 3/4 right, cartoon hold-out: 1/2, sketch (test): 1/4.
    for domain, part, hits in (
        ('photo', 'holdout', [1, 1, 1, 0]),
        ('cartoon', 'holdout', [1, 0]),
        ('sketch', 'all', [1, 0, 0, 0]),
    ):
        for hit in hits:
            sample = (
                DataSample().set_gt_label(1).set_pred_label(1 if hit else 0)
            )
            sample.set_metainfo(dict(domain=domain, domain_part=part))
            samples.append(sample.to_dict())
    metric.process(None, samples)
    result = metric.evaluate(len(samples))
    assert result == {
        'domain/photo': 75.0,
        'domain/cartoon': 50.0,
        'domain/sketch': 25.0,
        'domain/train_val': 62.5,
        'domain/test': 25.0,
    }
    with pytest.raises(KeyError, match='DomainSplit'):
        DomainAccuracy().process(
            None, [DataSample().set_gt_label(0).to_dict()]
        )


def test_stratified_subset(tmp_path):
    root = make_classification_folder(
        str(tmp_path), classes=('a', 'b', 'c'), images_per_class=10
    )

    def subset(ratio, seed=0):
        return DATASETS.build(
            dict(
                type='StratifiedSubset',
                ratio=ratio,
                seed=seed,
                dataset=dict(
                    type='CustomDataset', data_root=root, pipeline=PIPELINE
                ),
            )
        )

    small = subset(0.15)
    assert Counter(small.get_gt_labels().tolist()) == {0: 1, 1: 1, 2: 1}
    half = subset(0.5)
    assert Counter(half.get_gt_labels().tolist()) == {0: 5, 1: 5, 2: 5}
    assert half.indices == sorted(half.indices)
    assert subset(0.5).indices == half.indices
    assert subset(0.5, seed=1).indices != half.indices
    assert len(subset(1.0)) == 30
    assert int(half[0]['data_samples'].gt_label) == int(
        half.get_gt_labels()[0]
    )
    with pytest.raises(ValueError, match='ratio must be in'):
        subset(0.0)


def test_subsets_do_not_copy_through_mmengines_shared_memo(
    tmp_path, monkeypatch
):
    """mmengine 0.10.7's ``get_subset`` deep-copies with a memo shared by
    the whole process (``_copy_without_annotation(memo=dict())``): a freed
    dataset's address reused by a new object returns the old copy (a full
    test run once saw a subset whose pipeline was a ``CustomDataset``). The
    subsets cut in place, and a dataset instance is copied with a fresh
    memo: the shared one is never written."""
    from mmengine.dataset import BaseDataset

    class SharedMemo(dict):
        def __setitem__(self, key, value):
            raise AssertionError("mmengine's shared copy memo was used")

    monkeypatch.setattr(
        BaseDataset._copy_without_annotation, '__defaults__', (SharedMemo(),)
    )
    root = make_classification_folder(
        str(tmp_path), classes=('a', 'b'), images_per_class=4
    )
    source = dict(type='CustomDataset', data_root=root, pipeline=PIPELINE)
    instance = DATASETS.build(source)
    for dataset in (source, instance):
        half = DATASETS.build(
            dict(type='StratifiedSubset', ratio=0.5, dataset=dataset)
        )
        assert len(half) == 4
        assert int(half[0]['data_samples'].gt_label) == int(
            half.get_gt_labels()[0]
        )
    assert len(instance) == 8  # the instance passed in is not cut


def tiny_vit(num_layers=2):
    arch = dict(
        embed_dims=32,
        num_layers=num_layers,
        num_heads=4,
        feedforward_channels=64,
    )
    return dict(type='VisionTransformer', arch=arch, img_size=32, patch_size=8)


def tiny_classifier(**kwargs):
    cfg = dict(
        type='RegularizedImageClassifier',
        backbone=tiny_vit(),
        head=dict(type='LinearClsHead', num_classes=3, in_channels=32),
    )
    cfg.update(kwargs)
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def batch(size=6):
    gen = torch.Generator().manual_seed(2)
    inputs = torch.randn(size, 3, 32, 32, generator=gen)
    samples = [DataSample().set_gt_label(i % 3) for i in range(size)]
    return inputs, samples


def test_l2sp_pulls_toward_the_initial_weights():
    model = tiny_classifier(
        regularizers=dict(l2sp=dict(type='L2SPRegularizer', loss_weight=0.5))
    )
    inputs, samples = batch()
    assert float(model.loss(inputs, samples)['loss_l2sp']) == 0.0
    start = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    with torch.no_grad():
        model.backbone.layers[0].attn.qkv.weight.add_(0.1)
        model.backbone.cls_token.add_(-0.2)
    losses = model.loss(inputs, samples)
    qkv = model.backbone.layers[0].attn.qkv.weight.numel()
    expected = 0.5 * 0.5 * (qkv * 0.01 + 32 * 0.04)
    assert float(losses['loss_l2sp']) == pytest.approx(expected, rel=1e-4)
    losses['loss_l2sp'].backward()
    grad = model.backbone.cls_token.grad
    torch.testing.assert_close(grad, torch.full_like(grad, 0.5 * -0.2))
    # The reference is not part of the checkpoint.
    assert set(model.state_dict()) == set(tiny_classifier().state_dict())
    assert start.keys() == model.backbone.state_dict().keys()


def test_bss_penalises_the_smallest_singular_values():
    model = tiny_classifier(
        regularizers=dict(
            bss=dict(type='BSSRegularizer', loss_weight=2.0, num_singular=2)
        )
    )
    inputs, samples = batch()
    losses = model.loss(inputs, samples)
    feats = model.head.pre_logits(model.extract_feat(inputs))
    singular = np.linalg.svd(feats.detach().numpy(), compute_uv=False)
    expected = 2.0 * (singular[-1] ** 2 + singular[-2] ** 2)
    assert float(losses['loss_bss']) == pytest.approx(expected, rel=1e-4)
    assert set(losses) == {'loss', 'loss_bss'}
    losses['loss_bss'].backward()
    assert model.backbone.layers[-1].ffn.layers[1].weight.grad is not None


def test_regularizers_with_stoch_ca():
    model = tiny_classifier(
        backbone=dict(type='StochCA', p=1.0, backbone=tiny_vit(2)),
        regularizers=dict(
            l2sp=dict(type='L2SPRegularizer'), bss=dict(type='BSSRegularizer')
        ),
    )
    model.train()
    losses = model.loss(*batch())
    assert set(losses) == {'loss', 'loss_l2sp', 'loss_bss'}
    reference = model.regularizers['l2sp']._reference[0]
    assert all(k.startswith('backbone.') for k in reference)
    sum(losses.values()).backward()


def vit_features(vit, x, layers):
    """The patch projection's output and the outputs of ``layers``, block by
    block."""
    feats = [vit.patch_embed.projection(x)]
    hidden, _ = embed_tokens(vit, x)
    for i, layer in enumerate(vit.layers):
        hidden = layer(hidden)
        if i in layers:
            feats.append(hidden)
    return feats


def test_miro_is_the_variational_bound_on_the_oracle_features():
    model = tiny_classifier(
        regularizers=dict(miro=dict(type='MIRORegularizer', loss_weight=0.5))
    )
    miro = model.regularizers['miro']
    assert miro.feat_layers == (0, 1)  # the last block of each quarter
    inputs, samples = batch()
    # Student = oracle at the start: only the log-variance term is left.
    losses = model.loss(inputs, samples)
    expected = 0.5 * 3 * math.log(0.1) / 2
    assert float(losses['loss_miro']) == pytest.approx(expected, rel=1e-5)
    oracle = copy.deepcopy(model.backbone)
    oracle.eval()
    with torch.no_grad():
        model.backbone.layers[0].attn.qkv.weight.add_(0.05)
        model.backbone.patch_embed.projection.bias.add_(0.1)
        miro.var_bias[1].add_(1.0)
    model.eval()  # no drop path: the features are deterministic
    losses = model.loss(inputs, samples)
    with torch.no_grad():
        f = vit_features(model.backbone, inputs, (0, 1))
        z = vit_features(oracle, inputs, (0, 1))
    total = 0.0
    for i, (a, b) in enumerate(zip(f, z)):
        var = torch.nn.functional.softplus(miro.var_bias[i]) + 1e-5
        var = var.view(1, -1, 1, 1) if a.dim() == 4 else var.view(1, 1, -1)
        total += float(((a - b).square() / var + var.log()).mean()) / 2
    assert float(losses['loss_miro']) == pytest.approx(0.5 * total, rel=1e-5)
    losses['loss_miro'].backward()
    assert miro.var_bias[1].grad.abs().sum() > 0
    assert model.backbone.layers[0].attn.qkv.weight.grad.abs().sum() > 0
    # The variance encoders are trained and saved; the oracle is neither.
    names = {n for n, _ in model.named_parameters()}
    assert {
        'regularizers.miro.var_bias.0',
        'regularizers.miro.var_bias.2',
    } <= names
    assert not any('oracle' in k for k in model.state_dict())


def test_miro_with_stoch_ca_reads_the_teacher_and_drawn_blocks():
    model = tiny_classifier(
        backbone=dict(type='StochCA', p=1.0, backbone=tiny_vit(4)),
        regularizers=dict(miro=dict(type='MIRORegularizer')),
    )
    miro = model.regularizers['miro']
    assert miro.feat_layers == (0, 1, 2, 3)
    assert miro.hidden_frozen('oracle') is model.backbone.teacher
    model.train()
    losses = model.loss(*batch())
    assert model.backbone.last_draw.all()  # every block cross-attended
    assert torch.isfinite(losses['loss_miro'])
    sum(losses.values()).backward()
    assert all(b.grad is not None for b in miro.var_bias)
    with pytest.raises(TypeError, match='VisionTransformer'):
        tiny_classifier(
            backbone=dict(type='ResNet', depth=18),
            regularizers=dict(miro=dict(type='MIRORegularizer')),
        )


@pytest.mark.parametrize(
    'cfg, error, match',
    [
        (dict(type='L2SPRegularizer', loss_weight=-1), ValueError, '>= 0'),
        (dict(type='BSSRegularizer', num_singular=0), ValueError, 'positive'),
        (dict(type='MIRORegularizer', init_var=0.0), ValueError, 'init_var'),
    ],
)
def test_regularizer_arguments(cfg, error, match):
    with pytest.raises(error, match=match):
        MODELS.build(cfg)
    with pytest.raises(TypeError, match='regularizers must map'):
        tiny_classifier(regularizers=[dict(type='BSSRegularizer')])
