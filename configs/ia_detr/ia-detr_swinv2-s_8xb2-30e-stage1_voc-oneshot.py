# Stage 1 of the official IA-DETR recipe on PASCAL VOC ("upretrain",
# configs/stage1_pascalvoc.sh in github Bissmella/IA-DETR): the exemplar is
# a random patch of the target, whose box is the match target; the image's
# base-class boxes are targets on a second channel, and a contrastive loss
# pulls the queries matched to one class together (RandomPatchExemplar with
# base_boxes, the model base's stage1_model); the backbone stays frozen.
# The target images are those of stage 2 (VOC2007 + VOC2012 trainval images
# holding a seen class); 30 epochs, the stage-2 optimizer, lr x 0.1 from
# epoch index 11. Validation: the one-shot test of stage 2, once at the end.
_base_ = './ia-detr_swinv2-s_8xb2-12e_voc-oneshot.py'

load_from = None
model = _base_.stage1_model
train_dataloader = dict(dataset=_base_.stage1_train_dataset)
train_cfg = dict(max_epochs=30, val_interval=30)
custom_hooks = []  # the backbone is frozen throughout
