"""Norm subclasses that compute more than the norm (an activation after it): convert_norm keeps what they add
or refuses them by name, convert_sync and for_inference keep it, BN folding never swallows it."""
import pytest
import torch
from torch import nn

import ssn_plugins as S
from ssn_plugins.convert import is_plain_norm, register_norm_converter, unregister_norm_converter
from ssn_plugins.layers import NormActivation

from helpers import randomize


class BatchNormReLU2d(nn.BatchNorm2d):
    """A norm + activation layer as timm writes them: BatchNorm's parameters, an activation in forward."""

    def __init__(self, channels):
        super().__init__(channels)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(super().forward(x))


class PlainSubclass(nn.BatchNorm2d):
    """A subclass that keeps BatchNorm's forward (as mmengine's _BatchNormXd does)."""


class SSNReLU2d(NormActivation, S.SparseSwitchNorm2d):
    pass


def net_with(norm_class):
    return nn.Sequential(nn.Conv2d(3, 6, 3), norm_class(6), nn.Conv2d(6, 4, 1), nn.BatchNorm2d(4))


def test_a_subclass_with_its_own_forward_is_refused_by_name_before_anything_changes():
    net = net_with(BatchNormReLU2d)
    with pytest.raises(TypeError, match=r"test_norm_subclasses\.BatchNormReLU2d override the norm's forward"):
        S.convert_norm(net, to="SSN")
    assert type(net[1]) is BatchNormReLU2d and type(net[3]) is nn.BatchNorm2d  # nothing half-converted


def test_a_subclass_keeping_batchnorms_forward_converts_to_its_rank_class():
    assert is_plain_norm(PlainSubclass(4)) and not is_plain_norm(BatchNormReLU2d(4))
    net = S.convert_norm(net_with(PlainSubclass), to="SSN")
    assert type(net[1]) is S.SparseSwitchNorm2d  # the 2-D class (the rank comes from the class hierarchy)


def converter(module, to, **kwargs):
    new = S.convert.converted_layer(module, SSNReLU2d, **kwargs)
    new.act = module.act
    return new


def test_a_registered_converter_keeps_the_activation_and_its_state():
    register_norm_converter(BatchNormReLU2d, converter)
    try:
        net = randomize(net_with(BatchNormReLU2d))
        act = net[1].act
        with torch.no_grad():
            net[1].running_mean.uniform_(-1, 1)
        running_mean = net[1].running_mean.clone()
        S.convert_norm(net, to="SSN", radius=0.2)
    finally:
        unregister_norm_converter(BatchNormReLU2d)
    assert type(net[1]) is SSNReLU2d and net[1].act is act and float(net[1].radius) == pytest.approx(0.2)
    torch.testing.assert_close(net[1].running_mean, running_mean)
    out = net[1](torch.randn(2, 6, 5, 5))
    assert (out >= 0).all() and (out == 0).any()  # the ReLU still runs
    with pytest.raises(TypeError, match="override the norm's forward"):  # unregistered again
        S.convert_norm(net_with(BatchNormReLU2d), to="SN")


def test_convert_sync_keeps_the_activation_and_the_constructor_options():
    class SyncSSNReLU2d(NormActivation, S.SyncSparseSwitchNorm2d):
        pass

    class Layer(SSNReLU2d):
        sync_variant = SyncSSNReLU2d

    net = nn.Sequential(Layer(6, act=nn.PReLU(), radius=0.3, double_backward=True))
    with torch.no_grad():
        net[0].act.weight.fill_(0.7)
    S.set_radius(net, 0.5)
    S.convert_sync(net)
    layer = net[0]
    assert type(layer) is SyncSSNReLU2d and isinstance(layer.act, nn.PReLU)
    assert layer.act.weight.item() == pytest.approx(0.7) and float(layer.radius) == pytest.approx(0.5)
    assert layer.double_backward and layer._initial_radius == pytest.approx(0.3)
    with pytest.raises(TypeError, match="has no synchronised counterpart"):
        S.convert_sync(nn.Sequential(SSNReLU2d(4)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_for_inference_keeps_the_activation_after_the_inference_layer(dtype):
    net = nn.Sequential(nn.Conv2d(3, 6, 3), SSNReLU2d(6, act=nn.ReLU()), nn.Conv2d(6, 4, 1),
                        SSNReLU2d(4, act=nn.LeakyReLU(0.2)))
    net = randomize(net).to(dtype)
    net[1].fix("mean", "BN"), net[1].fix("var", "BN")   # native BN, then the activation
    net[3].fix("mean", "IN"), net[3].fix("var", "LN")   # FrozenSwitchNorm, then the activation
    x = torch.randn(3, 3, 9, 9, dtype=dtype)
    net.train()
    for _ in range(3):
        net(x)  # running statistics
    inference, report = S.for_inference(net)
    assert [type(m).__name__ for m in inference[1]] == ["BatchNorm2d", "Identity", "ReLU"]
    assert [type(m).__name__ for m in inference[3]] == ["FrozenSwitchNorm", "Identity", "LeakyReLU"]
    assert [after for _, _, after in report.replaced] == ["BatchNorm2d + ReLU", "FrozenSwitchNorm(IN+LN) + LeakyReLU"]
    assert report.folded == []  # a norm followed by its activation is not folded into the convolution
    tol = {torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(inference(x), net.eval()(x), rtol=tol, atol=tol)


def test_bn_folding_leaves_a_batchnorm_subclass_with_an_activation_alone():
    net = randomize(net_with(BatchNormReLU2d)).eval()
    x = torch.randn(2, 3, 7, 7)
    inference, report = S.for_inference(net)
    assert type(inference[1]) is BatchNormReLU2d  # folding it would drop its ReLU
    assert [name for name, _, _ in report.folded] == ["3"]  # the plain BatchNorm after conv 2 is folded
    torch.testing.assert_close(inference(x), net(x), rtol=1e-5, atol=1e-5)
    assert (inference[:2](x) >= 0).all()
