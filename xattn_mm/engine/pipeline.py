"""Dataset building and data pipelines whose failures name the file they
were reading."""

import json
import os.path as osp
from typing import Callable, Optional


def apply_pipeline(pipeline: Callable, results: dict) -> Optional[dict]:
    """``pipeline(results)``, re-raising any error with the image path.

    Host transforms fail without naming the file (a 0-byte image gives
    OpenCV's ``imdecode`` assertion, or mmcv's "img is None"); the error
    raised here has the same type and says which file it was.

    Args:
        pipeline (Callable): A ``Compose`` of transforms.
        results (dict): Its input; ``img_path`` names the file.

    Returns:
        dict or None: The pipeline's output.
    """
    try:
        return pipeline(results)
    except Exception as e:
        path = results.get('img_path')
        if path is None or str(path) in str(e):
            raise
        message = (
            f'{path}: {type(e).__name__}: {e} (is the image file empty, '
            'truncated or not an image?)'
        )
        try:
            error = type(e)(message)
        except Exception:  # a type that needs other arguments
            raise RuntimeError(message) from e
        raise error from e


def build_dataset(registry, cfg: dict):
    """``registry.build(cfg)``, with an annotation file that is not valid
    JSON named in the error (json's own message names no file).

    Args:
        registry (Registry): The host's ``DATASETS``.
        cfg (dict): The dataset config.

    Returns:
        The dataset.
    """
    try:
        return registry.build(cfg)
    except json.JSONDecodeError as e:
        ann_file = cfg.get('ann_file', '')
        if cfg.get('data_root') and not osp.isabs(ann_file):
            ann_file = osp.join(cfg['data_root'], ann_file)
        raise ValueError(
            f'{cfg.get("type")}: ann_file {ann_file} is not valid JSON '
            f'({e}); expected a COCO-style annotation file.'
        ) from e
