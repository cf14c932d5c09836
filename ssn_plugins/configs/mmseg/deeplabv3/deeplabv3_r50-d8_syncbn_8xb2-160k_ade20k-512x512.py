# DeepLabV3 R50-D8 on ADE20K, 512x512 crops, 160k iterations, in the SN paper's setting: ResNet-50 with the
# v1 stem of the published SN/SSN models (not mmseg's V1c deep stem), 8 GPUs x 2 images.
# The baseline: SyncBN from torchvision's ImageNet weights. The SN/SSN variants inherit this file.
_base_ = ['mmseg::deeplabv3/deeplabv3_r50-d8_4xb4-160k_ade20k-512x512.py', '../../_base_/ssn_runtime.py']
model = dict(pretrained='torchvision://resnet50', backbone=dict(type='ResNet', deep_stem=False))
train_dataloader = dict(batch_size=2)  # 8 GPUs x 2 images, as in the SN paper
optim_wrapper = dict(constructor='SSNOptimWrapperConstructor')
