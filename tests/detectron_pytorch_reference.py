"""A plain re-implementation of the SN detection release's inference forward (Detectron.pytorch), for the tests.

Written from switchablenorms/SwitchNorm_Detection's ``lib/modeling`` and ``lib/nn/modules/normalization.py``: the same
module structure and attribute names, so ``state_dict()`` has the release's keys, and the release's math (its
``SwitchNorm`` formula, Caffe2's RoIAlign, which is torchvision's ``roi_align(aligned=False)``, Detectron's FPN level
rule with its ``+ 1`` box sizes and its ratio-major anchors). Nothing here imports ssn_plugins or detectron2.
"""
import math
from collections import OrderedDict
from typing import List

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align


class ReleaseSwitchNorm(nn.Module):
    """``mynn.SwitchNorm`` in eval mode with running averages (``TEST.USE_BATCH_AVG: False``, the release's test)."""

    def __init__(self, num_features, using_bn=True, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        k = 3 if using_bn else 2
        self.mean_weight = nn.Parameter(torch.ones(k))
        self.var_weight = nn.Parameter(torch.ones(k))
        self.using_bn, self.eps = using_bn, eps
        if using_bn:
            self.register_buffer("running_mean", torch.zeros(1, num_features, 1))
            self.register_buffer("running_var", torch.zeros(1, num_features, 1))

    def forward(self, x):
        n, c, h, w = x.size()
        x = x.view(n, c, -1)
        mean_in = x.mean(-1, keepdim=True)
        var_in = x.var(-1, keepdim=True)
        mean_ln = mean_in.mean(1, keepdim=True)
        temp = var_in + mean_in ** 2
        var_ln = temp.mean(1, keepdim=True) - mean_ln ** 2
        mean_weight = torch.softmax(self.mean_weight, 0)
        var_weight = torch.softmax(self.var_weight, 0)
        mean = mean_weight[0] * mean_in + mean_weight[1] * mean_ln
        var = var_weight[0] * var_in + var_weight[1] * var_ln
        if self.using_bn:
            mean = mean + mean_weight[2] * self.running_mean
            var = var + var_weight[2] * self.running_var
        x = (x - mean) / (var + self.eps).sqrt()
        return x.view(n, c, h, w) * self.weight + self.bias


class Bottleneck(nn.Module):
    """``bottleneck_sn_transformation`` (``STRIDE_1X1: False``: the stride is in the 3x3)."""

    def __init__(self, inplanes, outplanes, innerplanes, stride, using_bn):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, innerplanes, 1, bias=False)
        self.sn1 = ReleaseSwitchNorm(innerplanes, using_bn)
        self.conv2 = nn.Conv2d(innerplanes, innerplanes, 3, stride=stride, padding=1, bias=False)
        self.sn2 = ReleaseSwitchNorm(innerplanes, using_bn)
        self.conv3 = nn.Conv2d(innerplanes, outplanes, 1, bias=False)
        self.sn3 = ReleaseSwitchNorm(outplanes, using_bn)
        self.downsample = None
        if stride != 1 or inplanes != outplanes:  # basic_sn_shortcut
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False),
                                            ReleaseSwitchNorm(outplanes, using_bn))

    def forward(self, x):
        out = F.relu(self.sn1(self.conv1(x)))
        out = F.relu(self.sn2(self.conv2(out)))
        out = self.sn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def add_stage(inplanes, outplanes, innerplanes, nblocks, stride_init, using_bn):
    blocks = [Bottleneck(inplanes if i == 0 else outplanes, outplanes, innerplanes, stride_init if i == 0 else 1,
                         using_bn) for i in range(nblocks)]
    return nn.Sequential(*blocks)


