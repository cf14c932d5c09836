# PSPNet R50-D8, cityscapes: SSN, from the SSN release's (8,2) ImageNet model: the same 2 images per GPU as this finetuning.
_base_ = './pspnet_r50-d8_syncbn_8xb2-80k_cityscapes-512x1024.py'
norm_cfg = dict(type='SSN', requires_grad=True)
model = dict(
    pretrained='ssn://resnet50_ssn_8x2',
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg))
