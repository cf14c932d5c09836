"""The docs' marked snippets (``<!-- snippet: NAME -->``), run as printed: timm, the README's detectron2 yaml,
detectron2's DefaultPredictor."""
import os
import warnings

import pytest

from helpers import REPO, doc_snippet, photo_path


def test_the_timm_snippet_trains_until_every_layer_selects(capsys):
    pytest.importorskip("timm")
    namespace = {}
    exec(compile(doc_snippet("docs/timm.md", "timm"), "docs/timm.md", "exec"), namespace)
    import ssn_plugins as S
    counts = S.count_selections(S.describe_selection(namespace["model"]))
    assert "soft" not in counts["mean"] and "soft" not in counts["var"]
    assert sum(counts["mean"].values()) == 49  # EfficientNet-B0's norms, each with its SiLU kept
    assert "'soft'" not in capsys.readouterr().out


def test_the_readme_detectron2_yaml_loads_with_merge_from_file_and_builds_what_it_says(tmp_path):
    pytest.importorskip("detectron2")
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    import ssn_plugins as S
    from ssn_plugins.detectron2 import add_ssn_config

    path = tmp_path / "taste.yaml"
    path.write_text(doc_snippet("README.md", "readme-detectron2-yaml"))
    cfg = get_cfg()
    add_ssn_config(cfg)
    cfg.merge_from_file(str(path))
    cfg.MODEL.DEVICE = "cpu"
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == [[32], [64], [128], [256], [512]]  # detectron2's FPN base
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_model(cfg)  # the weights are loaded later, by the checkpointer: nothing is downloaded here
    assert not [w for w in caught if "was trained on" in str(w.message)]  # the input convention matches
    norms = [m for m in model.modules() if isinstance(m, S.SwitchNorm)]
    assert len(norms) == 53 + 8 and all(isinstance(m, S.SparseSwitchNorm2d) for m in norms)


def test_the_default_predictor_snippet_detects_with_a_saved_model(tmp_path):
    pytest.importorskip("detectron2")
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from ssn_plugins.detectron2 import add_ssn_config

    config = REPO / "configs" / "detectron2" / "mask_rcnn_R_50_FPN_1x_ssn.yaml"
    cfg = get_cfg()
    add_ssn_config(cfg)
    cfg.merge_from_file(str(config))
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS = "cpu", ""
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save("model_final")
    code = doc_snippet("docs/detectron2.md", "default-predictor")
    for printed, here in (('"configs/detectron2/', f'"{REPO}/configs/detectron2/'),
                          ('"output/model_final.pth"', f'"{tmp_path}/model_final.pth"'),
                          ('"input.jpg"', f'"{photo_path()}"')):
        assert printed in code
        code = code.replace(printed, here)
    namespace = {}
    cwd = os.getcwd()
    try:
        exec(compile(code, "docs/detectron2.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    instances = namespace["outputs"]["instances"]
    assert instances.image_size == (600, 512)  # the photo's own (height, width): the predictor resized back
    assert {"pred_boxes", "scores", "pred_classes", "pred_masks"} <= set(instances.get_fields())
    predictor = namespace["predictor"]
    assert predictor.input_format == "RGB" and not predictor.model.training
