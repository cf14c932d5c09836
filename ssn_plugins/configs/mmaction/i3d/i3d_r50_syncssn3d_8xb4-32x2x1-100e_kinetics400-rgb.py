# I3D ResNet3d-50 on Kinetics-400 with SyncSSN3d at 4 clips per GPU (8 GPUs, 32 clips pooled), learning rate 0.005.
_base_ = './i3d_r50_syncssn3d_8xb8-32x2x1-100e_kinetics400-rgb.py'
train_dataloader = dict(batch_size=4)
val_dataloader = dict(batch_size=4)
optim_wrapper = dict(optimizer=dict(lr=0.005))
auto_scale_lr = dict(base_batch_size=32)
