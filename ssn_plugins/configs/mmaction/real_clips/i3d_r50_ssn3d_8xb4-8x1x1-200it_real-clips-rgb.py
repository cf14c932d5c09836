# I3D ResNet3d-50 with SSN3d everywhere, trained from scratch for a few minutes on CPU on the real
# clips set (tools/build_real_clips.py: HMDB51 wave / cartwheel and UCF101 soccer juggling from
# Debian's pytorch-vision sources, 16-frame windows, 36 for training, 18 for validation), with
# 10-clip testing: 10 clips of 8 frames spread regularly over each window, softmax averaged.
_base_ = ['mmaction::_base_/models/i3d_r50.py', 'mmaction::_base_/default_runtime.py',
          '../../_base_/ssn_runtime.py']
custom_imports = dict(imports=['ssn_plugins.openmmlab', 'ssn_plugins.openmmlab.video_datasets'],
                      allow_failed_imports=False)
norm_cfg = dict(type='SSN3d', requires_grad=True)
model = dict(
    backbone=dict(pretrained2d=False, pretrained=None,  # nothing to download here; Kinetics runs start from _i3d.pth
                  norm_cfg=norm_cfg),
    cls_head=dict(num_classes=3, dropout_ratio=0.2))

dataset_type = 'RobustVideoDataset'
data_root = 'datasets/real_clips'
clip = dict(clip_len=8, frame_interval=1)
train_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', num_clips=1, **clip),
    dict(type='DecordDecode'),
    dict(type='RandomResizedCrop', area_range=(0.4, 1.0)),
    dict(type='Resize', scale=(112, 112), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
test_pipeline = [  # the 10-clip test
    dict(type='DecordInit'),
    dict(type='SampleFrames', num_clips=10, test_mode=True, **clip),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 128)),
    dict(type='CenterCrop', crop_size=112),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=2, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, ann_file=f'{data_root}/real_clips_train_list_videos.txt',
                 data_prefix=dict(video=f'{data_root}/videos_train'), min_frames=8, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=1, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, ann_file=f'{data_root}/real_clips_val_list_videos.txt',
                 data_prefix=dict(video=f'{data_root}/videos_val'), min_frames=8, pipeline=test_pipeline,
                 test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type='AccMetric', metric_options=dict(top_k_accuracy=dict(topk=(1, 2))))
test_evaluator = val_evaluator

max_iters = 200
optim_wrapper = dict(type='OptimWrapper', constructor='SSNOptimWrapperConstructor',
                     optimizer=dict(type='AdamW', lr=0.001, weight_decay=0.01),  # learns faster from scratch than SGD
                     clip_grad=dict(max_norm=40, norm_type=2))
param_scheduler = [dict(type='CosineAnnealingLR', eta_min=1e-5, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, save_best=None))
log_processor = dict(by_epoch=False)
randomness = dict(seed=7)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
work_dir = 'work_dirs/real_clips_i3d_r50_ssn3d'
