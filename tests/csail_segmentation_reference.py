"""A plain re-implementation of the SN segmentation release's inference forward (the CSAIL framework), for the tests.

Written from switchablenorms/SwitchNorm_Segmentation's ``models/resnet_v1_sn.py`` and ``models/models.py``
(``ResnetDilated`` with ``dilate_scale=8``, ``C1BilinearDeepSup``): the same attribute names, so the encoder's and
decoder's ``state_dict()`` have the release's keys. The SN formula is the release's (``ReleaseSwitchNorm``, shared
with the detection reference: the two releases' layers are the same code). Nothing here imports ssn_plugins or mmseg.
"""
from functools import partial

import torch.nn.functional as F
from torch import nn

from detectron_pytorch_reference import ReleaseSwitchNorm


class Bottleneck(nn.Module):
    """``resnet_v1_sn.Bottleneck`` (the stride in the 3x3 convolution)."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.sn1 = ReleaseSwitchNorm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.sn2 = ReleaseSwitchNorm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.sn3 = ReleaseSwitchNorm(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.sn1(self.conv1(x)))
        out = F.relu(self.sn2(self.conv2(out)))
        out = self.sn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def _stage(inplanes, planes, blocks, stride):
    downsample = None
    if stride != 1 or inplanes != planes * 4:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                                   ReleaseSwitchNorm(planes * 4))
    return nn.Sequential(Bottleneck(inplanes, planes, stride, downsample),
                         *[Bottleneck(planes * 4, planes) for _ in range(1, blocks)])


def _nostride_dilate(m, dilate):
    """``ResnetDilated._nostride_dilate``: a strided conv loses its stride (its 3x3 dilated at half the rate)."""
    if isinstance(m, nn.Conv2d):
        if m.stride == (2, 2):
            m.stride = (1, 1)
            if m.kernel_size == (3, 3):
                m.dilation, m.padding = (dilate // 2, dilate // 2), (dilate // 2, dilate // 2)
        elif m.kernel_size == (3, 3):
            m.dilation, m.padding = (dilate, dilate), (dilate, dilate)


class ResnetDilated8(nn.Module):
    """``ResnetDilated(resnetv1sn50(), dilate_scale=8)``: the encoder file's module (no ``fc``)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.sn1 = ReleaseSwitchNorm(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _stage(64, 64, 3, 1)
        self.layer2 = _stage(256, 128, 4, 2)
        self.layer3 = _stage(512, 256, 6, 2)
        self.layer4 = _stage(1024, 512, 3, 2)
        self.layer3.apply(partial(_nostride_dilate, dilate=2))
        self.layer4.apply(partial(_nostride_dilate, dilate=4))

    def forward(self, x):
        x = self.maxpool(F.relu(self.sn1(self.conv1(x))))
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outs.append(x)
        return outs


def conv3x3_sn_relu(in_planes, out_planes):
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 3, padding=1, bias=False), ReleaseSwitchNorm(out_planes),
                         nn.ReLU())


class C1BilinearDeepSup(nn.Module):
    """The decoder file's module; :meth:`logits` gives both classifiers' outputs before the upsampling."""

    def __init__(self, num_class=150, fc_dim=2048):
        super().__init__()
        self.cbr = conv3x3_sn_relu(fc_dim, fc_dim // 4)
        self.cbr_deepsup = conv3x3_sn_relu(fc_dim // 2, fc_dim // 4)
        self.conv_last = nn.Conv2d(fc_dim // 4, num_class, 1)
        self.conv_last_deepsup = nn.Conv2d(fc_dim // 4, num_class, 1)

    def logits(self, conv_out):
        return self.conv_last(self.cbr(conv_out[-1])), self.conv_last_deepsup(self.cbr_deepsup(conv_out[-2]))

    def forward(self, conv_out, seg_size):
        """The release's test output: softmax of the logits upsampled to the label's size."""
        x = F.interpolate(self.logits(conv_out)[0], size=seg_size, mode="bilinear", align_corners=False)
        return F.softmax(x, dim=1)
