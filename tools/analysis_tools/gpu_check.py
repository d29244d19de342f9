"""The prepared GPU check: every component on CUDA against references, the
attention kernels, and the training-step figures of docs/benchmarks.md.

    python tools/analysis_tools/gpu_check.py [--out work_dirs/gpu_check.json]
    python tools/analysis_tools/gpu_check.py --dry-run   # toy sizes, CPU

Sections (each one's failure is recorded and the others still run):

- ``environment``: torch, CUDA, the device, whether mmcv's compiled ops exist;
- ``fp64``: forward + backward of each component (indirect attention with
  BoxRPB, the IA-DETR detector with each decoder, StochCA, DAT + CSM, the
  TMA neck, Swin V2 with global blocks) on the device in float32 (TF32
  off) against the same weights in float64 on the CPU: relative L2 error
  of the output
  and of all parameter gradients (a fixed random projection of the output
  is back-propagated);
- ``amp``: the same under the device's fp16 and bf16 autocast against its
  float32;
- ``kernels``: which ``scaled_dot_product_attention`` kernel each
  component's calls reach (profiler op names: flash, efficient, cudnn,
  math);
- ``ia_detr_step``: the VOC config's model (Swin V2-S, 300 + 1500 queries,
  2 images per GPU at 800 x 1088) training steps in fp32, fp16 (mmengine's
  AmpOptimWrapper, dynamic loss scale) and bf16 (AutocastOptimWrapper):
  median step time, images / s, peak memory (fp16: steps the loss scaler
  skipped);
- ``benchmarks``: the benchmark scripts (indirect attention, IA decoder vs
  double cross-attention, StochCA, DACSM, TMT) on the device, their output
  (``--benchmark-timeout`` seconds each).

It prints a table and writes the JSON (after every section, so that a run
cut short keeps what it measured). Nothing is downloaded (random
weights). mmcv's compiled ops are not needed: where ``mmcv._ext`` is missing
(or with ``--without-mmcv-ops``) an ``mmcv._ext`` whose every op raises is
registered in this process only, so that mmdet imports, and mmdet's focal
loss takes its pure-PyTorch path (one-hot targets, the same value as mmcv's
kernel); any other mmcv op reached fails with its name. The GPU machine's
wheels and command: docs/benchmarks.md, "GPU check".
"""

import argparse
import copy
import gc
import json
import os
import platform
import runpy
import statistics
import subprocess
import sys
import time
import traceback
import types
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(__file__).resolve().parent
AMP = {'fp16': torch.float16, 'bf16': torch.bfloat16}
KERNELS = {
    'flash': '_scaled_dot_product_flash_attention',
    'efficient': '_scaled_dot_product_efficient_attention',
    'cudnn': '_scaled_dot_product_cudnn_attention',
    'fused_cpu': '_scaled_dot_product_flash_attention_for_cpu',
    'math': '_scaled_dot_product_attention_math',
}


# -- running without mmcv's compiled ops --------------------------------------


class _MissingOps(types.ModuleType):
    """Stands in for ``mmcv._ext``: every op raises, naming itself."""

    def __getattr__(self, name: str):
        if name.startswith('__'):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise RuntimeError(
                f'mmcv op {name} is not compiled here: gpu_check runs '
                'without mmcv._ext, and this step needs it.'
            )

        return missing


def _focal_loss_without_mmcv(
    pred,
    target,
    weight=None,
    gamma=2.0,
    alpha=0.25,
    reduction='mean',
    avg_factor=None,
):
    """mmdet's ``sigmoid_focal_loss`` (the mmcv kernel's wrapper) computed
    by its pure-PyTorch twin, as mmdet does on the CPU."""
    import torch.nn.functional as F
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss

    classes = pred.size(1)
    one_hot = F.one_hot(target, classes + 1)[:, :classes].type_as(pred)
    return py_sigmoid_focal_loss(
        pred, one_hot, weight, gamma, alpha, reduction, avg_factor
    )


