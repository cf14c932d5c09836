r"""Export a trained SN/SSN model as plain native layers: TorchScript, torch.export or ONNX, checked on a real image.

    python tools/deploy.py configs/detectron2/mask_rcnn_R_50_FPN_1x_ssn.yaml model_final.pth -o out/mask_rcnn.ts
    python tools/deploy.py configs/detectron2/mask_rcnn_R_50_FPN_1x_ssn.yaml model_final.pth -o out/backbone.onnx \
        --format onnx --part backbone
    python tools/deploy.py configs/mmseg/deeplabv3/deeplabv3_r50-d8_ssn_8xb2-80k_cityscapes-512x1024.py \
        iter_80000.pth -o out/deeplabv3.onnx --format onnx

A ``.yaml`` config is a detectron2 model, a ``.py`` config an OpenMMLab one (mmseg, mmdet, mmaction2).
The model is built and loaded, ``ssn_plugins.for_inference`` turns its SN/SSN layers into native layers
(fixed selections), FrozenSwitchNorm (mixtures) and folds batch norms into the convolutions before them
(the report lists every change), and the result is exported, loaded back and run on a real image (the
bundled VOC photo unless ``--input``); the tool prints the relative error ``||a - b|| / ||b||`` of every
exported output against the original model, and of the inference model on crops unlike the export image
(batch 1 at two odd sizes, a batch of two), and fails above ``--tolerance``.

What is exported: detectron2 ``--part model`` (TorchScript only) is the whole detector through
detectron2's TracingAdapter (boxes, scores, classes, mask logits), ``--part backbone`` the ResNet + FPN
features of the preprocessed image (every format); OpenMMLab models export their ``mode='tensor'``
forward of the preprocessed input (mmseg: logits; mmaction2: class scores, the clip being the image
panned one pixel per frame).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import ssn_plugins as S
from ssn_plugins.cli import tool_parser
from ssn_plugins.config_files import resolve_config
from ssn_plugins.export import FORMATS, export_module, flatten_tensors, relative_errors, run_exported


def load_image(path, max_size):
    """``(H, W, 3)`` uint8 RGB: the file, or the bundled VOC photo; shrunk so its longer side is <= max_size."""
    if path is None:
        from ssn_plugins.datasets.real_mini import load_annotated_images
        image = Image.fromarray(load_annotated_images()[0].image)
    else:
        image = Image.open(path).convert("RGB")
    if max_size and max(image.size) > max_size:
        scale = max_size / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    return np.array(image)  # writable, for torch.from_numpy


def probe_images(image):
    """``(description, images)`` unlike the export image: batch 1 at two odd sizes, and a batch of two."""
    h, w = image.shape[:2]
    odd = image[:(h * 3 // 4) | 1, :(w * 2 // 3) | 1]
    small = image[h // 3:h // 3 + 33, w // 3:w // 3 + 45]
    half = ((h // 2) | 1, (w // 2) | 1)
    pair = [image[:half[0], :half[1]], image[h - half[0]:, w - half[1]:]]
    return [(f"batch {len(images)} at {images[0].shape[0]}x{images[0].shape[1]}", images)
            for images in ([odd], [small], pair)]


def unchanged(outputs, reference):
    return outputs


def prepare(args):
    """``(original model, inference model, report, to_pair, align)``: ``to_pair(model, images, probe)`` is what is
    compared, ``align(outputs, reference)`` puts outputs in the reference's order first (a detector's detections).

    ``to_pair(model, [image])`` is the exported module and its inputs. detectron2 probes (``probe=True``) of
    other images compare the backbone (ResNet + FPN), where the image's size matters; the heads see fixed-size
    ROI features.
    """
    if args.config.endswith((".yaml", ".yml")):
        if args.trust_pickle:
            raise SystemExit("--trust-pickle is for OpenMMLab checkpoints; detectron2's checkpointer decides how it "
                             "reads its files (.pth weights-only, .pkl with pickle)")
        from ssn_plugins.detectron2 import deploy
        model, cfg = deploy.load_model(args.config, args.checkpoint, args.opts)
        if args.part == "model" and args.format != "torchscript":
            raise SystemExit(f"--format {args.format} cannot follow detectron2's data-dependent padding and "
                             f"proposal selection through torch.export; use --format torchscript for the whole "
                             f"detector, or --part backbone for the ResNet + FPN features")

        def to_pair(m, images, probe=False):
            inputs = [item for i in images for item in deploy.image_inputs(i, cfg)]
            return deploy.exportable(m, inputs, "backbone" if probe else args.part)
        align = deploy.align_detections if args.part == "model" else unchanged
    else:
        if args.part != "model":
            raise SystemExit("--part backbone is for detectron2 configs; OpenMMLab models export their tensor forward")
        if args.opts:
            raise SystemExit("OpenMMLab configs take --cfg-options key=value, not --opts")
        from ssn_plugins.openmmlab import deploy
        model, cfg = deploy.load_model(args.config, args.checkpoint, args.cfg_options, args.trust_pickle)
        video = cfg.get("default_scope") == "mmaction"

        def to_pair(m, images, probe=False):  # both models get the original's preprocessing
            return deploy.TensorForward(m).eval(), (
                deploy.preprocessed_inputs(model, images, args.clip_length if video else None),)
        align = unchanged
    inference, report = S.for_inference(model, fold=not args.no_fold)
    return model, inference, report, to_pair, align


def compare(original, inference, inputs, align=unchanged):
    """The relative errors of ``inference(*inputs)``'s outputs (``align``-ed) against ``original(*inputs)``'s."""
    with torch.no_grad():
        reference = flatten_tensors(original(*inputs))
        return relative_errors(align(flatten_tensors(inference(*inputs)), reference), reference)


def main(argv=None):
    parser = tool_parser(__doc__, "deploy")
    parser.add_argument("config", help="detectron2 .yaml or OpenMMLab .py config (a file or a shipped config's name)")
    parser.add_argument("checkpoint", help="the trained model's checkpoint")
    parser.add_argument("-o", "--output", required=True, help="the file to write")
    parser.add_argument("--format", choices=sorted(FORMATS), default="torchscript")
    parser.add_argument("--part", choices=["model", "backbone"], default="model",
                        help="detectron2: the whole detector (TorchScript) or the ResNet + FPN backbone")
    parser.add_argument("--input", help="image to export with and check on (default: the bundled VOC photo)")
    parser.add_argument("--max-size", type=int, default=640, help="shrink the image so its longer side fits")
    parser.add_argument("--clip-length", type=int, default=8, help="frames per clip for video models")
    parser.add_argument("--no-fold", action="store_true", help="keep batch norms apart from their convolutions")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest relative error of an exported output against the original model")
    parser.add_argument("--verbose", action="store_true", help="list every replaced and folded layer")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="OpenMMLab: read the checkpoint with full unpickling (only for a file you trust)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="detectron2 config overrides KEY VALUE")
    parser.add_argument("--cfg-options", nargs="+", default=None,
                        help="OpenMMLab config overrides key=value")
    args = parser.parse_args(argv)
    if args.cfg_options:
        from mmengine.config import DictAction
        namespace = argparse.Namespace()
        DictAction(option_strings=[], dest="cfg_options")(parser, namespace, args.cfg_options)
        args.cfg_options = namespace.cfg_options

    if "://" not in args.checkpoint and not Path(args.checkpoint).is_file():
        sys.exit(f"deploy: {args.checkpoint}: no such checkpoint file")
    try:
        args.config = resolve_config(args.config)
    except FileNotFoundError as error:
        sys.exit(f"deploy: {error}")
    image = load_image(args.input, args.max_size)
    model, inference_model, report, to_pair, align = prepare(args)
    (original, inputs), (inference, _) = to_pair(model, [image]), to_pair(inference_model, [image])
    print(report if args.verbose else report.summary())
    print("inputs: " + ", ".join(str(tuple(t.shape)) for t in inputs))
    with torch.no_grad():
        reference = flatten_tensors(original(*inputs))
    unexported = compare(original, inference, inputs, align)
    print(f"inference model vs original: relative error {max(unexported, default=0.0):.2e} "
          f"(largest of {len(reference)} outputs)")
    # for_inference must hold on inputs unlike the export input: batch 1 at odd sizes, a batch of two
    probes = {}
    for description, images in probe_images(image):
        (a, probe_inputs), (b, _) = to_pair(model, images, probe=True), to_pair(inference_model, images, probe=True)
        probes[description] = max(compare(a, b, probe_inputs), default=0.0)
    print("inference model vs original on other inputs: "
          + ", ".join(f"{d}: {e:.2e}" for d, e in probes.items()))
    start = time.perf_counter()
    path = export_module(inference, inputs, args.format, args.output)
    print(f"wrote {path} ({args.format}, {path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - start:.0f} s")
    exported = run_exported(path, args.format, inputs)
    errors = relative_errors(align(exported, reference), reference)
    print(f"exported file, run back: relative error {max(errors, default=0.0):.2e} against the original model")
    if max(errors + unexported + list(probes.values()), default=0.0) > args.tolerance:
        sys.exit(f"relative error above the tolerance {args.tolerance}: exported {errors}, inference model "
                 f"{unexported}, on other inputs {probes}")


if __name__ == "__main__":
    main()
