"""The IA-DETR synthetic tasks: data, the three models, training and the
tools/analysis_tools/synthetic_tasks.py script."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xattn_mm.analysis.synthetic_tasks import (
    MODEL_KINDS,
    TASKS,
    RelativePositionBias1d,
    SyntheticDecoderLayer,
    SyntheticTaskModel,
    build_model,
    make_dataset,
    make_retrieval_data,
    make_sorting_data,
    ordering_pool,
    sorted_positions,
    task_loss,
    train_and_evaluate,
)

ROOT = Path(__file__).parents[2]
TINY = dict(embed_dims=16, num_heads=2, num_layers=2, ffn_dims=16)


def test_sorted_positions_by_hand():
    # Ordering [1, 2, 0]: symbol 1 has rank 0, 2 rank 1, 0 rank 2. The
    # stable sort of [2, 0, 2, 1] is tokens 3, 0, 2, 1.
    target = sorted_positions(
        torch.tensor([[2, 0, 2, 1]]), torch.tensor([[1, 2, 0]])
    )
    assert target.tolist() == [[1, 3, 2, 0]]


def test_sorting_data():
    data = make_sorting_data(300, seed=3)
    content, condition, target = (
        data['content'],
        data['condition'],
        data['target'],
    )
    assert content.shape == target.shape == (300, 10)
    assert condition.shape == (300, 10)
    assert content.dtype == condition.dtype == target.dtype == torch.long
    assert 0 <= int(content.min()) and int(content.max()) < 10
    # Every ordering comes from the fixed pool, and the pool is used.
    pool = ordering_pool()
    assert (
        pool.shape == (5, 10) and len({tuple(p) for p in pool.tolist()}) == 5
    )
    assert (torch.sort(pool, dim=1).values == torch.arange(10)).all()
    rows = {tuple(r) for r in condition.tolist()}
    assert rows == {tuple(p) for p in pool.tolist()}
    # Targets are permutations; placing each token at its target sorts the
    # sequence by the ordering, equal symbols keeping their order.
    assert (torch.sort(target, dim=1).values == torch.arange(10)).all()
    for x, order, t in zip(content, condition, target):
        rank = {int(s): r for r, s in enumerate(order)}
        placed = torch.empty_like(x)
        placed[t] = x
        ranks = [rank[int(s)] for s in placed]
        assert ranks == sorted(ranks)
        for i in range(10):
            for j in range(i + 1, 10):
                if x[i] == x[j]:
                    assert t[i] < t[j]


def test_retrieval_data():
    # Sec. 6.1: a 3-token query inserted into a 10-token reference.
    data = make_retrieval_data(400, seed=5)
    content, query, start = data['content'], data['condition'], data['target']
    assert content.shape == (400, 13) and query.shape == (400, 3)
    assert start.shape == (400,)
    assert 0 <= int(content.min()) and int(content.max()) < 10
    assert set(start.tolist()) == set(range(11))
    for x, q, s in zip(content, query, start):
        hits = [i for i in range(11) if torch.equal(x[i : i + 3], q)]
        assert hits == [int(s)]


@pytest.mark.parametrize('task', TASKS)
def test_data_determinism(task):
    a, b = make_dataset(task, 50, 7), make_dataset(task, 50, 7)
    for key in ('content', 'condition', 'target'):
        assert torch.equal(a[key], b[key])
    # train_and_evaluate draws train pairs from 2 * seed, test from
    # 2 * seed + 1.
    train, test = make_dataset(task, 50, 0), make_dataset(task, 50, 1)
    assert not torch.equal(train['content'], test['content'])
    # The ordering pool does not depend on the data seed.
    pool = {tuple(p) for p in ordering_pool().tolist()}
    for seed in (0, 1, 9):
        rows = make_sorting_data(50, seed)['condition'].tolist()
        assert {tuple(r) for r in rows} <= pool


@pytest.mark.parametrize('kind', MODEL_KINDS)
@pytest.mark.parametrize('task', TASKS)
def test_forward_shapes_and_gradients(task, kind):
    torch.manual_seed(0)
    model = build_model(task, kind, dropout=0.0, **TINY)
    data = make_dataset(task, 4, 0)
    logits = model(data['content'], data['condition'])
    expected = (4, 10, 10) if task == 'sorting' else (4, 11)
    assert logits.shape == expected
    assert torch.isfinite(logits).all()
    task_loss(logits, data['target']).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    'task, kind, queries, keys',
    [
        # Sec. 6.1 / A.4: keys from the conditioning sequence, values from
        # the content, one query per content token ...
        ('sorting', 'indirect', 'content', 'condition'),
        ('retrieval', 'misaligned', 'content', 'condition'),
        # ... cross-attention: the symbols to sort attend to the ordering,
        # the retrieval query to the reference.
        ('sorting', 'cross', 'content', 'condition'),
        ('retrieval', 'cross', 'condition', 'content'),
    ],
)
def test_paper_query_key_value_assignment(task, kind, queries, keys):
    torch.manual_seed(0)
    model = build_model(task, kind, **TINY).eval()
    data = make_dataset(task, 2, 0)
    seen = {}
    model.layers[0].cross_attn.register_forward_hook(
        lambda _, args, out: seen.update(query=args[0], key=args[1])
    )
    model(data['content'], data['condition'])
    assert seen['query'].shape[1] == data[queries].shape[1]
    # Keys padded to the content length are the conditioning sequence's.
    length = data[keys].shape[1]
    if kind == 'cross':
        assert seen['key'].shape[1] == length
    embedded = model.token_embed(data[keys]) + model.pos_embed[:length]
    torch.testing.assert_close(seen['key'][:, :length], embedded)


def test_position_bias_is_relative_and_moves_with_reference():
    torch.manual_seed(0)
    bias = RelativePositionBias1d(num_heads=3, hidden_dims=8)
    ref = torch.tensor([[1.5, 4.2]])
    out = bias(ref, 10)
    assert out.shape == (1, 3, 2, 10)
    assert not torch.allclose(out, bias(ref + 0.7, 10))
    # Only ref - position matters: one token to the right, same bias.
    torch.testing.assert_close(bias(ref + 1, 10)[..., 1:], out[..., :-1])


def test_indirect_references_and_misaligned_has_none():
    torch.manual_seed(0)
    data = make_dataset('sorting', 3, 0)
    indirect = build_model('sorting', 'indirect', **TINY).eval()
    _, refs = indirect(
        data['content'], data['condition'], return_references=True
    )
    assert refs.shape == (2, 3, 10)
    torch.testing.assert_close(refs[0], torch.arange(10.0).expand(3, 10) + 0.5)
    assert not torch.allclose(refs[1], refs[0])
    # The layer's bias follows the reference it is given.
    layer = indirect.layers[1]
    key = value = torch.randn(3, 10, 16)
    query = torch.randn(3, 10, 16)
    assert not torch.allclose(
        layer(query, key, value, refs[0]), layer(query, key, value, refs[1])
    )

    for kind in ('misaligned', 'cross'):
        model = build_model('sorting', kind, **TINY)
        assert model.reference_heads is None
        assert all(layer.position_bias is None for layer in model.layers)
        assert not any(
            'position_bias' in n or 'reference' in n
            for n, _ in model.named_parameters()
        )
    # Misaligned and indirect share every other parameter name.
    misaligned = build_model('sorting', 'misaligned', **TINY)
    extra = set(dict(indirect.named_parameters())) - set(
        dict(misaligned.named_parameters())
    )
    assert extra and all(
        'position_bias' in n or 'reference_heads' in n for n in extra
    )


def test_invalid_arguments():
    with pytest.raises(ValueError, match='task'):
        build_model('copy', 'indirect')
    with pytest.raises(ValueError, match='model_kind'):
        build_model('sorting', 'self')
    with pytest.raises(ValueError, match='cond_len'):
        SyntheticTaskModel('sorting', 'cross', seq_len=5, cond_len=6)
    with pytest.raises(ValueError, match='cond_len'):
        SyntheticTaskModel('retrieval', 'cross', seq_len=5, cond_len=5)
    with pytest.raises(ValueError, match='dropout'):
        build_model('sorting', 'cross', dropout=1.0)
    with pytest.raises(ValueError, match='query_len'):
        make_retrieval_data(4, 0, query_len=0)
    with pytest.raises(ValueError, match='vocab_size'):
        make_retrieval_data(4, 0, vocab_size=1)
    with pytest.raises(ValueError, match='seed'):
        make_sorting_data(4, seed=-1)
    with pytest.raises(ValueError, match='num_orderings'):
        ordering_pool(num_orderings=7, vocab_size=3)
    with pytest.raises(ValueError, match='num_samples'):
        make_dataset('sorting', 0, 0)
    model = build_model('sorting', 'misaligned', **TINY)
    with pytest.raises(ValueError, match='content'):
        model(torch.zeros(2, 9, dtype=torch.long), torch.zeros(2, 10).long())
    with pytest.raises(ValueError, match='condition'):
        model(torch.zeros(2, 10, dtype=torch.long), torch.zeros(2, 3).long())
    with pytest.raises(ValueError, match='return_references'):
        model(
            torch.zeros(2, 10, dtype=torch.long),
            torch.zeros(2, 10, dtype=torch.long),
            return_references=True,
        )
    layer = SyntheticDecoderLayer(16, 2, 16, position_bias=True)
    x = torch.zeros(1, 10, 16)
    with pytest.raises(ValueError, match='reference'):
        layer(x, x, x)
    with pytest.raises(ValueError, match='epochs'):
        train_and_evaluate('sorting', 'cross', 0, epochs=0)


def test_training_reduces_loss_and_is_deterministic():
    kwargs = dict(
        epochs=4,
        num_train=120,
        num_test=20,
        batch_size=20,
        lr=3e-3,
        model_cfg=TINY,
    )
    run = train_and_evaluate('retrieval', 'indirect', 0, **kwargs)
    assert run['train_loss'][-1] < run['train_loss'][0]
    assert len(run['train_loss']) == len(run['test_accuracy_curve']) == 4
    assert run['test_accuracy'] == run['test_accuracy_curve'][-1]
    assert 0 <= run['test_accuracy'] <= 1 and run['num_params'] > 0
    again = train_and_evaluate('retrieval', 'indirect', 0, **kwargs)
    assert again['train_loss'] == run['train_loss']


def test_tool_smoke(tmp_path):
    out = tmp_path / 'out'
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / 'tools/analysis_tools/synthetic_tasks.py'),
            '--epochs', '1',
            '--num-train', '10',
            '--num-test', '10',
            '--batch-size', '10',
            '--seeds', '0', '1',
            '--out-dir', str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = re.findall(
        r'^\| (sorting|retrieval) \|(.*)\|$', result.stdout, re.M
    )
    assert [r[0] for r in rows] == ['sorting', 'retrieval']
    for _, cells in rows:
        assert len(re.findall(r'\d+\.\d ± \d+\.\d', cells)) == 3
    assert 'wall time' in result.stdout
    assert (out / 'synthetic_tasks.png').read_bytes()[:4] == b'\x89PNG'
    report = json.loads((out / 'synthetic_tasks.json').read_text())
    assert len(report['runs']) == 2 * 3 * 2
    assert {(r['task'], r['model'], r['seed']) for r in report['runs']} == {
        (t, m, s) for t in TASKS for m in MODEL_KINDS for s in (0, 1)
    }
    cell = report['summary']['sorting']['cross']
    accs = [
        100 * r['test_accuracy']
        for r in report['runs']
        if r['task'] == 'sorting' and r['model'] == 'cross'
    ]
    assert cell['accuracies'] == accs
    assert cell['mean'] == pytest.approx(sum(accs) / 2)