def prepare_hosts(without_ops: bool) -> Dict[str, str]:
    """Import the hosts and xattn_mm, standing in for mmcv's ops if needed.

    Returns:
        dict[str, str]: What was done (``mmcv_ext``: ``compiled`` or
        ``missing (stand-in)``).
    """
    try:
        if without_ops:
            raise ImportError('--without-mmcv-ops')
        import mmcv._ext  # noqa: F401

        state = 'compiled'
    except ImportError:
        sys.modules['mmcv._ext'] = _MissingOps('mmcv._ext')
        state = 'missing (stand-in)'
    import mmdet.models.losses.focal_loss as focal

    import xattn_mm.cls  # noqa: F401
    import xattn_mm.det  # noqa: F401
    import xattn_mm.seg  # noqa: F401

    if state != 'compiled':
        focal.sigmoid_focal_loss = _focal_loss_without_mmcv
    return dict(mmcv_ext=state)


# -- components ---------------------------------------------------------------


class Component:
    """A module and how to run it: ``inputs(device, dtype)`` builds the
    inputs, ``compute(module, inputs)`` returns the output tensor."""

    def __init__(
        self,
        name: str,
        build: Callable[[], nn.Module],
        inputs: Callable,
        compute: Callable,
    ) -> None:
        self.name, self.build = name, build
        self.inputs, self.compute = inputs, compute


def _det_components(dry: bool) -> List[Component]:
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope

    from xattn_mm.core import IndirectAttention
    from xattn_mm.testing.one_shot import one_shot_batch, tiny_ia_detr_cfg

    dims, heads = (32, 4) if dry else (256, 8)
    queries, grid = (10, (4, 5)) if dry else (300, (32, 40))

    def attention():
        torch.manual_seed(0)
        return IndirectAttention(dims, heads)

    def attention_inputs(device, dtype):
        g = torch.Generator().manual_seed(1)
        n = grid[0] * grid[1]

        def rand(*shape):
            return torch.randn(*shape, generator=g).to(device, dtype)

        boxes = torch.cat(
            [
                torch.rand(2, queries, 2, generator=g) * 0.6 + 0.2,
                torch.rand(2, queries, 2, generator=g) * 0.3 + 0.05,
            ],
            -1,
        ).to(device, dtype)
        return dict(
            query=rand(2, queries, dims),
            key=rand(2, n, dims),
            value=rand(2, n, dims),
            spatial_shape=grid,
            stride=16.0,
            query_pos=rand(2, queries, dims),
            key_pos=rand(2, n, dims),
            value_pos=rand(2, n, dims),
            reference_boxes=boxes,
        )

    components = [
        Component(
            'indirect_attention',
            attention,
            attention_inputs,
            lambda m, x: m(**x),
        )
    ]
    sizes = ((64, 80), (48, 64)) if dry else ((512, 640), (448, 576))
    exemplars = ((32, 32), (40, 24)) if dry else ((256, 256), (200, 160))
    for decoder in (
        'IADETRDecoder',
        'MisalignedAttentionDecoder',
        'DoubleCrossAttentionDecoder',
    ):

        def detector(decoder=decoder):
            with DefaultScope.overwrite_default_scope('mmdet'):
                torch.manual_seed(0)
                model = MODELS.build(tiny_ia_detr_cfg(decoder_type=decoder))
                model.init_weights()
            return model.eval()

        def detector_inputs(device, dtype):
            batch = one_shot_batch(sizes, exemplars, num_boxes=(2, 1))
            model = detector()  # the preprocessor alone, on the CPU
            data = model.data_preprocessor(batch, True)
            for key in ('target', 'exemplar'):
                data['inputs'][key] = data['inputs'][key].to(device, dtype)
            data['data_samples'] = [s.to(device) for s in data['data_samples']]
            return data

        components.append(
            Component(
                f'ia_detr[{decoder}]',
                detector,
                detector_inputs,
                lambda m, d: torch.cat(m(**d, mode='tensor'), -1),
            )
        )
    return components


