# DeepLabV3 R50-D8, cityscapes: SSN, from the SSN release's (8,4) ImageNet model: the pretraining of the SN(8,4)
# figure it is compared with (the SSN paper has no Cityscapes DeepLab figure of its own).
_base_ = './deeplabv3_r50-d8_syncbn_8xb2-80k_cityscapes-512x1024.py'
norm_cfg = dict(type='SSN', requires_grad=True)
model = dict(
    pretrained='ssn://resnet50_ssn_8x4',
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg))