class ResNetBody(nn.Module):
    """``ResNet_convX_body`` with ``basic_sn_stem``: ``res1`` .. ``res4`` (or ``res5``)."""

    def __init__(self, block_counts, using_bn):
        super().__init__()
        self.res1 = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)),
            ("sn1", ReleaseSwitchNorm(64, using_bn)), ("relu", nn.ReLU()),
            ("maxpool", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))]))
        dims = [(64, 256, 64, 1), (256, 512, 128, 2), (512, 1024, 256, 2), (1024, 2048, 512, 2)]
        for i, n in enumerate(block_counts):
            d_in, d_out, d_inner, stride = dims[i]
            setattr(self, f"res{i + 2}", add_stage(d_in, d_out, d_inner, n, stride, using_bn))
        self.convX = len(block_counts) + 1

    def forward(self, x):
        outs = [self.res1(x)]
        for i in range(2, self.convX + 1):
            outs.append(getattr(self, f"res{i}")(outs[-1]))
        return outs  # res1 .. resX


class TopdownLateral(nn.Module):
    def __init__(self, dim_lateral, using_bn):
        super().__init__()
        self.conv_lateral = nn.Sequential(nn.Conv2d(dim_lateral, 256, 1, bias=False),
                                          ReleaseSwitchNorm(256, using_bn))

    def forward(self, top, lateral):
        return self.conv_lateral(lateral) + F.interpolate(top, scale_factor=2, mode="nearest")


class FPNBody(nn.Module):
    """``fpn`` over ``ResNet50_conv5_body`` with ``FPN.USE_SN``; outputs P6 (max-pool of P5), P5 .. P2."""

    def __init__(self, using_bn_backbone, using_bn_fpn):
        super().__init__()
        self.conv_top = nn.Sequential(nn.Conv2d(2048, 256, 1, bias=False), ReleaseSwitchNorm(256, using_bn_fpn))
        self.topdown_lateral_modules = nn.ModuleList(TopdownLateral(d, using_bn_fpn) for d in (1024, 512, 256))
        self.posthoc_modules = nn.ModuleList(
            nn.Sequential(nn.Conv2d(256, 256, 3, padding=1, bias=False), ReleaseSwitchNorm(256, using_bn_fpn))
            for _ in range(4))
        self.maxpool_p6 = nn.MaxPool2d(kernel_size=1, stride=2, padding=0)
        self.conv_body = ResNetBody((3, 4, 6, 3), using_bn_backbone)
        self.spatial_scale = [1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4]

    def forward(self, x):
        body = self.conv_body(x)
        inner = [self.conv_top(body[-1])]
        for i, module in enumerate(self.topdown_lateral_modules):
            inner.append(module(inner[-1], body[-(i + 2)]))
        outs = [m(t) for m, t in zip(self.posthoc_modules, inner)]
        return [self.maxpool_p6(outs[0])] + outs  # [P6, P5, P4, P3, P2], as the release orders them


class RPN(nn.Module):
    """``single_scale_rpn_outputs`` (``RPN_*``) or ``fpn_rpn_outputs`` (``FPN_RPN_*``, shared over the levels)."""

    def __init__(self, dim_in, num_anchors, fpn):
        super().__init__()
        self.prefix = "FPN_RPN_" if fpn else "RPN_"
        setattr(self, self.prefix + "conv", nn.Conv2d(dim_in, dim_in, 3, padding=1))
        setattr(self, self.prefix + "cls_score", nn.Conv2d(dim_in, num_anchors, 1))  # sigmoid activation
        setattr(self, self.prefix + "bbox_pred", nn.Conv2d(dim_in, 4 * num_anchors, 1))

    def forward(self, x):
        hidden = F.relu(getattr(self, self.prefix + "conv")(x))
        return getattr(self, self.prefix + "cls_score")(hidden), getattr(self, self.prefix + "bbox_pred")(hidden)


def map_rois_to_fpn_levels(rois, k_min=2, k_max=5):
    """``utils.fpn.map_rois_to_fpn_levels``: Detectron's box sizes count both end pixels (``+ 1``)."""
    s = torch.sqrt((rois[:, 2] - rois[:, 0] + 1) * (rois[:, 3] - rois[:, 1] + 1))
    return torch.clamp(torch.floor(4 + torch.log2(s / 224 + 1e-6)), k_min, k_max).long()


