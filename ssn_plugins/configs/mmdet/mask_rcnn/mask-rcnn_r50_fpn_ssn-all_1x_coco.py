# Mask R-CNN R50-FPN with SSN in the backbone, FPN and heads; backbone from the SSN release's (8,32) model.
_base_ = './mask-rcnn_r50_fpn_sn-all_1x_coco.py'
norm_cfg = dict(type='SSN', requires_grad=True)
model = dict(
    backbone=dict(norm_cfg=norm_cfg, init_cfg=dict(checkpoint='ssn://resnet50_ssn_8x32')),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(bbox_head=dict(norm_cfg=norm_cfg), mask_head=dict(norm_cfg=norm_cfg)))
