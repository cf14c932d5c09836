"""What each layer selected: describe_selection, count_selections, describe_state_dict."""
import pytest
import torch
from torch import nn

import ssn_plugins as S


def test_describe_selection():
    model = nn.Sequential(S.SwitchNorm2d(4), S.SparseSwitchNorm2d(4))
    model[1].fix("mean", "LN")
    rows = S.describe_selection(model)
    assert [r["name"] for r in rows] == ["0", "1"]
    assert rows[0]["selection"] is None and rows[0]["mean_ratios"] == pytest.approx([1 / 3] * 3, abs=1e-4)
    assert rows[1]["selection"] == ("LN", None) and rows[1]["mean_ratios"] == [0, 1, 0]
    text = S.format_selection(rows)
    assert "mean=LN, var=soft" in text and "soft (SN)" in text


def test_count_selections_counts_each_vector():
    model = torch.nn.Sequential(S.SparseSwitchNorm2d(4), S.SparseSwitchNorm2d(4), S.SwitchNorm2d(4))
    model[0].fix("mean", "BN")
    model[0].fix("var", "IN")
    model[1].fix("mean", "BN")
    counts = S.count_selections(S.describe_selection(model))
    assert counts == {"mean": {"BN": 2}, "var": {"IN": 1, "soft": 1}}


def test_a_state_dict_names_only_the_published_layouts_and_never_calls_a_gn_candidate_bn():
    """Three ratio entries are [IN, LN, BN] only with BN's running statistics: [IN, LN, GN4] has three too."""
    model = nn.Sequential(S.SwitchNorm2d(8), S.SwitchNorm2d(8, candidates=("IN", "LN", "GN4")),
                          S.SwitchNorm2d(8, using_bn=False), S.SwitchNorm2d(8, candidates=("LN", "BN")))
    rows = S.describe_state_dict(model.state_dict())
    assert [r["candidates"] for r in rows] == [["IN", "LN", "BN"], ["candidate0", "candidate1", "candidate2"],
                                               ["IN", "LN"], ["candidate0", "candidate1"]]
    live = S.describe_selection(model)
    for read, running in zip(rows, live):
        assert read["mean_ratios"] == pytest.approx(running["mean_ratios"], abs=1e-4)


def test_average_ratios_average_each_vector_over_the_layers_that_have_the_candidate():
    from ssn_plugins.selection import CHART_TAG, SCALAR_PREFIX, average_ratios, ratio_scalars
    model = nn.Sequential(S.SparseSwitchNorm2d(4), S.SwitchNorm2d(4, candidates=("IN", "LN", "GN2")))
    model[0].fix("mean", "BN")
    averages = average_ratios(model)
    assert averages["mean_ratio_BN"] == pytest.approx(1.0) and averages["mean_ratio_GN2"] == pytest.approx(1 / 3)
    assert averages["mean_ratio_IN"] == pytest.approx((0 + 1 / 3) / 2, abs=1e-4)
    assert set(ratio_scalars(model)) == {SCALAR_PREFIX + key for key in averages}
    assert CHART_TAG.startswith(SCALAR_PREFIX)
