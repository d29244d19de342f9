# TMT on the fine-tuning protocol: the Feature2Pyramid neck becomes a TMA
# neck (one transferable-masked-attention block per ViT level, then the same
# rescales, so the source checkpoint's neck weights load) driven by ACTE
# over the last level's tokens. The frozen source model is rebuilt from
# source_checkpoint, which leaves set to their load_from. Every TMT choice
# is a key here; configs/tmt/README.md says which ones the paper leaves open.
_base_ = ['./finetune_vit-base-p16-upernet.py']

# ---- frequently modified ----
tma_mode = 'bias'  # 'bias' | 'mask' | 'both'
num_regions = 8
transferability_weight = 0.5
# -----------------------------

model = dict(
    type='TMTEncoderDecoder',
    neck=dict(
        _delete_=True,
        type='TMANeck',
        in_channels=[768, 768, 768, 768],
        num_heads=12,
        mode=tma_mode,
        num_global_tokens=0,
        bias_scale=1.0,
        learnable_bias_scale=True,
        rescales=[4, 2, 1, 0.5],
        pyramid_norm_cfg={{_base_.norm_cfg}},
    ),
    estimator=dict(
        type='ACTE',
        num_regions=num_regions,
        num_iters=5,
        coord_weight=1.0,
        transferability_weight=transferability_weight,
        in_index=-1,
        seed=0,
    ),
    source_checkpoint=None,  # leaves: the source-domain checkpoint
    test_with_source=False,
)
