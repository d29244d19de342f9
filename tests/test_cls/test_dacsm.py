"""DACSM: the DAT backbone, the CSM head, the UDA classifier, the pseudo-label
procedure and the paired dataset."""

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from mmpretrain.registry import DATASETS, MODELS
from mmpretrain.structures import DataSample

import xattn_mm.cls  # noqa: F401
from xattn_mm.cls.engine import (
    PseudoLabelHook,
    center_aware_labels,
    mutual_nearest_neighbours,
    pair_domains,
)
from xattn_mm.cls.models.backbones.vit_utils import embed_tokens
from xattn_mm.cls.models.utils import rescale_images
from xattn_mm.testing import make_multi_domain_folder, write_image_list
from xattn_mm.testing.amp import AMP_DTYPES, autocast_parity
from xattn_mm.testing.distributed import run_on_ranks

ARCH = dict(embed_dims=32, num_layers=2, num_heads=4, feedforward_channels=64)


def build_dat(**kwargs):
    torch.manual_seed(0)
    cfg = dict(type='DAT', arch=ARCH, img_size=32, patch_size=8)
    cfg.update(kwargs)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def images(seed, batch=2):
    return torch.randn(
        batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)
    )


# ---- DAT ----------------------------------------------------------------


def test_target_branch_is_the_plain_vit_with_the_same_weights():
    dat = build_dat(drop_path_rate=0.0)
    vit = MODELS.build(
        dict(type='VisionTransformer', arch=ARCH, img_size=32, patch_size=8)
    )
    vit.load_state_dict(dat.state_dict())
    dat.eval()
    vit.eval()
    source, target = images(0), images(1)
    _, target_out, _ = dat.forward_branches(source, target)
    torch.testing.assert_close(target_out[0], vit(target)[0])
    torch.testing.assert_close(dat(target)[0], vit(target)[0])


@pytest.mark.parametrize('training', [False, True])
def test_cross_branch_equals_source_branch_when_source_is_target(training):
    dat = build_dat(drop_path_rate=0.0, noise_std=0.0)
    dat.train(training)
    x = images(0)
    source_out, target_out, cross_out = dat.forward_branches(x, x.clone())
    torch.testing.assert_close(cross_out[0], source_out[0])
    torch.testing.assert_close(target_out[0], source_out[0])


def test_cross_branch_reads_target_keys_values_with_source_queries():
    dat = build_dat()
    dat.eval()
    source, target = images(0), images(1)
    source_out, target_out, cross_out = dat.forward_branches(source, target)
    assert not torch.allclose(cross_out[0], source_out[0])
    assert not torch.allclose(cross_out[0], target_out[0])
    # Swapping the target changes the cross branch, not the source branch.
    source_b, _, cross_b = dat.forward_branches(source, images(2))
    torch.testing.assert_close(source_b[0], source_out[0])
    assert not torch.allclose(cross_b[0], cross_out[0])


def test_forward_branches_gradients_reach_shared_weights():
    dat = build_dat(cosine_attention=True, noise_std=0.5)
    dat.train()
    outs = dat.forward_branches(images(0), images(1))
    sum(o[0].square().sum() for o in outs).backward()
    assert dat.layers[0].attn.qkv.weight.grad.abs().sum() > 0
    assert dat.cross_logit_scale.grad.abs().sum() > 0


@pytest.mark.parametrize('placement', ['logits', 'key', 'value'])
def test_noise_only_in_training_and_only_in_the_cross_branch(placement):
    clean = build_dat(drop_path_rate=0.0)
    noisy = build_dat(
        drop_path_rate=0.0, noise_std=1.0, noise_placement=placement
    )
    source, target = images(0), images(1)
    clean.eval()
    noisy.eval()
    for a, b in zip(
        clean.forward_branches(source, target),
        noisy.forward_branches(source, target),
    ):
        torch.testing.assert_close(a[0], b[0])
    clean.train()
    noisy.train()
    torch.manual_seed(1)
    ref = clean.forward_branches(source, target)
    torch.manual_seed(1)
    out = noisy.forward_branches(source, target)
    torch.testing.assert_close(out[0][0], ref[0][0])
    torch.testing.assert_close(out[1][0], ref[1][0])
    assert not torch.allclose(out[2][0], ref[2][0])
    assert noisy.current_noise_std == 1.0
    noisy.eval()
    assert noisy.current_noise_std == 0.0


