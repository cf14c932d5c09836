# The released ADE20K model's config on the real mini photos (datasets/real_mini_seg) in ADE20K's classes: the same
# model and preprocessing, the release's test resizing at half its sizes (the dilated R50 at stride 8 costs seconds
# an image on CPU), for checking the path (tools/reproduce.py ade20k-released-segmenter --ci). No figure exists for
# these photos.
_base_ = ['../c1-deepsup_r50-d8_sn-8x2_ade20k.py']
custom_imports = dict(imports=['ssn_plugins.openmmlab', 'ssn_plugins.openmmlab.seg_datasets'],
                      allow_failed_imports=False)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(500, 225), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=8),
    dict(type='LoadAnnotations'),   # the dataset's label map gives ADE20K's 0-based indices
    dict(type='PackSegInputs'),
]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(500, s), keep_ratio=True) for s in (150, 200, 250, 300)],
        [dict(type='ResizeToMultiple', size_divisor=8)],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs')]]),
]
val_dataloader = dict(
    batch_size=1, num_workers=1, persistent_workers=False,
    dataset=dict(_delete_=True, type='RealMiniSegInADE20KClasses', data_root='datasets/real_mini_seg',
                 data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'), pipeline=test_pipeline))
test_dataloader = val_dataloader
env_cfg = dict(dist_cfg=dict(backend='gloo'))
