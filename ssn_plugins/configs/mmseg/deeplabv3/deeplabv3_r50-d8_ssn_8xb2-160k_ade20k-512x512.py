# DeepLabV3 R50-D8, ade20k: SSN, from the SSN release's (8,2) ImageNet model: the same 2 images per GPU as this finetuning.
_base_ = './deeplabv3_r50-d8_syncbn_8xb2-160k_ade20k-512x512.py'
norm_cfg = dict(type='SSN', requires_grad=True)
model = dict(
    pretrained='ssn://resnet50_ssn_8x2',
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg))
