# I3D ResNet3d-50 on Kinetics-400 with SyncSSN3d: the BN statistics are pooled over all GPUs (64 clips),
# from the SSN release's (8,32) ImageNet model.
_base_ = './i3d_r50_bn3d_8xb8-32x2x1-100e_kinetics400-rgb.py'
model = dict(backbone=dict(pretrained2d=False, pretrained='ssn://i3d/resnet50_ssn_8x32',
                           norm_cfg=dict(type='SyncSSN3d', requires_grad=True)))
