# I3D ResNet3d-50 on Kinetics-400 with SN3d (statistics over (N, T, H, W) / (T, H, W) / (C, T, H, W)),
# from the SN release's (8,32) ImageNet model, inflated for I3D on first use (ssn://i3d/..., see MODEL_ZOO.md).
_base_ = './i3d_r50_bn3d_8xb8-32x2x1-100e_kinetics400-rgb.py'
model = dict(backbone=dict(pretrained2d=False, pretrained='ssn://i3d/resnet50_sn_8x32',
                           norm_cfg=dict(type='SN3d', requires_grad=True)))