def test_noise_std_follows_the_schedule():
    constant = build_dat(noise_std=0.4)
    linear = build_dat(noise_std=0.4, noise_schedule='linear')
    constant.train()
    linear.train()
    for progress in (0.0, 0.25, 1.0):
        constant.set_progress(progress)
        linear.set_progress(progress)
        assert constant.current_noise_std == pytest.approx(0.4)
        assert linear.current_noise_std == pytest.approx(0.4 * (1 - progress))
    with pytest.raises(ValueError, match='progress'):
        linear.set_progress(1.5)


def test_noise_std_sets_the_spread_of_the_logit_noise(monkeypatch):
    import xattn_mm.cls.models.backbones.dat as dat_module

    seen = []
    original = dat_module.multihead_attention

    def spy(query, key, value, num_heads, attn_bias=None, **kwargs):
        if attn_bias is not None:
            seen.append(attn_bias.std().item())
        return original(
            query, key, value, num_heads, attn_bias=attn_bias, **kwargs
        )

    monkeypatch.setattr(dat_module, 'multihead_attention', spy)
    dat = build_dat(noise_std=0.3, noise_schedule='linear')
    dat.train()
    dat.set_progress(0.5)
    dat.forward_branches(images(0, 8), images(1, 8))
    assert len(seen) == 2  # one noisy cross-attention per block
    assert seen == pytest.approx([0.15, 0.15], rel=0.1)


def test_cosine_attention_temperature_is_absent_without_it():
    assert 'cross_logit_scale' not in build_dat().state_dict()
    assert 'cross_logit_scale' in build_dat(cosine_attention=True).state_dict()


