# DeepLabV3 R18-D8 with SSN everywhere, trained from scratch for a few minutes on CPU on the real mini
# segmentation set (tools/build_real_mini_seg.py: VOC people/chairs/tables/bottle, ARC2017 items and
# microscopy nuclei, human-annotated; 6 training images, the 3 originals for validation).
# ResNet-18 (mmseg's R18-D8 widths) runs about 5x faster here than R50-D8 (1.3 s against 6-7 s an iteration).
_base_ = ['mmseg::_base_/models/deeplabv3_r50-d8.py', 'mmseg::_base_/default_runtime.py',
          '../../_base_/ssn_runtime.py']
crop_size = (256, 256)
norm_cfg = dict(type='SSN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,  # nothing can be downloaded here; the real runs start from converted ImageNet weights
    backbone=dict(type='ResNet', depth=18, deep_stem=False, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=512, channels=128, num_classes=7, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=256, channels=64, num_classes=7, norm_cfg=norm_cfg))

dataset_type = 'BaseSegDataset'
data_root = 'datasets/real_mini_seg'
metainfo = dict(classes=('background', 'bottle', 'chair', 'person', 'diningtable', 'item', 'nucleus'),
                palette=[[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128],
                         [0, 128, 128]])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(512, 384), ratio_range=(0.5, 1.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.9),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 384), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
# multi-scale + flip test for tools/mm_test.py --tta, as mmseg's dataset bases define it
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug',
         transforms=[[dict(type='Resize', scale_factor=r, keep_ratio=True) for r in img_ratios],
                     [dict(type='RandomFlip', prob=0., direction='horizontal'),
                      dict(type='RandomFlip', prob=1., direction='horizontal')],
                     [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]])]
train_dataloader = dict(
    batch_size=2, num_workers=2, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo, img_suffix='.png',
                 seg_map_suffix='.png', data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=1, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo, img_suffix='.png',
                 seg_map_suffix='.png', data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

max_iters = 200
optim_wrapper = dict(type='OptimWrapper', constructor='SSNOptimWrapperConstructor',
                     optimizer=dict(type='AdamW', lr=0.001, weight_decay=0.01))  # learns faster from scratch than SGD
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
randomness = dict(seed=7)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
work_dir = 'work_dirs/real_mini_deeplabv3_r18_ssn'