def _cls_components(dry: bool) -> List[Component]:
    from mmpretrain.registry import MODELS

    arch = (
        dict(embed_dims=32, num_layers=2, num_heads=4, feedforward_channels=64)
        if dry
        else 'deit-small'
    )
    size = 32 if dry else 224
    patch = 8 if dry else 16

    def images(device, dtype):
        g = torch.Generator().manual_seed(5)
        return torch.randn(2, 3, size, size, generator=g).to(device, dtype)

    def stoch_ca():
        torch.manual_seed(0)
        model = MODELS.build(
            dict(
                type='StochCA',
                p=1.0,
                backbone=dict(
                    type='VisionTransformer',
                    arch=arch,
                    img_size=size,
                    patch_size=patch,
                ),
            )
        )
        model.init_weights()
        with torch.no_grad():  # the teacher's keys differ from the student's
            for p in model.backbone.parameters():
                p.add_(torch.randn_like(p) * 0.2)
        model.train()  # mmpretrain's BaseBackbone.train returns None
        return model

    def uda():
        torch.manual_seed(0)
        dims = 32 if dry else 384
        model = MODELS.build(
            dict(
                type='UDAClassifier',
                scales=(1.0, 2.0, 0.5),
                scale_sampling='cycle',
                backbone=dict(
                    type='DAT', arch=arch, img_size=size, patch_size=patch
                ),
                head=dict(
                    type='CSMHead',
                    num_classes=3,
                    in_channels=dims,
                    num_subcenters=3,
                ),
            )
        )
        model.init_weights()
        return model

    def uda_inputs(device, dtype):
        from mmpretrain.structures import DataSample

        # model.loss skips the data preprocessor: the samples move here.
        source = [DataSample().set_gt_label(i % 3).to(device) for i in (0, 1)]
        target = []
        for i in range(2):
            sample = DataSample()
            sample.set_field(torch.tensor([i % 3]), 'pseudo_label')
            target.append(sample.to(device))
        return dict(
            inputs=dict(
                source=images(device, dtype),
                target=images(device, dtype).flip(-1),
            ),
            data_samples=dict(source=source, target=target),
        )

    def swin():
        torch.manual_seed(0)
        model = MODELS.build(
            dict(
                type='GlobalSwinTransformerV2',
                arch=dict(
                    embed_dims=16 if dry else 96,
                    depths=[2, 2, 2, 2],
                    num_heads=[1, 2, 2, 4] if dry else [3, 6, 12, 24],
                    extra_norm_every_n_blocks=0,
                ),
                window_size=4 if dry else 16,
                pretrained_window_sizes=[4, 4, 4, 2]
                if dry
                else [12, 12, 12, 6],
                out_indices=(2, 3),
                drop_path_rate=0.0,  # random draws differ between dtypes
                pad_small_map=True,
            )
        )
        model.init_weights()
        return model

    def swin_inputs(device, dtype):
        g = torch.Generator().manual_seed(0)
        shape = (2, 3, 64, 96) if dry else (2, 3, 512, 640)
        return torch.randn(*shape, generator=g).to(device, dtype)

    return [
        Component('stoch_ca', stoch_ca, images, lambda m, x: m(x)[-1]),
        Component(
            'dat_csm',
            uda,
            uda_inputs,
            lambda m, d: torch.stack(list(m.loss(**d).values())),
        ),
        Component(
            'global_swin_v2',
            swin,
            swin_inputs,
            lambda m, x: torch.cat([o.flatten() for o in m(x)]),
        ),
    ]


def _seg_components(dry: bool) -> List[Component]:
    from xattn_mm.seg.models import RegionMap, TMANeck

    channels, grid = (16, 4) if dry else (768, 32)

    def neck():
        torch.manual_seed(0)
        module = TMANeck(
            [channels, channels],
            num_heads=2 if dry else 12,
            mode='both',
            num_global_tokens=2,
            bias_scale=1.5,
        )
        with torch.no_grad():  # new blocks start as the identity
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        return module

    def inputs(device, dtype):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, channels, grid, grid, generator=g).to(device, dtype)
        labels = torch.randint(0, 3, (2, grid, grid), generator=g)
        priority = torch.rand(2, 3, generator=g).to(device, dtype)
        return x, RegionMap(labels.to(device), priority)

    return [
        Component(
            'tma_neck',
            neck,
            inputs,
            lambda m, xr: torch.stack(m([xr[0], xr[0]], xr[1])),
        )
    ]


