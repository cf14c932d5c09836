# I3D ResNet3d-50 on Kinetics-400 with SSN3d at 4 clips per GPU (8 GPUs), learning rate 0.005,
# from the SSN release's (8,4) ImageNet model.
_base_ = './i3d_r50_ssn3d_8xb8-32x2x1-100e_kinetics400-rgb.py'
model = dict(backbone=dict(pretrained='ssn://i3d/resnet50_ssn_8x4'))
train_dataloader = dict(batch_size=4)
val_dataloader = dict(batch_size=4)
optim_wrapper = dict(optimizer=dict(lr=0.005))
auto_scale_lr = dict(base_batch_size=32)
