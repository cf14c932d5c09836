"""Speed and activation memory of SN / SSN against PyTorch's native norms.

Every number is a ratio to a baseline measured in the same run (the machine
is noisy): per layer shape, forward+backward time and the bytes autograd
saves for backward, against ``nn.BatchNorm2d``; sparse SSN also against the
native norm it selected; and a ResNet-50 training step with SN/SSN against
the same step with BatchNorm.

    python benchmarks/bench_norms.py            # the full table (about 10 minutes on 2 cores)
    python benchmarks/bench_norms.py --quick    # a smaller run
"""
import argparse
import statistics
import time

import torch
import torchvision
from torch import nn

import ssn_plugins as S

# (channels, height, width) of the norm layers in ResNet-50 at 224x224
RESNET50_SHAPES = [(64, 112, 112), (64, 56, 56), (256, 56, 56), (128, 28, 28), (512, 28, 28),
                   (256, 14, 14), (1024, 14, 14), (512, 7, 7), (2048, 7, 7)]


def sparse(candidate: str, cls=S.SparseSwitchNorm2d):
    def make(c):
        m = cls(c)
        m.fix("mean", candidate)
        m.fix("var", candidate)
        return m
    return make


LAYERS = {
    "BatchNorm2d": nn.BatchNorm2d,
    "GroupNorm(32)": lambda c: nn.GroupNorm(32, c),
    "InstanceNorm2d": lambda c: nn.InstanceNorm2d(c, affine=True),
    "GroupNorm(1)": lambda c: nn.GroupNorm(1, c),
    "SN": S.SwitchNorm2d,
    "SSN soft": lambda c: S.SparseSwitchNorm2d(c, radius=0.3),
    "SSN sparse BN": sparse("BN"),
    "SSN sparse IN": sparse("IN"),
    "SSN sparse LN": sparse("LN"),
}
NATIVE_OF = {"SSN sparse BN": "BatchNorm2d", "SSN sparse IN": "InstanceNorm2d", "SSN sparse LN": "GroupNorm(1)"}


def saved_bytes(fn) -> int:
    """Bytes of the distinct tensors autograd saves for backward while ``fn`` runs."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(storages.values())


def time_all(steps: dict, rounds: int) -> dict:
    """Best-of-``rounds`` seconds per step, the steps interleaved so that drift hits all alike.

    Each round runs every step enough times to last about 20 ms, so tiny
    layers are not measured at the timer's resolution.
    """
    inner = {}
    for name, fn in steps.items():
        fn()  # warm-up
        start = time.perf_counter()
        fn()
        inner[name] = max(1, int(0.02 / max(time.perf_counter() - start, 1e-6)))
    best = {name: float("inf") for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            start = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / inner[name])
    return best


def layer_table(batch: int, shapes, rounds: int, kinds=None):
    """``[(input shape, {kind: (seconds, saved bytes)})]`` for ``shapes`` = ``(C, *spatial)`` and ``kinds``
    (default :data:`LAYERS`) = ``{name: factory(C)}``."""
    rows = []
    for c, *extent in shapes:
        x = torch.randn(batch, c, *extent, requires_grad=True)
        grad = torch.randn_like(x)
        layers = {name: make(c).train() for name, make in (kinds or LAYERS).items()}

        def step_of(layer):
            def step():
                layer.zero_grad(set_to_none=True)
                x.grad = None
                layer(x).backward(grad)
            return step

        times = time_all({name: step_of(layer) for name, layer in layers.items()}, rounds)
        results = {name: (times[name], saved_bytes(lambda: layer(x))) for name, layer in layers.items()}
        rows.append(((batch, c, *extent), results))
    return rows


def print_layer_table(rows):
    names = list(LAYERS)
    print("\nforward+backward time / BatchNorm2d time (saved-for-backward memory / BatchNorm2d's in brackets)")
    print("| input | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for shape, res in rows:
        bt, bm = res["BatchNorm2d"]
        cells = [f"{res[n][0] / bt:.2f} ({res[n][1] / bm:.1f})" for n in names]
        print(f"| {shape} | " + " | ".join(cells) + " |")
    print("\nsparse SSN time / the native norm it selected")
    print("| input | " + " | ".join(NATIVE_OF) + " |")
    print("|---" * (len(NATIVE_OF) + 1) + "|")
    worst = {}
    for shape, res in rows:
        ratios = [res[n][0] / res[native][0] for n, native in NATIVE_OF.items()]
        for n, r in zip(NATIVE_OF, ratios):
            worst[n] = max(worst.get(n, 0), r)
        print(f"| {shape} | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")
    sn = [res["SN"][0] / res["BatchNorm2d"][0] for _, res in rows]
    print(f"\nSN / BatchNorm2d: median {statistics.median(sn):.2f}, worst {max(sn):.2f} (target <= 2)")
    print("sparse SSN / native, worst: " + ", ".join(f"{n}: {r:.2f}" for n, r in worst.items())
          + " (target <= 1.15)")


def resnet50_steps(batch: int, size: int, rounds: int) -> dict:
    """Seconds per SGD step of a torchvision ResNet-50 with each kind of norm."""
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 100, (batch,))
    steps = {}
    for norm in ("BN", "SN", "SSN soft", "SSN sparse"):
        torch.manual_seed(0)
        model = torchvision.models.resnet50(num_classes=100)
        if norm != "BN":
            if norm == "SN":
                model = S.convert_norm(model, to="SN")
            else:
                model = S.convert_norm(model, to="SSN", radius=0.3)
                S.batched_ratios(model)  # as RadiusScheduler sets it up
        if norm == "SSN sparse":
            fix_half_bn(model)
        steps[norm] = sgd_step(model, x, y)
    return time_all(steps, rounds)


def fix_half_bn(model: nn.Module) -> None:
    """Fix every SSN layer's selection: half of them BN, the rest IN and LN (the papers find about half BN)."""
    for i, m in enumerate(S.sparse_layers(model)):
        choice = ("BN", "IN", "LN")[i % 3] if i % 2 else "BN"
        m.fix("mean", choice)
        m.fix("var", choice)


def sgd_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """A function running one cross-entropy SGD step of ``model`` on ``(x, y)``."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 3 if args.quick else 5
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    for batch in (2, 32):
        shapes = RESNET50_SHAPES[2::3] if args.quick or batch == 32 else RESNET50_SHAPES
        print(f"\n## batch {batch}")
        print_layer_table(layer_table(batch, shapes, rounds))

    batch, size = (4, 112) if args.quick else (8, 160)
    print(f"\n## ResNet-50 training step, batch {batch}, {size}x{size}")
    times = resnet50_steps(batch, size, max(2, rounds - 2))
    for norm, t in times.items():
        print(f"{norm}: {t:.2f} s = {t / times['BN']:.2f} x BN" + (" (target <= 1.3)" if norm.startswith("SSN") else ""))


if __name__ == "__main__":
    main()
