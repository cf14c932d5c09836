# The LazyConfig twin of faster_rcnn_R_50_FPN_2x_sn_8x2.yaml: the SN detection release's Faster R-CNN R-50-FPN
# SN(8,2) on detectron2's own LazyConfig, with the release's architecture and test settings:
#   python tools/lazyconfig_train_net.py --config-file configs/detectron2/released/faster_rcnn_R_50_FPN_2x_sn_8x2.py \
#       --eval-only train.init_checkpoint=ssn://faster_rcnn_R_50_FPN_2x_sn_8x2
# (detectron2's tools/lazyconfig_train_net.py; the release's figure, box AP 39.10, is in MODEL_ZOO.md)
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from ssn_plugins.detectron2 import SwitchNormLayer
from ssn_plugins.detectron2 import lazy as ssn

_base = get_config("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py")
model, dataloader, lr_multiplier, train = _base.model, _base.dataloader, _base.lr_multiplier, _base.train

model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)   # Faster R-CNN
ssn.set_norm(model, L(SwitchNormLayer)(name="SN", candidates=("IN", "LN", "BN")))
model.backbone.bottom_up.stages.stride_in_1x1 = False   # RESNETS.STRIDE_1X1: False
model.backbone.bottom_up.freeze_at = 2
model.roi_heads.box_pooler.update(pooler_type="ROIAlign", sampling_ratio=2)   # Caffe2's RoIAlign, as the release
ssn.set_input_convention(model, dataloader, "rgb-imagenet")   # the release's RGB, torchvision's mean / std

optimizer = ssn.sgd(lr=0.02)
train.init_checkpoint = "ssn://faster_rcnn_R_50_FPN_2x_sn_8x2"
train.max_iter = 180000   # the release's 2x schedule, 8 GPUs x 2 images
lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_2x   # decays at 2/3 and 8/9: 120k, 160k
