import socket
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.model import BaseModel, MMDistributedDataParallel
from mmengine.optim import OptimWrapper
from mmengine.runner import Runner
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from xattn_mm.det.engine import FreezeBackboneHook
from xattn_mm.engine import checkpoint_policy
from xattn_mm.testing.distributed import run_on_ranks


class ToyDetector(BaseModel):
    """A backbone and a head; the loss trains both."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4))
        self.head = nn.Linear(4, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.head(self.backbone(inputs))
        if mode == 'loss':
            return dict(loss=((out - 1) ** 2).mean())
        return out


class ToyData(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, idx: int) -> dict:
        g = torch.Generator().manual_seed(idx)
        return dict(inputs=torch.randn(2, generator=g))


class RecordWeights(Hook):
    """Snapshot of the backbone and head weights after every epoch."""

    def __init__(self) -> None:
        self.snapshots = {}

    def after_train_epoch(self, runner) -> None:
        model = runner.model
        self.snapshots[runner.epoch] = (
            model.backbone[0].weight.detach().clone(),
            model.head.weight.detach().clone(),
        )


def fake_runner(model, epoch):
    return SimpleNamespace(
        model=model, epoch=epoch, logger=MMLogger.get_current_instance()
    )


def trainable(module):
    return [p.requires_grad for p in module.parameters()]


def test_freezes_from_start_epoch_on_and_leaves_the_rest():
    model = ToyDetector()
    hook = FreezeBackboneHook(start_epoch=2)
    for epoch in (0, 1):
        hook.before_train_epoch(fake_runner(model, epoch))
        assert all(trainable(model.backbone)), epoch
    hook.before_train_epoch(fake_runner(model, 2))
    assert not any(trainable(model.backbone))
    assert all(trainable(model.head))
    # Only the parameters: the module mode is the model's (official code).
    assert model.backbone.training


def test_a_run_resumed_after_start_epoch_is_frozen_at_once():
    model = ToyDetector()
    FreezeBackboneHook(start_epoch=2).before_train_epoch(fake_runner(model, 5))
    assert not any(trainable(model.backbone))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_unwraps_a_ddp_model():
    dist.init_process_group(
        'gloo',
        init_method=f'tcp://127.0.0.1:{_free_port()}',
        rank=0,
        world_size=1,
    )
    try:
        model = ToyDetector()
        wrapped = nn.parallel.DistributedDataParallel(model)
        FreezeBackboneHook(start_epoch=0).before_train_epoch(
            fake_runner(wrapped, 0)
        )
        assert not any(trainable(model.backbone))
        assert all(trainable(model.head))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize('start_epoch', [-1, 1.5, True, '2'])
def test_invalid_start_epoch_raises(start_epoch):
    with pytest.raises(ValueError, match='start_epoch'):
        FreezeBackboneHook(start_epoch=start_epoch)


def test_a_model_without_backbone_raises():
    with pytest.raises(AttributeError, match='backbone'):
        FreezeBackboneHook(start_epoch=0).before_train_epoch(
            fake_runner(nn.Linear(2, 2), 0)
        )


def make_runner(work_dir, max_epochs, recorder, resume_from=None):
    return Runner(
        model=ToyDetector(),
        work_dir=str(work_dir),
        experiment_name=f'freeze_backbone_{max_epochs}',
        train_dataloader=dict(
            dataset=ToyData(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=4,
            num_workers=0,
            collate_fn=dict(type='default_collate'),
        ),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        custom_hooks=[
            dict(type='FreezeBackboneHook', start_epoch=2),
            recorder,
        ],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        default_scope='mmdet',
        load_from=resume_from,
        resume=resume_from is not None,
        randomness=dict(seed=0),
    )


def test_in_a_runner_the_backbone_trains_two_epochs_then_stays(tmp_path):
    recorder = RecordWeights()
    make_runner(tmp_path, 3, recorder).train()
    snaps = recorder.snapshots
    assert not torch.equal(snaps[0][0], snaps[1][0])  # epoch 2 trained it
    assert torch.equal(snaps[1][0], snaps[2][0])  # epoch 3 did not
    assert not torch.equal(snaps[1][1], snaps[2][1])  # the head trains on

    # Resume after the freeze: frozen from the first resumed step. The run's
    # own checkpoint loads under the policy, with no trust.
    resumed = RecordWeights()
    with checkpoint_policy():
        runner = make_runner(
            tmp_path, 4, resumed, str(tmp_path / 'epoch_3.pth')
        )
        runner.train()
    assert torch.equal(resumed.snapshots[3][0], snaps[2][0])
    assert not torch.equal(resumed.snapshots[3][1], snaps[2][1])


def _count_and_allreduce(counts, bucket):
    counts.append(bucket.buffer().numel())
    return default_hooks.allreduce_hook(None, bucket)


def _train_with_freeze_on_rank(rank):
    """Three epochs of two steps on a DDP ToyDetector, frozen from epoch 1;
    the gradient elements each step all-reduces, per epoch."""
    torch.manual_seed(0)
    model = ToyDetector()
    runner = fake_runner(
        MMDistributedDataParallel(module=model, find_unused_parameters=False),
        0,
    )
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    hook = FreezeBackboneHook(start_epoch=1)
    traffic, hooked = {}, None
    for epoch in range(3):
        runner.epoch = epoch
        hook.before_train_epoch(runner)
        if runner.model is not hooked:  # once per DDP wrapper
            hooked, counts = runner.model, []
            hooked.register_comm_hook(counts, _count_and_allreduce)
        counts.clear()
        for step in range(2):
            g = torch.Generator().manual_seed(100 * rank + 10 * epoch + step)
            runner.model.train_step(
                dict(inputs=torch.randn(4, 2, generator=g)), optim
            )
        traffic[epoch] = sum(counts) // 2
    return dict(
        traffic=traffic,
        wrapped=runner.model.module is model,
        backbone=model.backbone[0].weight.detach(),
        head=model.head.weight.detach(),
    )


def test_frozen_backbone_leaves_the_ddp_gradient_traffic():
    ranks = run_on_ranks(_train_with_freeze_on_rank)
    head = sum(p.numel() for p in ToyDetector().head.parameters())
    for result in ranks:
        assert result['wrapped']
        # 25 gradient elements per step before the freeze, the head's 5
        # after (find_unused_parameters=True would keep sending 25).
        assert result['traffic'] == {0: 25, 1: head, 2: head}
    for name in ('backbone', 'head'):  # the ranks stay in sync
        torch.testing.assert_close(ranks[0][name], ranks[1][name])
