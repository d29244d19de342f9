"""Small input builders shared by the tests (and usable by users' tests)."""

from .datasets import (
    crop_coco_objects,
    crop_voc_objects,
    make_classification_folder,
    make_coco_detection,
    make_multi_domain_folder,
    make_segmentation_folder,
    write_image_list,
)

__all__ = [
    'crop_coco_objects',
    'crop_voc_objects',
    'make_classification_folder',
    'make_coco_detection',
    'make_multi_domain_folder',
    'make_segmentation_folder',
    'write_image_list',
]