def components(dry: bool) -> List[Component]:
    return _det_components(dry) + _cls_components(dry) + _seg_components(dry)


# -- numerics -----------------------------------------------------------------


def _run(module: nn.Module, comp: Component, device, dtype, autocast=None):
    module.zero_grad(set_to_none=True)
    inputs = comp.inputs(device, dtype)
    context = (
        torch.autocast(device.type, dtype=autocast)
        if autocast
        else nullcontext()
    )
    with context:
        torch.manual_seed(0)
        out = comp.compute(module, inputs)
    g = torch.Generator().manual_seed(0)
    weights = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (out.double() * weights.to(device)).sum().backward()
    grads = {
        n: p.grad.detach().double().cpu()
        for n, p in module.named_parameters()
        if p.grad is not None
    }
    return out.detach().double().cpu(), grads


def _errors(out, grads, ref_out, ref_grads) -> Dict[str, float]:
    def rel(a, b):
        return float((a - b).norm() / b.norm().clamp_min(1e-30))

    names = sorted(set(grads) & set(ref_grads))
    finite = bool(torch.isfinite(out).all()) and all(
        bool(torch.isfinite(grads[n]).all()) for n in names
    )
    return dict(
        output=rel(out, ref_out),
        grad=rel(
            torch.cat([grads[n].flatten() for n in names]),
            torch.cat([ref_grads[n].flatten() for n in names]),
        ),
        finite=finite,
        missing_grads=len(set(grads) ^ set(ref_grads)),
    )


def _failure(error: Exception) -> Dict:
    return dict(
        error=dict(
            type=type(error).__name__,
            message=str(error)[:2000],
            traceback=traceback.format_exc()[-4000:],
        )
    )


def _each(comps, run: Callable) -> Dict:
    """``run(comp)`` -> {item: result} for every component; a component that
    raises is recorded as ``{name: {'error': ...}}`` and the others go on."""
    results = {}
    for comp in comps:
        try:
            results.update(run(comp))
        except Exception as error:
            results[comp.name] = _failure(error)
    return results


class _NoTF32:
    """CUDA float32 matrix products and convolutions without TF32 (its
    10-bit mantissa would read as a 1e-3 error against float64, and move
    IA-DETR's top-k proposals); the previous settings come back on exit."""

    def __enter__(self):
        self.saved = (
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
        )
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc):
        (
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
        ) = self.saved


def section_fp64(comps, device) -> Dict:
    """Float32 on the device, TF32 off, against float64 on the CPU."""
    cpu = torch.device('cpu')

    def run(comp):
        module = comp.build()
        ref = _run(copy.deepcopy(module).double(), comp, cpu, torch.float64)
        with _NoTF32():
            out = _run(module.to(device), comp, device, torch.float32)
        return {comp.name: _errors(*out, *ref)}

    return _each(comps, run)


def section_amp(comps, device) -> Dict:
    def run(comp):
        module = comp.build().to(device)
        ref = _run(module, comp, device, torch.float32)
        return {
            f'{comp.name} {label}': _errors(
                *_run(module, comp, device, torch.float32, autocast=dtype),
                *ref,
            )
            for label, dtype in AMP.items()
        }

    return _each(comps, run)


def section_kernels(comps, device) -> Dict:
    """Counts of each SDPA kernel op in a forward + backward pass."""
    from torch.profiler import ProfilerActivity, profile

    def run(comp):
        module = comp.build().to(device)
        results = {}
        for label, dtype in [('fp32', None), *AMP.items()]:
            context = (
                torch.autocast(device.type, dtype=dtype)
                if dtype
                else nullcontext()
            )
            activities = [ProfilerActivity.CPU]
            with profile(activities=activities) as prof, context:
                torch.manual_seed(0)
                out = comp.compute(module, comp.inputs(device, torch.float32))
                out.float().sum().backward()
            counts = {}
            for event in prof.key_averages():
                for kernel, op in KERNELS.items():
                    if event.key == f'aten::{op}':
                        counts[kernel] = counts.get(kernel, 0) + event.count
            results[f'{comp.name} {label}'] = counts
        return results

    return _each(comps, run)


# -- IA-DETR training step ----------------------------------------------------


