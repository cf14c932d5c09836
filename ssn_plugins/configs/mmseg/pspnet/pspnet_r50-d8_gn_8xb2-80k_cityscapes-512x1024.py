# PSPNet R50-D8, cityscapes: GN, from the GN ImageNet ResNet-50 OpenMMLab hosts (Detectron's; caffe-style BGR input without scaling).
_base_ = './pspnet_r50-d8_syncbn_8xb2-80k_cityscapes-512x1024.py'
norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    data_preprocessor=dict(mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0], bgr_to_rgb=False),
    pretrained='open-mmlab://detectron/resnet50_gn',
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg))
