"""FiniteLossHook and RandomStateHook in real mmengine runs of a toy model
with dropout and a randomly augmented dataset."""

import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from xattn_mm.engine import FiniteLossHook, checkpoint_policy


class Jittered(Dataset):
    """Fixed inputs plus numpy noise drawn in __getitem__ (augmentation in
    the main process with num_workers=0)."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        x = torch.full((4,), float(index)) + float(np.random.rand())
        return dict(inputs=x, target=x.sum(0, keepdim=True))


class DropoutNet(BaseModel):
    def __init__(self, nan_at=None):
        super().__init__()
        self.fc = torch.nn.Linear(4, 1)
        self.drop = torch.nn.Dropout(0.5)
        self.nan_at, self.calls = nan_at, 0

    def forward(self, inputs, target, mode='tensor'):
        out = self.fc(self.drop(inputs / 8))
        if mode != 'loss':
            return [dict(out=o) for o in out]
        self.calls += 1
        loss = ((out - target / 8) ** 2).mean()
        if self.calls == self.nan_at:
            loss = loss * float('nan')
        return dict(loss=loss, loss_aux=loss.detach() * 0)


class Count(BaseMetric):
    def process(self, data_batch, data_samples):
        self.results.append(len(data_samples))

    def compute_metrics(self, results):
        return dict(n=sum(results))


def make_runner(
    work_dir, by_epoch, length, hooks=True, nan_at=None, lr=0.1, **kw
):
    loader = dict(
        dataset=Jittered(),
        sampler=dict(type='DefaultSampler', shuffle=True),
        batch_size=2,
        num_workers=0,
        collate_fn=dict(type='default_collate'),
    )
    default_hooks = dict(
        logger=dict(type='LoggerHook', interval=1),
        checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=by_epoch),
    )
    default_hooks.update(
        finite_loss=dict(type='FiniteLossHook', enable=hooks),
        random_state=dict(type='RandomStateHook', enable=hooks),
    )
    train_cfg = (
        dict(by_epoch=True, max_epochs=length, val_interval=1)
        if by_epoch
        else dict(by_epoch=False, max_iters=length, val_interval=2)
    )
    torch.manual_seed(0)  # the model is built before the runner seeds
    return Runner(
        model=DropoutNet(nan_at),
        work_dir=str(work_dir),
        train_dataloader=loader,
        val_dataloader=loader,
        val_evaluator=dict(type=Count),
        train_cfg=train_cfg,
        val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=lr)),
        default_hooks=default_hooks,
        randomness=dict(seed=3),
        default_scope='mmengine',
        experiment_name=f'hooks_{osp.basename(str(work_dir))}',
        **kw,
    )


def final_weight(runner):
    return torch.cat([p.detach().flatten() for p in runner.model.parameters()])


@pytest.mark.parametrize('by_epoch', [False, True], ids=['iters', 'epochs'])
def test_resume_is_bit_exact_with_dropout_and_augmentation(tmp_path, by_epoch):
    length, stop = (6, 4) if not by_epoch else (3, 2)
    full = make_runner(tmp_path / 'full', by_epoch, length)
    full.train()
    expected = final_weight(full)

    results = {}
    for hooks in (True, False):
        work_dir = tmp_path / f'cut_{hooks}'
        make_runner(work_dir, by_epoch, stop, hooks).train()
        name = f'{"epoch" if by_epoch else "iter"}_{stop}.pth'
        with checkpoint_policy():
            resumed = make_runner(
                work_dir,
                by_epoch,
                length,
                hooks,
                resume=True,
                load_from=str(work_dir / name),
            )
            resumed.train()
        results[hooks] = final_weight(resumed)
    assert torch.equal(results[True], expected)
    # Without the hook the resumed run draws differently.
    assert not torch.equal(results[False], expected)


def test_non_finite_loss_stops_before_its_checkpoint(tmp_path):
    runner = make_runner(tmp_path, False, 6, nan_at=3)
    with pytest.raises(FloatingPointError) as info:
        runner.train()
    message = str(info.value)
    assert message.startswith('Iteration 3 (epoch 1): non-finite loss terms')
    assert 'loss=nan' in message and 'loss_aux=nan' in message
    assert 'default_hooks.finite_loss.enable=False' in message
    assert (tmp_path / 'iter_2.pth').exists()
    assert not (tmp_path / 'iter_4.pth').exists()


def test_a_step_that_breaks_the_weights_stops_at_once(tmp_path):
    # Its loss was finite: only the weights tell.
    runner = make_runner(tmp_path, False, 6, lr=float('inf'))
    with pytest.raises(FloatingPointError) as info:
        runner.train()
    message = str(info.value)
    assert message.startswith('Iteration 1 (epoch 1): non-finite weights')
    assert 'fc.weight' in message and 'loss terms' not in message
    assert not list(tmp_path.glob('*.pth'))


def test_non_finite_weights_are_not_saved(tmp_path):
    runner = make_runner(tmp_path, False, 2)
    state = dict(runner.model.state_dict())
    state['fc.weight'] = torch.full_like(state['fc.weight'], float('inf'))
    with pytest.raises(FloatingPointError, match=r'fc\.weight'):
        FiniteLossHook().before_save_checkpoint(runner, dict(state_dict=state))
    FiniteLossHook().before_save_checkpoint(
        runner, dict(state_dict=runner.model.state_dict())
    )
