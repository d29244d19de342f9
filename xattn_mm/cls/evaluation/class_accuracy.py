"""Mean per-class accuracy (VisDA-2017's score) with the per-class table."""

import io
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmpretrain.evaluation import SingleLabelMetric
from mmpretrain.registry import METRICS
from rich.console import Console
from rich.table import Table


@METRICS.register_module()
class MeanClassAccuracy(BaseMetric):
    """Top-1 accuracy (%) per class, their mean, and overall accuracy.

    Keys, under the prefix ``accuracy``: ``mean_class`` (the mean over the
    classes present in the evaluated set, VisDA-2017's score), ``overall``
    (accuracy over samples, the Office / DomainNet score) and, with
    ``classwise``, ``class/<name>`` for each class. The per-class table is
    logged after every evaluation.

    Args:
        classwise (bool): Also return the per-class accuracies.
            Defaults to False.
        collect_device (str): Where results are gathered. Defaults to
            ``'cpu'``.
        prefix (str, optional): Key prefix. Defaults to ``'accuracy'``.
    """

    default_prefix = 'accuracy'

    def __init__(
        self,
        classwise: bool = False,
        collect_device: str = 'cpu',
        prefix: Optional[str] = None,
    ) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.classwise = classwise

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            pred = int(np.asarray(sample['pred_label']).reshape(-1)[0])
            gt = int(np.asarray(sample['gt_label']).reshape(-1)[0])
            self.results.append((gt, pred))

    def compute_metrics(self, results: List[tuple]) -> Dict[str, float]:
        gt, pred = np.asarray(results, dtype=np.int64).reshape(-1, 2).T
        classes = (self.dataset_meta or {}).get('classes')
        num_classes = (
            len(classes) if classes else int(max(gt.max(), pred.max())) + 1
        )
        if classes is None:
            classes = [str(c) for c in range(num_classes)]
        if max(gt.max(), pred.max()) >= num_classes:
            raise ValueError(
                f'Label {int(max(gt.max(), pred.max()))} is out of range '
                f'for the {num_classes} classes of dataset_meta.'
            )
        # Per-class accuracy is the per-class recall.
        _, recall, _, support = SingleLabelMetric.calculate(
            pred, gt, average=None, num_classes=num_classes
        )
        totals = support.numpy()
        present = totals > 0
        per_class = np.where(present, recall.numpy(), np.nan)
        metrics = {
            'mean_class': float(per_class[present].mean()),
            'overall': 100.0 * float((gt == pred).mean()),
        }
        table = Table(title='Per-class accuracy (%)')
        for column in ('class', 'samples', 'accuracy'):
            table.add_column(column)
        for name, total, acc in zip(classes, totals, per_class):
            table.add_row(
                str(name), str(total), '-' if np.isnan(acc) else f'{acc:.2f}'
            )
            if self.classwise and not np.isnan(acc):
                metrics[f'class/{name}'] = float(acc)
        table.add_row(
            'mean', str(int(totals.sum())), f'{metrics["mean_class"]:.2f}'
        )
        console = Console(file=io.StringIO(), width=100)
        console.print(table)
        print_log('\n' + console.file.getvalue(), logger='current')
        return metrics