@pytest.mark.parametrize(
    'kwargs, match',
    [
        (dict(noise_std=-1.0), 'noise_std'),
        (dict(noise_std='a'), 'noise_std'),
        (dict(noise_placement='query'), 'noise_placement'),
        (dict(noise_schedule='cosine'), 'noise_schedule'),
        (dict(cross_residual='query'), 'cross_residual'),
    ],
)
def test_dat_rejects_bad_arguments(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        build_dat(**kwargs)


def reference_branches(dat, source, target, cross_residual):
    """The three streams one at a time, as CDTrans's blocks run them (eval,
    no noise): per block, each stream adds its attention output and the MLP
    residually; the cross stream's attention takes queries from the source
    stream and keys / values from the target stream; it starts from the
    ``cross_residual`` tokens."""
    tokens_s, resolution = embed_tokens(dat, source)
    tokens_t, _ = embed_tokens(dat, target)
    start = tokens_s if cross_residual == 'source' else tokens_t
    streams = [tokens_s, tokens_t, start.clone()]
    heads = dat.layers[0].attn.num_heads

    def split(x):
        return x.unflatten(-1, (heads, -1)).transpose(1, 2)

    for i, layer in enumerate(dat.layers):
        attn = layer.attn
        qkv = [
            [split(p) for p in attn.qkv(layer.ln1(x)).chunk(3, dim=-1)]
            for x in streams[:2]
        ]
        pairs = [(0, 0), (1, 1), (0, 1)]  # (query stream, key/value stream)
        new = []
        for x, (q, kv) in zip(streams, pairs):
            query, key, value = qkv[q][0], qkv[kv][1], qkv[kv][2]
            scale = attn.head_dims**-0.5
            weights = (query @ key.transpose(-2, -1) * scale).softmax(-1)
            out = (weights @ value).transpose(1, 2).flatten(-2)
            x = x + attn.proj(out)
            new.append(layer.ffn(layer.ln2(x), identity=x))
        streams = new
        if i == dat.num_layers - 1 and dat.final_norm:
            streams = [dat.ln1(x) for x in streams]
    return [dat._format_output(x, resolution) for x in streams]


@pytest.mark.parametrize('cross_residual', ['source', 'target'])
def test_branches_match_the_stream_by_stream_reference(cross_residual):
    dat = build_dat(cross_residual=cross_residual, out_type='raw')
    dat.eval()
    source, target = images(0), images(1)
    with torch.no_grad():
        outs = dat.forward_branches(source, target)
        expected = reference_branches(dat, source, target, cross_residual)
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(out[0], ref, rtol=1e-5, atol=1e-5)


def test_cross_residual_moves_only_the_cross_streams_patch_tokens():
    """Each cross-stream token's update reads only its own residual and the
    source / target streams, and the class token starts alike in both, so
    the choice reaches the patch tokens only: a class-token head sees no
    difference."""
    source, target = images(0), images(1)
    outs = {}
    for residual in ('source', 'target'):
        dat = build_dat(cross_residual=residual, out_type='raw')
        dat.eval()
        with torch.no_grad():
            outs[residual] = dat.forward_branches(source, target)
    for a, b in zip(outs['source'][:2], outs['target'][:2]):
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    cross_s, cross_t = outs['source'][2][0], outs['target'][2][0]
    torch.testing.assert_close(cross_s[:, 0], cross_t[:, 0], rtol=0, atol=0)
    assert not torch.allclose(cross_s[:, 1:], cross_t[:, 1:])


def test_dat_rejects_mismatched_batches():
    with pytest.raises(ValueError, match='same shape'):
        build_dat().forward_branches(images(0, 2), images(1, 3))


# ---- CSM head -----------------------------------------------------------


def build_head(**kwargs):
    cfg = dict(type='CSMHead', num_classes=3, in_channels=6, num_subcenters=2)
    cfg.update(kwargs)
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def test_subcenter_logits_select_the_scale_and_max_pool_for_targets():
    head = build_head(scale=10.0)
    with torch.no_grad():  # sub-center k of class c is basis vector 2c + k
        head.fc.weight.copy_(torch.eye(6))
    feats = torch.eye(6)  # feature j lies on sub-center j
    logits = head.subcenter_logits((feats,))
    assert logits.shape == (6, 3, 2)
    best = logits.flatten(1).argmax(1)
    assert best.tolist() == list(range(6))
    pooled = head((feats,))
    torch.testing.assert_close(pooled, logits.amax(-1))
    assert pooled.argmax(1).tolist() == [0, 0, 1, 1, 2, 2]
    # The source loss reads the sub-center of each sample's scale.
    samples = [DataSample().set_gt_label(c) for c in [0, 0, 1, 1, 2, 2]]
    index = torch.tensor([0, 1, 0, 1, 0, 1])
    right = head.loss((feats,), samples, subcenter_index=index)['loss']
    wrong = head.loss((feats,), samples, subcenter_index=1 - index)['loss']
    assert right < wrong
    gathered = logits[torch.arange(6), :, index]
    expected = head.loss_module(
        gathered, torch.tensor([0, 0, 1, 1, 2, 2]), avg_factor=6
    )
    torch.testing.assert_close(right, expected)


def test_csm_head_cosine_logits_are_bounded_by_the_scale():
    head = build_head(scale=5.0)
    logits = head.subcenter_logits((torch.randn(4, 6) * 100,))
    assert logits.abs().max() <= 5.0 + 1e-5


def test_csm_head_rejects_bad_arguments():
    with pytest.raises(ValueError, match='num_subcenters'):
        build_head(num_subcenters=0)
    with pytest.raises(ValueError, match='scale'):
        build_head(scale=0.0)
    head = build_head()
    samples = [DataSample().set_gt_label(0)] * 2
    with pytest.raises(ValueError, match='subcenter_index'):
        head.loss((torch.randn(2, 6),), samples, torch.tensor([0, 2]))


# ---- UDA classifier -----------------------------------------------------


def build_classifier(**kwargs):
    torch.manual_seed(0)
    cfg = dict(
        type='UDAClassifier',
        backbone=dict(type='DAT', arch=ARCH, img_size=32, patch_size=8),
        head=dict(
            type='CSMHead', num_classes=3, in_channels=32, num_subcenters=3
        ),
    )
    cfg.update(kwargs)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def paired_batch(batch=4, pseudo=True):
    def part(seed, labelled):
        samples = []
        for i in range(batch):
            s = DataSample()
            if labelled:
                s.set_gt_label(i % 3)
            if pseudo and not labelled:
                s.set_field(torch.tensor([(i + 1) % 3]), 'pseudo_label')
            samples.append(s)
        g = torch.Generator().manual_seed(seed)
        inputs = [
            torch.randint(0, 255, (3, 32, 32), generator=g)
            for _ in range(batch)
        ]
        return dict(inputs=inputs, data_samples=samples)

    return dict(source=part(0, True), target=part(1, False))


def test_rescale_images_zooms_about_the_centre():
    x = torch.zeros(3, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0  # a centred 2 x 2 square
    out = rescale_images(x, torch.tensor([1.0, 2.0, 0.5]))
    torch.testing.assert_close(out[0], x[0])
    assert out[1].sum() > 2 * x[1].sum()  # enlarged
    assert out[2].sum() < x[2].sum()  # shrunk
    assert out[1, 0, 4, 4] == pytest.approx(1.0)


def test_uda_train_step_updates_and_logs_the_three_losses():
    model = build_classifier()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    before = copy.deepcopy(model.state_dict())
    log = model.train_step(paired_batch(), wrapper)
    assert set(log) == {'loss', 'loss_source', 'loss_target', 'loss_distill'}
    assert all(torch.isfinite(v) for v in log.values())
    changed = [
        k
        for k, v in model.state_dict().items()
        if not torch.equal(v, before[k])
    ]
    assert any(k.startswith('backbone.layers') for k in changed)
    assert 'head.fc.weight' in changed


def test_uda_source_only_step_and_plain_prediction():
    model = build_classifier()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    log = model.train_step(paired_batch()['source'], wrapper)
    assert set(log) == {'loss', 'loss_source'}
    model.eval()
    data = model.data_preprocessor(paired_batch()['target'], False)
    preds = model.predict(data['inputs'])
    logits = model.head(model.backbone(data['inputs']))
    torch.testing.assert_close(
        torch.stack([p.pred_score for p in preds]), logits.softmax(1)
    )


def test_uda_preprocessor_copies_without_blocking(copy_spy):
    model = build_classifier()
    model.data_preprocessor(paired_batch(), True)
    # 2 x 4 images; the host's one gt_label copy of the source batch
    # (ClsDataPreprocessor's own code) stays blocking.
    assert copy_spy.count(True) == 8 and copy_spy.count(None) == 1, copy_spy


def test_uda_loss_terms_follow_the_cdtrans_recipe():
    model = build_classifier(
        scales=(1.0, 1.0, 1.0), scale_sampling='cycle'
    ).eval()
    batch = model.data_preprocessor(paired_batch(), True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    src, tgt = batch['inputs']['source'], batch['inputs']['target']
    s_out, t_out, c_out = model.backbone.forward_branches(src, tgt)
    t_logits, c_logits = model.head(t_out), model.head(c_out)
    pseudo = torch.tensor([1, 2, 0, 1])
    torch.testing.assert_close(
        losses['loss_target'],
        model.head.loss_module(t_logits, pseudo, avg_factor=4),
    )
    expected = -(c_logits.softmax(1) * t_logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(losses['loss_distill'], expected)


def test_uda_classifier_refuses_missing_pseudo_labels_and_bad_config():
    model = build_classifier()
    batch = model.data_preprocessor(paired_batch(pseudo=False), True)
    with pytest.raises(KeyError, match='pseudo_label'):
        model.loss(batch['inputs'], batch['data_samples'])
    with pytest.raises(ValueError, match='sub-center'):
        build_classifier(scales=(1.0, 2.0))
    with pytest.raises(ValueError, match='pseudo_label_branch'):
        build_classifier(pseudo_label_branch='source')
    with pytest.raises(ValueError, match='loss_weights'):
        build_classifier(loss_weights=dict(entropy=1.0))


# ---- pseudo-labels and pairs -----------------------------------------------


def toy_domains(seed=0, num_classes=5, per_class=60, dims=16):
    """Source clusters; the target is the same clusters shifted by a common
    offset (a domain shift) with their own spread."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dims, generator=g) * 4
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    source = centres[labels] + torch.randn(len(labels), dims, generator=g)
    shift = torch.randn(dims, generator=g) * 10
    target = (
        centres[labels] + shift + torch.randn(len(labels), dims, generator=g)
    )
    return source, target, labels, centres


def test_center_aware_labels_recover_shifted_clusters():
    source, target, labels, centres = toy_domains()
    # The source classifier: softmax over negative distances to the
    # source class means; the shift makes it err on the target.
    means = torch.stack([source[labels == c].mean(0) for c in range(5)])
    probs = F.softmax(-torch.cdist(target, means) / 2, dim=1)
    source_only = (probs.argmax(1) == labels).float().mean()
    pseudo = center_aware_labels(target, probs)
    accuracy = (pseudo == labels).float().mean()
    assert accuracy >= 0.95
    assert accuracy > source_only


def test_mutual_nearest_neighbours_match_brute_force():
    source, target, _, _ = toy_domains(seed=1, per_class=7)
    sim = F.normalize(source, dim=1) @ F.normalize(target, dim=1).t()
    for chunk in (1, 5, 1000):
        t_of_s, s_of_t = mutual_nearest_neighbours(source, target, chunk)
        assert torch.equal(t_of_s, sim.argmax(1))
        assert torch.equal(s_of_t, sim.argmax(0))


def test_pair_filter_keeps_only_label_consistent_pairs():
    source_labels = torch.tensor([0, 1, 2, 0])
    pseudo = torch.tensor([0, 2, 2])
    target_of_source = torch.tensor([0, 1, 2, 2])
    source_of_target = torch.tensor([3, 1, 2])
    s, t = pair_domains(
        source_labels, pseudo, target_of_source, source_of_target
    )
    pairs = list(zip(s.tolist(), t.tolist()))
    # Target-side pairs first, then source-side; (2, 2) is found both ways.
    assert pairs == [(3, 0), (2, 2), (0, 0), (2, 2)]
    assert all(source_labels[a] == pseudo[b] for a, b in pairs)
    s, t = pair_domains(
        source_labels,
        pseudo,
        target_of_source,
        source_of_target,
        deduplicate=True,
    )
    assert sorted(zip(s.tolist(), t.tolist())) == [(0, 0), (2, 2), (3, 0)]
    s, t = pair_domains(
        source_labels,
        pseudo,
        target_of_source,
        source_of_target,
        label_filter=False,
    )
    assert len(s) == 7


# ---- paired dataset -------------------------------------------------------


PAIR_CLASSES = ['square', 'disk', 'triangle']


def write_pair_domains(tmp_path) -> str:
    root = make_multi_domain_folder(
        str(tmp_path), ['photo', 'sketch'], PAIR_CLASSES, images_per_class=3
    )
    for domain in ('photo', 'sketch'):
        write_image_list(root, domain, f'{root}/{domain}.txt', PAIR_CLASSES)
    return root


@pytest.fixture
def pair_dataset(tmp_path):
    return build_pair_dataset(write_pair_domains(tmp_path))


def build_pair_dataset(root):
    classes = PAIR_CLASSES
    pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]

    def domain(name):
        return dict(
            type='CustomDataset',
            data_root=root,
            ann_file=f'{name}.txt',
            classes=classes,
            pipeline=pipeline,
        )

    return DATASETS.build(
        dict(
            type='UDAPairDataset',
            source=domain('photo'),
            target=domain('sketch'),
            extract_pipeline=pipeline,
        )
    )


def test_pair_dataset_hides_target_labels_and_carries_pseudo_labels(
    pair_dataset,
):
    with pytest.raises(RuntimeError, match='PseudoLabelHook'):
        pair_dataset[0]
    pseudo = np.arange(9) % 3
    pair_dataset.set_pairs([0, 4, 8], [2, 5, 7], pseudo)
    assert len(pair_dataset) == 9  # the target set's size
    seen = set()
    for i in range(len(pair_dataset)):
        item = pair_dataset[i]
        target = item['target']['data_samples']
        assert 'gt_label' not in target
        assert 'gt_label' in item['source']['data_samples']
        seen.add(int(target.pseudo_label))
    assert seen == {pseudo[2], pseudo[5], pseudo[7]}
    view = pair_dataset.extraction_set('target')
    assert len(view) == 9 and 'gt_label' not in view[0]['data_samples']


def test_pair_dataset_epoch_order_walks_every_pair(pair_dataset):
    pair_dataset.set_pairs([0, 1, 2, 3], [0, 1, 2, 3], np.zeros(9))
    pair_dataset.set_epoch(1)
    first = [int(p) for p in pair_dataset._order]
    assert sorted(first[:4]) == [0, 1, 2, 3]
    pair_dataset.set_epoch(2)
    assert [int(p) for p in pair_dataset._order] != first


def test_pair_dataset_rejects_bad_input(pair_dataset, tmp_path):
    with pytest.raises(ValueError, match='pseudo_labels'):
        pair_dataset.set_pairs([0], [0], [0, 1])
    with pytest.raises(ValueError, match='target_indices'):
        pair_dataset.set_pairs([0], [9], np.zeros(9))
    with pytest.raises(ValueError, match='same classes'):
        DATASETS.build(
            dict(
                type='UDAPairDataset',
                source=pair_dataset.source,
                target=DATASETS.build(
                    dict(
                        type='CustomDataset',
                        data_root=str(tmp_path),
                        ann_file='sketch.txt',
                        classes=['a', 'b', 'c'],
                    )
                ),
                extract_pipeline=[],
            )
        )


# ---- metric ---------------------------------------------------------------


def test_mean_class_accuracy_against_hand_counts():
    from mmpretrain.registry import METRICS

    metric = METRICS.build(dict(type='MeanClassAccuracy', classwise=True))
    metric.dataset_meta = dict(classes=['a', 'b', 'c'])
    gts = [0, 0, 0, 0, 1, 1, 2]
    preds = [0, 0, 0, 1, 1, 0, 0]
    metric.process(
        None,
        [
            dict(gt_label=torch.tensor([g]), pred_label=torch.tensor([p]))
            for g, p in zip(gts, preds)
        ],
    )
    result = metric.evaluate(7)
    assert result['accuracy/class/a'] == pytest.approx(75.0)
    assert result['accuracy/class/b'] == pytest.approx(50.0)
    assert result['accuracy/class/c'] == pytest.approx(0.0)
    assert result['accuracy/mean_class'] == pytest.approx(125.0 / 3)
    assert result['accuracy/overall'] == pytest.approx(400.0 / 7)


# ---- export ---------------------------------------------------------------


def test_export_drops_training_only_weights_and_predicts_identically(
    tmp_path,
):
    import importlib.util
    from pathlib import Path

    path = (
        Path(__file__).resolve().parents[2]
        / 'tools'
        / 'model_converters'
        / 'dacsm_to_plain.py'
    )
    spec = importlib.util.spec_from_file_location('dacsm_to_plain', path)
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)

    model = build_classifier(
        backbone=dict(
            type='DAT',
            arch=ARCH,
            img_size=32,
            patch_size=8,
            cosine_attention=True,
        )
    )
    src, dst = tmp_path / 'dacsm.pth', tmp_path / 'plain.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, src)
    from xattn_mm.engine import export_checkpoint

    export_checkpoint(str(src), str(dst), False, converter.export_state_dict)
    exported = torch.load(dst, map_location='cpu', weights_only=True)
    assert 'backbone.cross_logit_scale' not in exported['state_dict']
    plain = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(
                type='VisionTransformer', arch=ARCH, img_size=32, patch_size=8
            ),
            head=dict(
                type='CSMHead', num_classes=3, in_channels=32, num_subcenters=3
            ),
        )
    )
    plain.load_state_dict(exported['state_dict'], strict=True)
    model.eval()
    plain.eval()
    x = images(3, 4)
    torch.testing.assert_close(model(x), plain(x))
    with pytest.raises(ValueError, match='CSMHead'):
        converter.export_state_dict({'backbone.pos_embed': torch.zeros(1)})


# Measured relative L2 errors against float32 (loss terms, gradients):
# fp16 1.9e-4 / 7.2e-4, bf16 9.9e-4 / 1.0e-2.
AMP_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 0.1}


@pytest.mark.parametrize('dtype', AMP_DTYPES)
def test_autocast_matches_float32_with_float32_logits(dtype):
    # The paired loss runs DAT's three branches (training noise included)
    # and the CSM head over three scales.
    model = build_classifier(scales=(1.0, 2.0, 0.5), scale_sampling='cycle')
    batch = model.data_preprocessor(paired_batch(), True)

    def losses(m):
        torch.manual_seed(0)  # the same noise in both precisions
        terms = m.loss(batch['inputs'], batch['data_samples'])
        return torch.stack(list(terms.values()))

    errors = autocast_parity(model, losses, dtype)
    assert errors['finite'], errors
    assert errors['output'] < AMP_TOLERANCE[dtype], errors
    assert errors['grad'] < AMP_TOLERANCE[dtype], errors
    with torch.autocast('cpu', dtype=dtype):
        feats = model.backbone(batch['inputs']['source'])
        assert model.head(feats).dtype == torch.float32


def _refresh_on_rank(rank, root):
    """PseudoLabelHook.refresh on a 2-rank run whose rank 1 would label the
    targets differently (as a tie broken otherwise would)."""
    from xattn_mm.cls.engine.hooks import uda_hooks

    calls = []
    if rank == 1:
        labels = uda_hooks.center_aware_labels

        def shifted(*args, **kwargs):
            calls.append(1)
            return (labels(*args, **kwargs) + 1) % len(PAIR_CLASSES)

        uda_hooks.center_aware_labels = shifted
    dataset = build_pair_dataset(root)
    loader = SimpleNamespace(
        dataset=dataset, num_workers=0, persistent_workers=False
    )
    runner = SimpleNamespace(
        train_dataloader=loader, model=build_classifier(), epoch=0
    )
    PseudoLabelHook(batch_size=4, num_workers=0).refresh(runner)
    return dict(
        pairs=torch.as_tensor(
            np.stack([dataset.source_indices, dataset.target_indices])
        ),
        pseudo=torch.as_tensor(dataset.pseudo_labels),
        rank1_computed=len(calls),
    )


def test_pseudo_labels_are_computed_on_rank_0_and_broadcast(tmp_path):
    root = write_pair_domains(tmp_path)
    ranks = run_on_ranks(_refresh_on_rank, root)
    assert ranks[1]['rank1_computed'] == 0
    assert torch.equal(ranks[0]['pairs'], ranks[1]['pairs'])
    assert torch.equal(ranks[0]['pseudo'], ranks[1]['pseudo'])
