# Mask R-CNN R50-FPN with SSN in backbone, FPN and heads, trained from scratch for a few minutes on CPU on
# the real mini COCO set (tools/build_real_mini_coco.py, shared with the detectron2 job: VOC, ARC2017 and
# microscopy images with human-drawn instance masks; 6 training images, the 3 originals for validation).
_base_ = '../mask_rcnn/mask-rcnn_r50_fpn_ssn-all_1x_coco.py'
data_root = 'datasets/real_mini/'
metainfo = dict(classes=('bottle', 'chair', 'person', 'diningtable', 'item', 'nucleus'))
model = dict(
    # nothing can be downloaded here: from scratch, so no stage is frozen (the 1x config freezes the stem and layer1)
    backbone=dict(init_cfg=None, frozen_stages=-1),
    roi_head=dict(bbox_head=dict(num_classes=6), mask_head=dict(num_classes=6)),
    train_cfg=dict(rpn_proposal=dict(max_per_img=300), rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(max_per_img=300), rcnn=dict(max_per_img=200)))  # the nuclei image has 125 instances
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomChoiceResize', scales=[(416, 256), (416, 288), (416, 320)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(416, 288), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='images/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=1,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='images/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

max_epochs = 20  # 3 iterations an epoch: 60 iterations
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=0.02))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[17], gamma=0.1)
]
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs))
randomness = dict(seed=7)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
work_dir = 'work_dirs/real_mini_mask_rcnn_ssn_mmdet'
