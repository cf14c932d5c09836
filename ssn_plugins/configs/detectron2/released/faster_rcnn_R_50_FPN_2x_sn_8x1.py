# The LazyConfig twin of faster_rcnn_R_50_FPN_2x_sn_8x1.yaml: the (8,2) twin with SN over [IN, LN] (no BN).
from detectron2.config import LazyCall as L

from ssn_plugins.detectron2 import SwitchNormLayer
from ssn_plugins.detectron2 import lazy as ssn

from .faster_rcnn_R_50_FPN_2x_sn_8x2 import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

ssn.set_norm(model, L(SwitchNormLayer)(name="SN", candidates=("IN", "LN")))
train.init_checkpoint = "ssn://faster_rcnn_R_50_FPN_2x_sn_8x1"
