# Mask R-CNN R50-FPN with Channel Equilibrium in the backbone (the CE paper's COCO detector): mmdet's BN Mask R-CNN
# with the backbone from the published CE-ResNet-50 (BN + CE, 78.2 ImageNet top-1), downloaded and converted on
# first use. CE sits after the stem norm and the last norm of every block in stages 1-3 and, as a hook on that norm,
# follows it: mmdet's norm_eval=True and frozen_stages=1 keep CE's statistics (and the stem's CE) frozen too.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', '../../_base_/ssn_runtime.py']
model = dict(backbone=dict(type='ResNetCE', init_cfg=dict(type='Pretrained', checkpoint='ssn://resnet50_ce')))
optim_wrapper = dict(constructor='SSNOptimWrapperConstructor')
