# Mask R-CNN R50-FPN with SN in the backbone, FPN and heads (the SN paper's "SN+SN" detector; 8 GPUs x 2
# images as upstream). Backbone from the SN release's (8,32) ImageNet model (by its ssn:// name),
# finetuned with batch statistics (norm_eval=False), as GN is in mmdet's gn-all configs.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', '../../_base_/ssn_runtime.py']
norm_cfg = dict(type='SN', requires_grad=True)
model = dict(
    backbone=dict(norm_cfg=norm_cfg, norm_eval=False,
                  init_cfg=dict(type='Pretrained', checkpoint='ssn://resnet50_sn_8x32')),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))
optim_wrapper = dict(constructor='SSNOptimWrapperConstructor')
