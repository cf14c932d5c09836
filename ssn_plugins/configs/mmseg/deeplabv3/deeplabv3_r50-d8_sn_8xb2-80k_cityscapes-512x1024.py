# DeepLabV3 R50-D8, cityscapes: SN, from the SN release's (8,4) ImageNet model (by its ssn:// name):
# the pretraining of the SN paper's figure this config is compared with.
_base_ = './deeplabv3_r50-d8_syncbn_8xb2-80k_cityscapes-512x1024.py'
norm_cfg = dict(type='SN', requires_grad=True)
model = dict(
    pretrained='ssn://resnet50_sn_8x4',
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg))
