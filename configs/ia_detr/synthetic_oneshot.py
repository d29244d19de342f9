# The embedded demo (`make demo`) under the name users type:
# ia-detr_r18-s8_1xb8-8e_synthetic-oneshot.py.
_base_ = './ia-detr_r18-s8_1xb8-8e_synthetic-oneshot.py'
