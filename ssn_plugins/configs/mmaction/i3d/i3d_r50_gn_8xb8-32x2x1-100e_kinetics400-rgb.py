# I3D ResNet3d-50 on Kinetics-400, GN (32 groups) baseline, from the GN ImageNet ResNet-50 OpenMMLab hosts
# (open-mmlab://detectron/resnet50_gn: Detectron's, BGR input without scaling, as mmdet's GN configs), inflated on
# first use by ssn://i3d/resnet50_gn with the code of `tools/convert_checkpoint.py --openmmlab-norm gn --to i3d`
# (mmaction2's own 2-D->3-D inflation reads `conv1.bn` and cannot load GN layers).
_base_ = './i3d_r50_bn3d_8xb8-32x2x1-100e_kinetics400-rgb.py'
model = dict(
    backbone=dict(pretrained2d=False, pretrained='ssn://i3d/resnet50_gn',
                  norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)),
    data_preprocessor=dict(mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0], to_rgb=True))  # RGB -> BGR
