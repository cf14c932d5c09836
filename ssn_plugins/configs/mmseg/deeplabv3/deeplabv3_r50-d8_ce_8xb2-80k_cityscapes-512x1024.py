# DeepLabV3 R50-D8, cityscapes: SyncBN with Channel Equilibrium in the backbone, from the published CE-ResNet-50
# (BN + CE, downloaded and converted on first use; its BN weights load into SyncBN). CE after the stem norm and the
# last norm of every block in stages 1-3, where the CE paper puts it.
_base_ = './deeplabv3_r50-d8_syncbn_8xb2-80k_cityscapes-512x1024.py'
model = dict(pretrained='ssn://resnet50_ce', backbone=dict(type='ResNetCE'))
