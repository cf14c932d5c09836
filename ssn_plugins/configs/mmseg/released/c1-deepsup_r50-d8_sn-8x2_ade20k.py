# The SN segmentation release's ADE20K model (switchablenorms/SwitchNorm_Segmentation: ResNet50_dilated8 +
# c1_bilinear_deepsup, SN(8,2), mIoU 38.72 single-scale, 39.21 multi-scale), rebuilt on mmseg's FCN config with the
# release's architecture and test settings, for evaluating the trained model:
#   python tools/mm_test.py configs/mmseg/released/c1-deepsup_r50-d8_sn-8x2_ade20k.py \
#       ssn://ade20k_c1_deepsup_r50_d8_sn_8x2                    # add --tta for the multi-scale test
# What mmseg still computes differently from the CSAIL framework: docs/openmmlab.md, "The released ADE20K model".
_base_ = ['mmseg::fcn/fcn_r50-d8_4xb4-160k_ade20k-512x512.py', '../../_base_/ssn_runtime.py']
norm_cfg = dict(type='SN', requires_grad=True)
# the release's inputs: BGR, 0-255, minus Detectron's caffe means, no scaling
data_preprocessor = dict(mean=[102.9801, 115.9465, 122.7717], std=[1.0, 1.0, 1.0], bgr_to_rgb=False)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    # resnet_v1_sn: the 7x7 stem; dilated stages 3 and 4 with the first block at half the rate (_nostride_dilate)
    backbone=dict(type='ResNet', deep_stem=False, norm_cfg=norm_cfg, contract_dilation=True),
    # C1BilinearDeepSup: cbr (3x3 conv, SN, ReLU; 2048 -> 512) then conv_last on stage 4, the same on stage 3
    decode_head=dict(num_convs=1, concat_input=False, channels=512, num_classes=150, norm_cfg=norm_cfg),
    auxiliary_head=dict(num_convs=1, concat_input=False, channels=512, num_classes=150, norm_cfg=norm_cfg))
load_from = 'ssn://ade20k_c1_deepsup_r50_d8_sn_8x2'   # both files, converted on first use
# the release's single-scale test: shorter side 450, longer at most 1000, sides rounded up to a multiple of 8
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1000, 450), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=8),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
# its multi-scale test: shorter sides 300, 400, 500 and 600 (longer at most 1000), softmax averaged, no flip
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(1000, s), keep_ratio=True) for s in (300, 400, 500, 600)],
        [dict(type='ResizeToMultiple', size_divisor=8)],
        [dict(type='LoadAnnotations', reduce_zero_label=True)],
        [dict(type='PackSegInputs')]]),
]
# ssn_runtime.py's hooks without BatchAverageStatisticsHook: the trained running averages (the release's test)
custom_hooks = [dict(type='SparsestMaxRadiusHook'), dict(type='SwitchNormEvalHook'),
                dict(type='SwitchNormScalarsHook', interval=50)]
train_dataloader = dict(batch_size=2)  # 8 GPUs x 2 images, as in the release
optim_wrapper = dict(constructor='SSNOptimWrapperConstructor')
