# The LazyConfig twin of mask_rcnn_R_50_FPN_1x_ssn.yaml: as mask_rcnn_R_50_FPN_1x_sn.py, with SSN.
from ssn_plugins.detectron2 import lazy as ssn

from .mask_rcnn_R_50_FPN_1x_sn import dataloader, lr_multiplier, model, optimizer, train

ssn.set_norm(model, "SSN")
train.init_checkpoint = "ssn://resnet50_ssn_8x32"
