# One-shot COCO (docs/protocols.md): train on train2017 pairs of the 60
# seen classes of a split, test on val2017 pairs of its 20 unseen classes;
# pipelines, draws and metric from ./oneshot_detection.py. Split 1 here;
# the configs of the other splits override `split` in the dataloaders.
# Exemplars come from CoAE's reference pools (instances a Mask R-CNN
# detection matches, IoU > 0.5, score > 0.7), the files BHRL ships in
# ref_ann_file/; reference_pool=None draws from every instance instead.
_base_ = './oneshot_detection.py'

dataset_type = 'CocoDataset'
data_root = 'data/coco/'
reference_pools = data_root + 'ref_ann_file/id_ref_instances_{}2017.pkl'
coco = dict(
    type=dataset_type, data_root=data_root, backend_args=_base_.backend_args
)
train_dataloader = dict(
    dataset=dict(
        split='coco1',
        reference_pool=reference_pools.format('train'),
        dataset=dict(
            coco,
            ann_file='annotations/instances_train2017.json',
            data_prefix=dict(img='train2017/'),
            filter_cfg=dict(filter_empty_gt=True),
        ),
    )
)
val_dataloader = dict(
    dataset=dict(
        split='coco1',
        reference_pool=reference_pools.format('val'),
        dataset=dict(
            coco,
            ann_file='annotations/instances_val2017.json',
            data_prefix=dict(img='val2017/'),
            test_mode=True,
        ),
    )
)
test_dataloader = val_dataloader
