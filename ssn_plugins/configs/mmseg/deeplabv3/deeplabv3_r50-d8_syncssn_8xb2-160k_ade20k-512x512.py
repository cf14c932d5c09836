# DeepLabV3 R50-D8, ade20k: SyncSSN (the BN part over all 16 images), from the SSN release's (8,32) model.
_base_ = './deeplabv3_r50-d8_syncbn_8xb2-160k_ade20k-512x512.py'
norm_cfg = dict(type='SyncSSN', requires_grad=True)
model = dict(
    pretrained='ssn://resnet50_ssn_8x32',
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg))