def _optim_wrapper(label: str, model: nn.Module, device):
    from mmengine.optim import AmpOptimWrapper, OptimWrapper

    from xattn_mm.engine import AutocastOptimWrapper

    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-5
    )
    if label == 'fp32':
        return OptimWrapper(optimizer), nullcontext()
    if label == 'bf16':
        return AutocastOptimWrapper(optimizer, dtype='bfloat16'), nullcontext()
    if device.type == 'cuda':  # what tools/train.py --amp builds on CUDA
        return AmpOptimWrapper(
            optimizer=optimizer, loss_scale='dynamic', dtype='float16'
        ), nullcontext()
    # The CPU has no loss scaler: plain fp16 autocast (dry run only).
    return OptimWrapper(optimizer), torch.autocast('cpu', dtype=torch.float16)


VOC_CONFIG = 'configs/ia_detr/voc_oneshot.py'


def _build_detector(config: str):
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    cfg_model = Config.fromfile(str(ROOT / config)).model
    cfg_model.backbone.init_cfg = None  # random weights, no download
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        model = MODELS.build(cfg_model)
        model.init_weights()
    return model


def section_ia_detr_step(
    device,
    dry: bool,
    steps: int,
    config: Optional[str] = None,
    image_size: Optional[List[int]] = None,
) -> Dict:
    """Train steps of ``config``'s model (default: the VOC config at 800 x
    1088; the dry run: the test-size model at 64 x 80, after building the
    VOC model once to check that its config builds here)."""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope

    from xattn_mm.testing.one_shot import one_shot_batch, tiny_ia_detr_cfg

    extra = {}
    if dry and config is None:
        voc = _build_detector(VOC_CONFIG)
        extra['voc_model_parameters_m'] = (
            sum(p.numel() for p in voc.parameters()) / 1e6
        )
        del voc
        with DefaultScope.overwrite_default_scope('mmdet'):
            torch.manual_seed(0)
            model = MODELS.build(tiny_ia_detr_cfg())
            model.init_weights()
        size = image_size or [64, 80]
    else:
        model = _build_detector(config or VOC_CONFIG)
        size = image_size or [800, 1088]
    sizes = (tuple(size),) * 2
    side = max(16, min(size) * 3 // 8)  # 300 at the VOC scale
    exemplars = ((side, side),) * 2
    model = model.to(device).train()
    batch = one_shot_batch(sizes, exemplars, num_boxes=(5, 3))
    results = dict(
        **extra,
        config=config or ('tiny_ia_detr_cfg' if dry else VOC_CONFIG),
        images_per_step=len(sizes),
        target_size=list(sizes[0]),
        parameters_m=sum(p.numel() for p in model.parameters()) / 1e6,
        queries=[model.num_queries, getattr(model, 'num_queries_one2many', 0)],
    )
    # fp16 last: a non-finite value there could trip a device-side assert
    # (indirect attention's reference-box check) and end CUDA for the rest
    # of the process.
    for label in ('fp32', 'bf16', 'fp16'):
        wrapper, context = _optim_wrapper(label, model, device)
        scaler = getattr(wrapper, 'loss_scaler', None)
        times, losses, skipped = [], [], 0
        if device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        for i in range(2 + steps):
            scale = scaler.get_scale() if scaler is not None else None
            start = time.perf_counter()
            with context:
                log = model.train_step(batch, wrapper)
            loss = float(log['loss'])  # also a sync
            if device.type == 'cuda':
                torch.cuda.synchronize()
            if i >= 2:
                times.append((time.perf_counter() - start) * 1e3)
                losses.append(loss)
                # A dynamic scaler lowers its scale when it skips a step
                # (non-finite gradients): such steps run no optimizer step.
                if scale is not None and scaler.get_scale() < scale:
                    skipped += 1
        ms = statistics.median(times)
        results[label] = dict(
            skipped_steps=skipped,
            loss_scale=scaler.get_scale() if scaler is not None else None,
            step_ms=ms,
            images_per_s=len(sizes) * 1e3 / ms,
            peak_mib=(
                torch.cuda.max_memory_allocated() / 2**20
                if device.type == 'cuda'
                else None
            ),
            losses_finite=all(
                v == v and abs(v) != float('inf') for v in losses
            ),
        )
        del wrapper
    return results


# -- benchmark scripts --------------------------------------------------------


def benchmark_commands(device: str, dry: bool) -> Dict[str, List[str]]:
    """Each benchmark script's command line, run through this tool (so that
    it imports the hosts as this process does)."""
    toy_attention = '--queries 10 --grid 4 5 --dims 32 --heads 4 --warmup 0'
    toy_vit = '--arch deit-tiny --size 32 --batch 2 --steps 1 --warmup 0'
    options = dict(
        indirect_attention=(toy_attention + ' --repeats 1', '--repeats 20'),
        ia_decoder=(
            toy_attention + ' --layers 1 --repeats 1',
            '--repeats 10',
        ),
        stoch_ca=(toy_vit, '--arch b --batch 32 --steps 20'),
        dacsm=(toy_vit, '--arch deit-small --batch 32 --steps 10'),
        tmt=(
            '--size 64 --batch 2 --steps 1 --warmup 0',
            '--size 512 --batch 4 --steps 5',
        ),
    )
    commands = {}
    for name, (toy, full) in options.items():
        script = str(TOOLS / f'benchmark_{name}.py')
        command = [sys.executable, __file__, '--run-benchmark', script]
        command += ['--device', device, *(toy if dry else full).split()]
        if name == 'indirect_attention':
            command += ['--variants', 'explicit_axial', 'xattn_mm']
        commands[name] = command
    return commands


def run_benchmark(script: str, argv: List[str]) -> None:
    """Run a benchmark script as ``__main__`` after :func:`prepare_hosts`
    (the parent's ``--without-mmcv-ops`` travels in ``XATTN_NO_MMCV_OPS``)."""
    prepare_hosts(os.environ.get('XATTN_NO_MMCV_OPS') == '1')
    sys.path.insert(0, str(TOOLS))
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name='__main__')


