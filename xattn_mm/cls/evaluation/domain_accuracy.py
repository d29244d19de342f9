"""Top-1 accuracy per domain, with DomainBed's training-domain validation
score."""

from collections import defaultdict
from typing import Dict, List, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmpretrain.registry import METRICS


@METRICS.register_module()
class DomainAccuracy(BaseMetric):
    """Top-1 accuracy (%) of each domain in the evaluated set.

    Samples carry ``domain`` and ``domain_part`` meta fields
    (:class:`~xattn_mm.cls.datasets.DomainSplit` sets them). Keys, under the
    prefix ``domain``: ``<name>`` per domain; ``train_val``, the unweighted
    mean over the domains seen as hold-out parts (DomainBed's
    training-domain validation, the model-selection score); ``test``, the
    mean over the domains seen whole (the held-out test domain).

    Args:
        collect_device (str): Where results are gathered. Defaults to
            ``'cpu'``.
        prefix (str, optional): Key prefix. Defaults to ``'domain'``.
    """

    default_prefix = 'domain'

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if 'domain' not in sample:
                raise KeyError(
                    "DomainAccuracy needs a 'domain' meta field on every "
                    'sample; wrap each domain dataset in DomainSplit.'
                )
            pred = int(np.asarray(sample['pred_label']).reshape(-1)[0])
            gt = int(np.asarray(sample['gt_label']).reshape(-1)[0])
            part = sample.get('domain_part', 'all')
            self.results.append((sample['domain'], part, pred == gt))

    def compute_metrics(self, results: List[tuple]) -> Dict[str, float]:
        hits = defaultdict(list)
        parts = {}
        for domain, part, correct in results:
            hits[domain].append(correct)
            parts[domain] = part
        metrics = {d: 100.0 * float(np.mean(h)) for d, h in hits.items()}
        for key, part in (('train_val', 'holdout'), ('test', 'all')):
            values = [metrics[d] for d in hits if parts[d] == part]
            if values:
                metrics[key] = float(np.mean(values))
        return metrics
