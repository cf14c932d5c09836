# The LazyConfig twin of faster_rcnn_R_50_C4_2x_sn_8x32.yaml: the SN detection release's Faster R-CNN R-50-C4
# SN(8,32), SN in the backbone and the res5 box head, on detectron2's own C4 LazyConfig.
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from ssn_plugins.detectron2 import SwitchNormLayer
from ssn_plugins.detectron2 import lazy as ssn

from .faster_rcnn_R_50_FPN_2x_sn_8x2 import optimizer  # noqa: F401

_base = get_config("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.py")
model, dataloader, lr_multiplier, train = _base.model, _base.dataloader, _base.lr_multiplier, _base.train

model.roi_heads.mask_head = None   # Faster R-CNN
ssn.set_norm(model, L(SwitchNormLayer)(name="SN", candidates=("IN", "LN", "BN")))
model.backbone.stages.stride_in_1x1 = False
model.roi_heads.res5.stride_in_1x1 = False
model.backbone.freeze_at = 0                       # RESNETS.FREEZE_AT: 0
model.roi_heads.pooler.pooler_type = "ROIAlign"    # Caffe2's RoIAlign, 14x14, adaptive sampling
ssn.set_input_convention(model, dataloader, "rgb-imagenet")   # the release's RGB, torchvision's mean / std

train.init_checkpoint = "ssn://faster_rcnn_R_50_C4_2x_sn_8x32"
train.max_iter = 180000
lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_2x   # decays at 2/3 and 8/9: 120k, 160k
