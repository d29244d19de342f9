# Under the name users type:
# ia-detr_swinv2-s_8xb2-12e_coco-oneshot-split4.py.
_base_ = './ia-detr_swinv2-s_8xb2-12e_coco-oneshot-split4.py'