def roi_feature_transform(blobs, rois, resolution, spatial_scale, sampling_ratio):
    """``roi_feature_transform`` with RoIAlign; ``rois`` are ``(R, 5)`` rows ``(image, x1, y1, x2, y2)``."""
    if isinstance(blobs, list):  # FPN: each RoI on its level, then the RoIs' own order again
        levels = map_rois_to_fpn_levels(rois[:, 1:])
        out = rois.new_zeros(len(rois), blobs[0].shape[1], resolution, resolution)
        for lvl in range(2, 6):
            idx = torch.nonzero(levels == lvl).flatten()
            if len(idx):
                out[idx] = roi_align(blobs[5 - lvl], rois[idx], resolution, spatial_scale[5 - lvl], sampling_ratio,
                                     aligned=False)
        return out
    return roi_align(blobs, rois, resolution, spatial_scale, sampling_ratio, aligned=False)


class Roi2MLPHead(nn.Module):
    def __init__(self, dim_in, resolution=7, sampling_ratio=2):
        super().__init__()
        self.resolution, self.sampling_ratio = resolution, sampling_ratio
        self.fc1 = nn.Linear(dim_in * resolution ** 2, 1024)
        self.fc2 = nn.Linear(1024, 1024)

    def forward(self, blobs, rois, spatial_scale):
        x = roi_feature_transform(blobs, rois, self.resolution, spatial_scale, self.sampling_ratio)
        return F.relu(self.fc2(F.relu(self.fc1(x.view(len(x), -1)))))


