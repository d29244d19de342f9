"""Train indirect, naive misaligned and cross-attention models on the IA-DETR
paper's synthetic tasks and compare their test accuracy.

Tasks and models: :mod:`xattn_mm.analysis.synthetic_tasks` (sorting by an
arbitrary ordering, per-token accuracy; sequence retrieval, accuracy of the
start index). Every (task, model, seed) run trains from scratch on 1000
generated pairs and tests on 200 others. The tool prints a markdown table
of test accuracy (mean ± sample std over the seeds) and the wall time, and
writes to ``--out-dir``:

- ``synthetic_tasks.png``: bar plot of the means, std error bars;
- ``synthetic_tasks.json``: the arguments, every run's numbers (final
  accuracies, per-epoch training loss and test accuracy), the summary and
  the wall time.

    python tools/analysis_tools/synthetic_tasks.py --seeds 0 1 2 \
        --out-dir work_dirs/synthetic_tasks

The defaults (30 epochs, 2 worker processes of 1 thread) take about 10
minutes on 2 CPU cores; docs/benchmarks.md has the numbers of the
100-epoch run (``--epochs 100``, 32.5 minutes) and their reading.
"""

import argparse
import json
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Dict, List

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xattn_mm.analysis.synthetic_tasks import (
    MODEL_KINDS,
    TASKS,
    train_and_evaluate,
)

