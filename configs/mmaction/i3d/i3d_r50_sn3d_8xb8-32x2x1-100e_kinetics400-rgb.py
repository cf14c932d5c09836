# I3D ResNet3d-50 on Kinetics-400 with SN3d (statistics over (N, T, H, W) / (T, H, W) / (C, T, H, W)),
# from the SN release's (8,32) ImageNet model inflated by tools/convert_checkpoint.py (converted/sn_r50_8x32_i3d.pth).
_base_ = './i3d_r50_bn3d_8xb8-32x2x1-100e_kinetics400-rgb.py'
model = dict(backbone=dict(pretrained2d=False, pretrained='converted/sn_r50_8x32_i3d.pth',
                           norm_cfg=dict(type='SN3d', requires_grad=True)))
