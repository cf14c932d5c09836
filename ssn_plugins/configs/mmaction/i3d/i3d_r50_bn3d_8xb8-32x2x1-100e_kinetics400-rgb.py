# I3D ResNet3d-50 on Kinetics-400 in the SN paper's setting: ImageNet-inflated, 32-frame clips
# (every 2nd frame), 8 GPUs x 8 clips, 100 epochs, and the 10-clip test (10 clips spread regularly over
# each video, 256x256 centre crop, softmax averaged; mmaction2's own I3D test takes 30 views with
# ThreeCrop). The baseline: BN3d inflated from torchvision's ImageNet ResNet-50.
# The GN / SN3d / SSN3d / SyncSSN3d variants and the batch-4 files inherit this one.
_base_ = ['mmaction::recognition/i3d/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb.py',
          '../../_base_/ssn_runtime.py']
custom_imports = dict(imports=['ssn_plugins.openmmlab', 'ssn_plugins.openmmlab.video_datasets'],
                      allow_failed_imports=False)

# Kinetics as downloaded holds truncated and unreadable videos: skip them with a warning and a count
# instead of failing mid-epoch (ssn_plugins/openmmlab/video_datasets.py).
dataset_type = 'RobustVideoDataset'
test_pipeline = [
    dict(type='DecordInit', io_backend='disk'),
    dict(type='SampleFrames', clip_len=32, frame_interval=2, num_clips=10, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='CenterCrop', crop_size=256),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
train_dataloader = dict(dataset=dict(type=dataset_type))
val_dataloader = dict(dataset=dict(type=dataset_type))
test_dataloader = dict(dataset=dict(type=dataset_type, pipeline=test_pipeline))
test_evaluator = dict(type='AccMetric', metric_options=dict(top_k_accuracy=dict(topk=(1, 5))))

optim_wrapper = dict(constructor='SSNOptimWrapperConstructor')