class RoiXconv1fcSNHead(nn.Module):
    def __init__(self, dim_in, using_bn, resolution=7, sampling_ratio=2):
        super().__init__()
        self.resolution, self.sampling_ratio = resolution, sampling_ratio
        layers = []
        for i in range(4):
            layers += [nn.Conv2d(dim_in if i == 0 else 256, 256, 3, padding=1, bias=False),
                       ReleaseSwitchNorm(256, using_bn), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(256 * resolution ** 2, 1024)

    def forward(self, blobs, rois, spatial_scale):
        x = self.convs(roi_feature_transform(blobs, rois, self.resolution, spatial_scale, self.sampling_ratio))
        return F.relu(self.fc(x.view(len(x), -1)))


class ResNetRoiConv5Head(nn.Module):
    """``ResNet_roi_conv5_head``: RoIAlign 14x14 (sampling ratio 0: adaptive), res5 with stride 2, 7x7 average."""

    def __init__(self, using_bn, resolution=14, sampling_ratio=0):
        super().__init__()
        self.resolution, self.sampling_ratio = resolution, sampling_ratio
        self.res5 = add_stage(1024, 2048, 512, 3, resolution // 7, using_bn)
        self.avgpool = nn.AvgPool2d(7)

    def forward(self, blob, rois, spatial_scale):
        x = roi_feature_transform(blob, rois, self.resolution, spatial_scale, self.sampling_ratio)
        return self.avgpool(self.res5(x))


class FastRCNNOutputs(nn.Module):
    def __init__(self, dim_in, num_classes):
        super().__init__()
        self.cls_score = nn.Linear(dim_in, num_classes)
        self.bbox_pred = nn.Linear(dim_in, 4 * num_classes)

    def forward(self, x):
        if x.dim() == 4:
            x = x.squeeze(3).squeeze(2)
        return F.softmax(self.cls_score(x), dim=1), self.bbox_pred(x)  # the release's eval-mode outputs


class MaskHeadV1up4convsSN(nn.Module):
    """``mask_rcnn_fcn_head_v1up4convs_sn``: RoIAlign 14x14 (sampling 2), 4 x (conv, SN, ReLU), 2x2 deconv, ReLU."""

    def __init__(self, using_bn, resolution=14, sampling_ratio=2):
        super().__init__()
        self.resolution, self.sampling_ratio = resolution, sampling_ratio
        layers = []
        for _ in range(4):
            layers += [nn.Conv2d(256, 256, 3, padding=1, bias=False), ReleaseSwitchNorm(256, using_bn), nn.ReLU()]
        self.conv_fcn = nn.Sequential(*layers)
        self.upconv = nn.ConvTranspose2d(256, 256, 2, 2, 0)

    def forward(self, blobs, rois, spatial_scale):
        x = roi_feature_transform(blobs, rois, self.resolution, spatial_scale, self.sampling_ratio)
        return F.relu(self.upconv(self.conv_fcn(x)))


class MaskOutputs(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.classify = nn.Conv2d(256, num_classes, 1)

    def forward(self, x):
        return self.classify(x)  # logits (the release applies a sigmoid at test time)


class ReleaseRCNN(nn.Module):
    """``Generalized_RCNN`` of the four released configs (``configs/sn_baselines``)."""

    def __init__(self, body: str, box_head: str, mask: bool, using_bn: bool, num_classes: int = 81,
                 num_anchors: int = 3):
        super().__init__()
        self.body = body
        if body == "FPN":
            self.Conv_Body = FPNBody(using_bn, using_bn)
            self.RPN = RPN(256, num_anchors, fpn=True)
        else:
            self.Conv_Body = ResNetBody((3, 4, 6), using_bn)
            self.RPN = RPN(1024, num_anchors, fpn=False)
        self.Box_Head = {"2mlp": lambda: Roi2MLPHead(256), "4conv1fc": lambda: RoiXconv1fcSNHead(256, using_bn),
                         "res5": lambda: ResNetRoiConv5Head(using_bn)}[box_head]()
        self.Box_Outs = FastRCNNOutputs(2048 if box_head == "res5" else 1024, num_classes)
        if mask:
            self.Mask_Head = MaskHeadV1up4convsSN(using_bn)
            self.Mask_Outs = MaskOutputs(num_classes)

    def features(self, x):
        """FPN: ``[P6, P5, P4, P3, P2]``; C4: res4."""
        return self.Conv_Body(x) if self.body == "FPN" else self.Conv_Body(x)[-1]

    def spatial_scale(self):
        return self.Conv_Body.spatial_scale[1:] if self.body == "FPN" else 1 / 16

    def rpn(self, feats) -> List:
        levels = feats if self.body == "FPN" else [feats]
        return [self.RPN(f) for f in levels]

    def boxes(self, feats, rois):
        blobs = feats[1:] if self.body == "FPN" else feats  # the RoI levels are P5 .. P2
        return self.Box_Outs(self.Box_Head(blobs, rois, self.spatial_scale()))

    def mask_logits(self, feats, rois):
        return self.Mask_Outs(self.Mask_Head(feats[1:], rois, self.spatial_scale()))


def generate_anchors(stride=16, sizes=(32, 64, 128, 256, 512), aspect_ratios=(0.5, 1, 2)):
    """``modeling.generate_anchors``: rounded widths, ``+ 1`` sizes, ratio-major order; ``(A, 4)``."""
    base = stride
    w = h = float(base)
    x_ctr = y_ctr = 0.5 * (base - 1)
    anchors = []
    for ratio in aspect_ratios:
        ws = round(math.sqrt(w * h / ratio))
        hs = round(ws * ratio)
        for size in sizes:
            scale = size / stride
            aw, ah = ws * scale, hs * scale
            anchors.append([x_ctr - 0.5 * (aw - 1), y_ctr - 0.5 * (ah - 1), x_ctr + 0.5 * (aw - 1),
                            y_ctr + 0.5 * (ah - 1)])
    return torch.tensor(anchors, dtype=torch.float64)


def trained_looking(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights with the spread of a trained model: scaled convs, uneven ratios, non-trivial statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ReleaseSwitchNorm):
                module.weight.copy_(torch.rand(module.weight.shape, generator=g) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
                module.mean_weight.copy_(torch.randn(module.mean_weight.shape, generator=g) * 1.5)
                module.var_weight.copy_(torch.randn(module.var_weight.shape, generator=g) * 1.5)
                if module.using_bn:
                    module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=g) * 0.5)
                    module.running_var.copy_(torch.rand(module.running_var.shape, generator=g) * 2 + 0.2)
            elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
    return model.eval()
