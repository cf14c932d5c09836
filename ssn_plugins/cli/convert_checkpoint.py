"""Convert a published SN/SSN/CE ImageNet ResNet checkpoint for PyTorch, detectron2, OpenMMLab or I3D.

    python tools/convert_checkpoint.py resnet50v1_ssn_8x32.pth --to all -o converted/ssn_r50_8x32
    python tools/convert_checkpoint.py resnet50v1_sn.pth --to detectron2 -o converted/sn_r50
    python tools/convert_checkpoint.py resnet50_gn.pth --openmmlab-norm gn --to i3d -o converted/gn_r50

The last form inflates a 2-D OpenMMLab ResNet whose norm layers mmaction2's own
2-D->3-D inflation cannot load (GN: ``conv1.gn``, not ``conv1.bn``).

Writes ``<out>.pth`` (torch ``ssn_plugins.models.ResNet``: ``{"state_dict", "meta"}``),
``<out>_d2.pkl`` (detectron2 ``MODEL.WEIGHTS``), ``<out>_mm.pth`` (OpenMMLab
``init_cfg=dict(type='Pretrained', checkpoint=...)``) and ``<out>_i3d.pth``
(mmaction2 ResNet3d), and prints what was converted. Anything unrecognised stops
the conversion with the reason.
"""
import sys
from pathlib import Path

import torch

from ssn_plugins.checkpoints import TARGETS, ConversionError
from ssn_plugins.checkpoints import to_layout
from ssn_plugins.checkpoints import inflate_openmmlab_resnet, load_checkpoint_file, read_published, save_atomically
from ssn_plugins.cli import tool_parser


def convert_file(source: Path, out: Path, targets, ceil_mode_pool=None, trust_pickle=False, conv1_t=5,
            inflate_style="3x1x1"):
    """Convert ``source`` to each of ``targets``; returns ``{target: written path}``."""
    _refuse_overwriting(source, [out.with_name(out.name + TARGETS[t]) for t in targets])
    model = read_published(source, ceil_mode_pool=ceil_mode_pool, trust_pickle=trust_pickle)
    for line in model.report:
        print(line)
    _make_parent(out)
    # every target is converted before anything is written: a refused target leaves no partial output
    converted_files = [(target, *to_layout(model, target, conv1_t, inflate_style),
                        out.with_name(out.name + TARGETS[target])) for target in targets]
    written = {}
    for target, converted, dropped, path in converted_files:
        save_atomically(converted, path, pickled=target == "detectron2")
        written[target] = path
        print(f"{target}: wrote {path}" + (f" (dropped {', '.join(dropped)})" if dropped else ""))
    return written


def _refuse_overwriting(source: Path, paths) -> None:
    """The input is the user's copy of a release (its checksum identifies it): never write over it."""
    for path in paths:
        if path.exists() and path.resolve() == Path(source).resolve():
            raise ConversionError(f"{path} is the input file: writing there would replace it; give -o another name")


def _make_parent(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConversionError(f"cannot create the output folder {out.parent}: {e.strerror or e}") from e


def inflate_openmmlab(source: Path, out: Path, norm: str, depth: int, trust_pickle=False, conv1_t=5,
                      inflate_style="3x1x1") -> Path:
    """Inflate a 2-D OpenMMLab ResNet checkpoint (norm attribute ``norm``) to ``<out>_i3d.pth``."""
    _refuse_overwriting(source, [out.with_name(out.name + "_i3d.pth")])
    loaded = load_checkpoint_file(source, trust_pickle)
    state_dict = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ConversionError(f"{source}: not a state dict (a dict of tensors, or one under 'state_dict')")
    converted, dropped = inflate_openmmlab_resnet(state_dict, depth, norm, conv1_t, inflate_style=inflate_style)
    path = out.with_name(out.name + "_i3d.pth")
    _make_parent(out)
    save_atomically(converted, path)
    print(f"i3d: wrote {path} ({len(converted['state_dict'])} tensors)"
          + (f" (dropped {', '.join(dropped)})" if dropped else ""))
    return path


def main(argv=None):
    parser = tool_parser(__doc__, "convert_checkpoint")
    parser.add_argument("checkpoint", type=Path, help="a published SN/SSN/CE ResNet checkpoint")
    parser.add_argument("--to", nargs="+", choices=tuple(TARGETS) + ("all",), default=["all"])
    parser.add_argument("-o", "--output", "--out", type=Path, required=True, help="output path prefix")
    pool = parser.add_mutually_exclusive_group()
    pool.add_argument("--ceil-mode-pool", dest="ceil_mode_pool", action="store_true", default=None,
                      help="stem max-pool with padding 0 and ceil_mode (the SSN release; inferred by default)")
    pool.add_argument("--padded-pool", dest="ceil_mode_pool", action="store_false",
                      help="stem max-pool with padding 1 (the SN release)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="load with weights_only=False (only for files you trust)")
    parser.add_argument("--i3d-conv1-t", type=int, default=5, help="frames of the inflated stem convolution")
    parser.add_argument("--i3d-inflate-style", choices=("3x1x1", "3x3x3"), default="3x1x1")
    parser.add_argument("--openmmlab-norm", metavar="NAME",
                        help="the input is a 2-D OpenMMLab ResNet (not an SN/SSN release) whose norm layers are "
                             "NAME1 / layerK.i.NAME{1,2,3}, e.g. gn; only --to i3d")
    parser.add_argument("--depth", type=int, default=50, help="ResNet depth, with --openmmlab-norm")
    args = parser.parse_args(argv)
    targets = tuple(TARGETS) if "all" in args.to else tuple(args.to)
    try:
        if args.openmmlab_norm:
            if targets != ("i3d",):
                parser.error("--openmmlab-norm converts for I3D only: give --to i3d")
            inflate_openmmlab(args.checkpoint, args.output, args.openmmlab_norm, args.depth, args.trust_pickle,
                              args.i3d_conv1_t, args.i3d_inflate_style)
            return
        convert_file(args.checkpoint, args.output, targets, args.ceil_mode_pool, args.trust_pickle, args.i3d_conv1_t,
                args.i3d_inflate_style)
    except ConversionError as e:
        sys.exit(f"conversion failed: {e}")
    except Exception as e:  # noqa: BLE001 - the promise is one line naming the file and the cause
        sys.exit(f"conversion failed: {args.checkpoint}: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
