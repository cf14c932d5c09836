# The LazyConfig twin of mask_rcnn_R_50_FPN_2x_sn_8x1.yaml: the SN detection release's Mask R-CNN R-50-FPN SN(8,1),
# SN over [IN, LN] in the backbone, the FPN, a 4conv1fc box head and the 4conv mask head.
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from detectron2.modeling.roi_heads import FastRCNNConvFCHead

from ssn_plugins.detectron2 import SwitchNormLayer
from ssn_plugins.detectron2 import lazy as ssn

from .faster_rcnn_R_50_FPN_2x_sn_8x2 import optimizer  # noqa: F401

_base = get_config("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py")
model, dataloader, lr_multiplier, train = _base.model, _base.dataloader, _base.lr_multiplier, _base.train

model.roi_heads.box_head = L(FastRCNNConvFCHead)(input_shape=ShapeSpec(channels=256, height=7, width=7),
                                                 conv_dims=[256, 256, 256, 256], fc_dims=[1024])
ssn.set_norm(model, L(SwitchNormLayer)(name="SN", candidates=("IN", "LN")))
model.backbone.bottom_up.stages.stride_in_1x1 = False
model.backbone.bottom_up.freeze_at = 2
model.roi_heads.box_pooler.update(pooler_type="ROIAlign", sampling_ratio=2)
model.roi_heads.mask_pooler.update(pooler_type="ROIAlign", sampling_ratio=2)   # 14x14, as the release
ssn.set_input_convention(model, dataloader, "rgb-imagenet")   # the release's RGB, torchvision's mean / std

train.init_checkpoint = "ssn://mask_rcnn_R_50_FPN_2x_sn_8x1"
train.max_iter = 180000
lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_2x   # decays at 2/3 and 8/9: 120k, 160k
