# One-shot PASCAL VOC (docs/protocols.md): train on VOC2007 + VOC2012
# trainval pairs of the 16 seen classes, test on VOC2007 test pairs of the
# 4 unseen classes; pipelines, draws and metric from ./oneshot_detection.py.
_base_ = './oneshot_detection.py'

dataset_type = 'VOCDataset'
data_root = 'data/VOCdevkit/'
voc = dict(
    type=dataset_type, data_root=data_root, backend_args=_base_.backend_args
)
train_dataloader = dict(
    dataset=dict(
        split='voc',
        dataset=dict(
            type='ConcatDataset',
            # VOCDataset adds its year as `dataset_type` to the metainfo,
            # which ConcatDataset would otherwise reject as a mismatch.
            ignore_keys=['dataset_type'],
            datasets=[
                dict(
                    voc,
                    ann_file=f'VOC{year}/ImageSets/Main/trainval.txt',
                    data_prefix=dict(sub_data_root=f'VOC{year}/'),
                    filter_cfg=dict(filter_empty_gt=True),
                )
                for year in (2007, 2012)
            ],
        ),
    )
)
val_dataloader = dict(
    dataset=dict(
        split='voc',
        dataset=dict(
            voc,
            ann_file='VOC2007/ImageSets/Main/test.txt',
            data_prefix=dict(sub_data_root='VOC2007/'),
            test_mode=True,
        ),
    )
)
test_dataloader = val_dataloader
