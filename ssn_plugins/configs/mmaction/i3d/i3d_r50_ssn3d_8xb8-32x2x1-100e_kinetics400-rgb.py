# I3D ResNet3d-50 on Kinetics-400 with SSN3d (SparsestMax ratios, radius scheduled by SparsestMaxRadiusHook),
# from the SSN release's (8,8) ImageNet model (the papers: pretrain and finetune at the same batch per GPU).
_base_ = './i3d_r50_bn3d_8xb8-32x2x1-100e_kinetics400-rgb.py'
model = dict(backbone=dict(pretrained2d=False, pretrained='ssn://i3d/resnet50_ssn_8x8',
                           norm_cfg=dict(type='SSN3d', requires_grad=True)))
