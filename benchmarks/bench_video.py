"""Speed of the 5-D (video) SN / SSN layers and of an I3D training step, against native 3-D norms.

Ratios to baselines measured in the same run: per I3D ResNet-50 layer shape
``(N, C, T, H, W)``, forward+backward time against ``nn.BatchNorm3d`` and
sparse SSN against the native kernel it selected; then one training step of
mmaction2's I3D ResNet3d-50 (+ I3DHead) with SN3d / SSN3d against BN3d.

    python benchmarks/bench_video.py            # about 5 minutes on 2 cores
    python benchmarks/bench_video.py --quick
"""
import argparse

import torch
from torch import nn

import ssn_plugins as S
from ssn_plugins.radius import batched_ratios

# a script's own folder is on sys.path: the timing helpers are shared with bench_norms.py
from bench_norms import fix_half_bn, layer_table, sgd_step, sparse, time_all

# (channels, frames, height, width) of I3D ResNet-50's norm layers for 32-frame clips at 224x224
I3D_SHAPES = [(64, 16, 112, 112), (256, 8, 56, 56), (512, 8, 28, 28), (1024, 8, 14, 14), (2048, 8, 7, 7)]


LAYERS = {
    "BatchNorm3d": nn.BatchNorm3d,
    "InstanceNorm3d": lambda c: nn.InstanceNorm3d(c, affine=True),
    "GroupNorm(1)": lambda c: nn.GroupNorm(1, c),
    "SN3d": S.SwitchNorm3d,
    "SSN3d soft": lambda c: S.SparseSwitchNorm3d(c, radius=0.3),
    "SSN3d sparse BN": sparse("BN", S.SparseSwitchNorm3d),
    "SSN3d sparse IN": sparse("IN", S.SparseSwitchNorm3d),
    "SSN3d sparse LN": sparse("LN", S.SparseSwitchNorm3d),
}
NATIVE_OF = {"SSN3d sparse BN": "BatchNorm3d", "SSN3d sparse IN": "InstanceNorm3d", "SSN3d sparse LN": "GroupNorm(1)"}


def i3d_steps(batch: int, frames: int, size: int, rounds: int) -> dict:
    """Seconds per SGD step of mmaction2's I3D ResNet3d-50 with each norm."""
    from mmaction.models.backbones import ResNet3d
    from mmaction.models.heads import I3DHead
    import ssn_plugins.openmmlab  # noqa: F401  (registers SN3d / SSN3d)

    x = torch.randn(batch, 3, frames, size, size)
    y = torch.randint(0, 400, (batch,))
    steps = {}
    for norm in ("BN3d", "SN3d", "SSN3d soft", "SSN3d sparse"):
        torch.manual_seed(0)
        norm_type = {"BN3d": "BN3d", "SN3d": "SN3d"}.get(norm, "SSN3d")
        backbone = ResNet3d(depth=50, pretrained=None, pretrained2d=False, conv1_kernel=(5, 7, 7),
                            conv1_stride_t=2, pool1_stride_t=2, norm_cfg=dict(type=norm_type),
                            inflate=((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0)))
        model = nn.Sequential(backbone, I3DHead(num_classes=400, in_channels=2048))
        if norm == "SSN3d soft":
            S.set_radius(model, 0.3)
            batched_ratios(model)
        if norm == "SSN3d sparse":
            fix_half_bn(model)
        steps[norm] = sgd_step(model, x, y)
    return time_all(steps, rounds)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    args = parser.parse_args()
    rounds = 3 if args.quick else 5
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    shapes = I3D_SHAPES[1::2] if args.quick else I3D_SHAPES
    print("\n## I3D layer shapes, batch 2: forward+backward time / BatchNorm3d (sparse SSN: / its native kernel)")
    names = [n for n in LAYERS if n != "BatchNorm3d"]
    print("| input (N, C, T, H, W) | " + " | ".join(names) + " | " + " | ".join(f"{n} / native" for n in NATIVE_OF)
          + " |")
    print("|---" * (len(names) + len(NATIVE_OF) + 1) + "|")
    for shape, results in layer_table(2, shapes, rounds, LAYERS):
        times = {name: seconds for name, (seconds, _) in results.items()}
        cells = [f"{times[n] / times['BatchNorm3d']:.2f}" for n in names]
        cells += [f"{times[n] / times[native]:.2f}" for n, native in NATIVE_OF.items()]
        print(f"| {shape} | " + " | ".join(cells) + " |")

    batch, frames, size = (2, 8, 112) if args.quick else (2, 16, 160)
    print(f"\n## I3D ResNet3d-50 training step, batch {batch}, {frames}x{size}x{size}")
    times = i3d_steps(batch, frames, size, max(2, rounds - 2))
    for norm, t in times.items():
        print(f"{norm}: {t:.2f} s = {t / times['BN3d']:.2f} x BN3d")


if __name__ == "__main__":
    main()
