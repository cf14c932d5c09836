"""The candidate table (ssn_plugins.functional.candidates): every reader of "what a candidate is" gets it from the
one descriptor per kind, and each descriptor agrees with PyTorch's own norm for that kind."""
import pytest
import torch
from torch import nn

import ssn_plugins as S
from ssn_plugins.functional import CANDIDATES, kind_of
from ssn_plugins.functional.candidates import colour

NAMES = [*CANDIDATES, "GN2"]


@pytest.mark.parametrize("name", NAMES)
def test_each_descriptor_pools_as_its_native_norm_and_names_its_native_module(name):
    """The descriptor's native functional equals the one-hot mixture, and its native module (where there is one)
    equals both: one table drives the statistics, selected_norm and for_inference."""
    torch.manual_seed(0)
    x = torch.randn(4, 8, 5, 5)
    kind = kind_of(name)
    k = S.SwitchNorm2d(8, candidates=("IN", "LN", "BN", "GN2")).candidates.index(name)
    one_hot = torch.nn.functional.one_hot(torch.tensor(k), 4).float()
    mixed = S.switch_norm(x, one_hot, one_hot, ("IN", "LN", "BN", "GN2"))
    native = kind.native(x, running_mean=None, running_var=None, weight=None, bias=None, training=True,
                         momentum=0.1, eps=1e-5)
    torch.testing.assert_close(native, mixed, atol=2e-5, rtol=1e-4)
    module = kind.native_module(8, 1e-5, affine=True, track_running_stats=False, batch_norm_class=nn.BatchNorm2d)
    if name == "IN":
        assert module is None  # torch's InstanceNorm refuses what the layer takes (1x1 maps, empty batches)
    else:
        torch.testing.assert_close(module.train()(x), mixed, atol=2e-5, rtol=1e-4)
    assert kind.batch_statistics == (name == "BN") and colour(name).startswith("#")


def test_names_outside_the_table_are_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"unknown normalizer candidate 'WN'; choose from \['IN', 'LN', 'BN'\]"):
        kind_of("WN")
    assert kind_of("GN32").groups == 32 and colour("candidate0") == "#999999"