MODEL_NAMES = dict(
    indirect='indirect attention',
    misaligned='naive misaligned',
    cross='cross-attention',
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tasks', nargs='+', choices=TASKS, default=TASKS)
    parser.add_argument(
        '--models', nargs='+', choices=MODEL_KINDS, default=MODEL_KINDS
    )
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--epochs', type=int, default=30)
    parser.add_argument('--num-train', type=int, default=1000)
    parser.add_argument('--num-test', type=int, default=200)
    parser.add_argument('--batch-size', type=int, default=50)
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument(
        '--threads', type=int, default=1, help='torch threads per run'
    )
    parser.add_argument(
        '--workers',
        type=int,
        default=2,
        help='runs in parallel processes (results do not depend on it)',
    )
    parser.add_argument('--out-dir', default='work_dirs/synthetic_tasks')
    args = parser.parse_args()
    for name in ('epochs', 'num_train', 'num_test', 'batch_size'):
        if getattr(args, name) <= 0:
            parser.error(f'--{name.replace("_", "-")} must be positive')
    if args.threads <= 0 or args.workers <= 0:
        parser.error('--threads and --workers must be positive')
    if min(args.seeds) < 0:
        parser.error('--seeds must be non-negative')
    return args


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def _run(job: dict) -> dict:
    return train_and_evaluate(**job)


def _report(run: dict) -> None:
    print(
        f'{run["task"]:9s} {run["model"]:10s} seed {run["seed"]}: '
        f'{100 * run["test_accuracy"]:.1f}% ({run["time_s"]:.0f} s)',
        flush=True,
    )


def summarise(runs: List[dict]) -> Dict[str, Dict[str, dict]]:
    """Mean and sample std (n - 1; 0 for one seed) of the test accuracy per
    (task, model), in percent.

    Args:
        runs (list[dict]): Results of
            :func:`xattn_mm.analysis.synthetic_tasks.train_and_evaluate`.

    Returns:
        dict: ``summary[task][model]`` holds ``accuracies`` (list, in run
        order), ``mean`` and ``std``.
    """
    summary: Dict[str, Dict[str, dict]] = {}
    for run in runs:
        cell = summary.setdefault(run['task'], {}).setdefault(
            run['model'], dict(accuracies=[])
        )
        cell['accuracies'].append(100 * run['test_accuracy'])
    for cells in summary.values():
        for cell in cells.values():
            values = cell['accuracies']
            cell['mean'] = statistics.fmean(values)
            cell['std'] = statistics.stdev(values) if len(values) > 1 else 0.0
    return summary


def table(summary: dict, tasks: List[str], models: List[str]) -> str:
    """Markdown table: one row per task, one column per model.

    Args:
        summary (dict): From :func:`summarise`.
        tasks (list[str]): Row order.
        models (list[str]): Column order.

    Returns:
        str: The table, cells ``mean ± std`` in percent.
    """
    lines = [
        '| task | ' + ' | '.join(MODEL_NAMES[m] for m in models) + ' |',
        '| --- |' + ' --- |' * len(models),
    ]
    for task in tasks:
        cells = [
            f'{summary[task][m]["mean"]:.1f} ± {summary[task][m]["std"]:.1f}'
            for m in models
        ]
        lines.append(f'| {task} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def plot(
    summary: dict,
    tasks: List[str],
    models: List[str],
    num_seeds: int,
    path: Path,
) -> None:
    """Grouped bars (one group per task) of the mean test accuracy with
    std error bars.

    Args:
        summary (dict): From :func:`summarise`.
        tasks (list[str]): Groups, left to right.
        models (list[str]): Bars within a group.
        num_seeds (int): Seeds per cell, for the title.
        path (Path): Where the PNG goes.
    """
    fig = Figure(figsize=(2.4 + 2.2 * len(tasks), 3.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / len(models)
    for k, model in enumerate(models):
        xs = [
            t + (k - (len(models) - 1) / 2) * width for t in range(len(tasks))
        ]
        means = [summary[t][model]['mean'] for t in tasks]
        stds = [summary[t][model]['std'] for t in tasks]
        bars = ax.bar(
            xs, means, width, yerr=stds, capsize=3, label=MODEL_NAMES[model]
        )
        ax.bar_label(bars, fmt='%.1f', padding=2, fontsize=7)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel('test accuracy (%)')
    ax.set_ylim(0, 105)
    ax.set_title(f'mean ± std over {num_seeds} seed(s)', fontsize=9)
    ax.legend(
        fontsize=8,
        loc='upper center',
        bbox_to_anchor=(0.5, -0.1),
        ncol=len(models),
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    args = parse_args()
    begin = time.perf_counter()
    jobs = [
        dict(
            task=task,
            model_kind=model,
            seed=seed,
            epochs=args.epochs,
            num_train=args.num_train,
            num_test=args.num_test,
            batch_size=args.batch_size,
            lr=args.lr,
        )
        for task in args.tasks
        for model in args.models
        for seed in args.seeds
    ]
    runs = []
    if args.workers == 1:
        _set_threads(args.threads)
        for job in jobs:
            runs.append(_run(job))
            _report(runs[-1])
    else:
        # spawn, not fork: forking a process that holds torch's thread pools
        # can deadlock the children.
        with ProcessPoolExecutor(
            args.workers,
            mp_context=multiprocessing.get_context('spawn'),
            initializer=_set_threads,
            initargs=(args.threads,),
        ) as pool:
            futures = [pool.submit(_run, job) for job in jobs]
            for future in as_completed(futures):
                _report(future.result())
            runs = [future.result() for future in futures]
    wall = time.perf_counter() - begin

    summary = summarise(runs)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(
        summary,
        args.tasks,
        args.models,
        len(args.seeds),
        out_dir / 'synthetic_tasks.png',
    )
    with open(out_dir / 'synthetic_tasks.json', 'w') as f:
        json.dump(
            dict(
                args=vars(args), runs=runs, summary=summary, wall_time_s=wall
            ),
            f,
            indent=1,
        )
    print(
        f'\nTest accuracy (%), mean ± std over seeds {args.seeds}, '
        f'{args.epochs} epochs:\n'
    )
    print(table(summary, args.tasks, args.models))
    print(f'\nwall time: {wall:.1f} s')
    print(f'written: {out_dir / "synthetic_tasks.png"}, ', end='')
    print(out_dir / 'synthetic_tasks.json')


if __name__ == '__main__':
    main()
