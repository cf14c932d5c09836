# PSPNet R50-D8, cityscapes: SyncSSN (the BN part over all 16 images), from the SSN release's (8,32) model.
_base_ = './pspnet_r50-d8_syncbn_8xb2-80k_cityscapes-512x1024.py'
norm_cfg = dict(type='SyncSSN', requires_grad=True)
model = dict(
    pretrained='ssn://resnet50_ssn_8x32',
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg))