def section_benchmarks(
    device, dry: bool, timeout: float, without_ops: bool
) -> Dict:
    """Each benchmark script in a child process, ``timeout`` seconds each
    (a script that runs out is recorded and the next one runs)."""
    if device.type == 'cuda':  # the children need this process's cache
        gc.collect()
        torch.cuda.empty_cache()
    results = {}
    for name, command in benchmark_commands(device.type, dry).items():
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=dict(os.environ, XATTN_NO_MMCV_OPS=str(int(without_ops))),
            )
        except subprocess.TimeoutExpired as error:
            results[name] = dict(
                returncode='timeout',
                seconds=time.perf_counter() - start,
                output=[],
                error=[f'no result within --benchmark-timeout {timeout} s'],
            )
            print(error, file=sys.stderr)
            continue
        lines = [
            ln
            for ln in proc.stdout.splitlines()
            if ln.startswith(
                (
                    '|',
                    'xattn_mm vs',
                    'IADETRDecoder vs',
                    'cross-attention blocks',
                )
            )
        ]
        results[name] = dict(
            returncode=proc.returncode,
            seconds=time.perf_counter() - start,
            output=lines,
            error=proc.stderr.strip().splitlines()[-1:]
            if proc.returncode
            else [],
        )
    return results


# -- report -------------------------------------------------------------------


def environment(device, hosts: Dict[str, str]) -> Dict:
    info = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        device=str(device),
        **hosts,
    )
    # The timed sections run with the defaults users get; fp64 turns TF32
    # off for its own comparison.
    info['tf32'] = dict(
        matmul=torch.backends.cuda.matmul.allow_tf32,
        cudnn=torch.backends.cudnn.allow_tf32,
    )
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
        info['capability'] = '.'.join(
            map(str, torch.cuda.get_device_capability(device))
        )
    return info


