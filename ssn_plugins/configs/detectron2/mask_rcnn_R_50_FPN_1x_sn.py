# The LazyConfig twin of mask_rcnn_R_50_FPN_1x_sn.yaml: Mask R-CNN R50-FPN with SN in the backbone, FPN and both
# heads, on top of detectron2's own LazyConfig, trained with the SN/SSN recipe by detectron2's lazy loop:
#   python tools/lazyconfig_train_net.py --config-file configs/detectron2/mask_rcnn_R_50_FPN_1x_sn.py --num-gpus 8
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from detectron2.modeling.roi_heads import FastRCNNConvFCHead

from ssn_plugins.detectron2 import lazy as ssn

_base = get_config("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py")
model, dataloader, lr_multiplier, train = _base.model, _base.dataloader, _base.lr_multiplier, _base.train

# the head of detectron2's GN configs, 4 convolutions and 1 fc, so that its convolutions get the norm
model.roi_heads.box_head = L(FastRCNNConvFCHead)(input_shape=ShapeSpec(channels=256, height=7, width=7),
                                                 conv_dims=[256, 256, 256, 256], fc_dims=[1024])
ssn.set_norm(model, "SN")
model.backbone.bottom_up.stages.stride_in_1x1 = False  # converted backbones stride in the 3x3 convolution
model.backbone.bottom_up.freeze_at = 0                 # the normalizers are trained with the detector
# the published SN/SSN ResNets were trained on torchvision-style RGB inputs
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"
dataloader.train.mapper.image_format = "RGB"   # (the test mapper reads the train mapper's)

optimizer = ssn.sgd(lr=0.02)   # detectron2's SGD with the recipe: ratio lr/10, no decay, clipped; radius, ...
train.init_checkpoint = "ssn://resnet50_sn_8x32"