def print_table(report: Dict) -> None:
    print('| section | item | result |')
    print('| --- | --- | --- |')
    for section, content in report.items():
        if not isinstance(content, dict):
            continue
        for item, value in content.items():
            if (
                isinstance(value, dict)
                and 'output' in value
                and (isinstance(value['output'], float))
            ):
                text = (
                    f'out {value["output"]:.1e}, grad {value["grad"]:.1e}'
                    f'{"" if value["finite"] else ", NOT FINITE"}'
                )
            elif isinstance(value, dict) and 'step_ms' in value:
                mib = value['peak_mib']
                text = (
                    f'{value["step_ms"]:.1f} ms/step, '
                    f'{value["images_per_s"]:.2f} img/s'
                    + (f', peak {mib:.0f} MiB' if mib else '')
                    + (
                        f', {value["skipped_steps"]} step(s) skipped by '
                        f'the loss scaler (scale {value["loss_scale"]:g})'
                        if value.get('skipped_steps')
                        else ''
                    )
                )
            elif isinstance(value, dict) and 'returncode' in value:
                text = (
                    '; '.join(
                        ln
                        for ln in value['output']
                        if not ln.startswith('| ---')
                    )[-300:]
                    if value['returncode'] == 0
                    else f'FAILED: {value["error"]}'
                )
            else:
                text = json.dumps(value)[:300]
            print(f'| {section} | {item} | {text} |')


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['--run-benchmark']:
        run_benchmark(argv[1], argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--dry-run',
        action='store_true',
        help='toy sizes on the CPU (what the test runs)',
    )
    parser.add_argument('--out', default='work_dirs/gpu_check.json')
    parser.add_argument(
        '--sections',
        nargs='+',
        default=['fp64', 'amp', 'kernels', 'ia_detr_step', 'benchmarks'],
    )
    parser.add_argument(
        '--steps',
        type=int,
        default=10,
        help='timed IA-DETR train steps per precision',
    )
    parser.add_argument(
        '--config',
        help=f'detector config of ia_detr_step (default {VOC_CONFIG}; '
        'with --dry-run: the test-size model)',
    )
    parser.add_argument(
        '--image-size', type=int, nargs=2, help='ia_detr_step target H W'
    )
    parser.add_argument(
        '--benchmark-timeout',
        type=float,
        default=120,
        help='seconds for each benchmark script (5 scripts)',
    )
    parser.add_argument(
        '--without-mmcv-ops',
        action='store_true',
        help='stand in for mmcv._ext even where it exists',
    )
    args = parser.parse_args(argv)
    if args.dry_run:
        device = torch.device('cpu')
        if args.config is None:
            args.steps = 1
    elif not torch.cuda.is_available():
        print(
            'gpu_check: no CUDA device (use --dry-run on a CPU).',
            file=sys.stderr,
        )
        return 2
    else:
        device = torch.device('cuda')
    started = time.perf_counter()
    hosts = prepare_hosts(args.without_mmcv_ops)
    report: Dict = dict(environment=environment(device, hosts))
    comps = components(args.dry_run)
    runners = dict(
        fp64=lambda: section_fp64(comps, device),
        amp=lambda: section_amp(comps, device),
        kernels=lambda: section_kernels(comps, device),
        ia_detr_step=lambda: section_ia_detr_step(
            device, args.dry_run, args.steps, args.config, args.image_size
        ),
        benchmarks=lambda: section_benchmarks(
            device,
            args.dry_run,
            args.benchmark_timeout,
            hosts['mmcv_ext'] != 'compiled',
        ),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    failed = []
    report['failed'] = failed
    for name in args.sections:
        start = time.perf_counter()
        try:
            report[name] = runners[name]()
        except Exception as error:  # recorded; the other sections go on
            report[name] = _failure(error)
        if 'error' in report[name] or any(
            isinstance(v, dict) and (v.get('error') or v.get('returncode'))
            for v in report[name].values()
        ):
            failed.append(name)
        report.setdefault('seconds', {})[name] = time.perf_counter() - start
        print(
            f'[gpu_check] {name}: {report["seconds"][name]:.1f} s', flush=True
        )
        report['total_seconds'] = time.perf_counter() - started
        # After every section: a run cut short keeps what it measured.
        out.write_text(json.dumps(report, indent=1, default=str))
    print_table(report)
    print(
        f'[gpu_check] {len(failed)} failed section(s) {failed}; '
        f'{report["total_seconds"]:.0f} s; JSON: {out}'
    )
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
