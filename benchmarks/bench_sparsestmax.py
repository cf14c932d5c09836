"""Cost of SparsestMax's float64 projection, against a norm layer it serves, measured in the same run.

SparsestMax projects every SSN ratio vector in float64 whatever the model's dtype (exactness near the
simplex's centre). This prints the time of one batched projection of all ratio vectors of an SSN ResNet-50
(53 layers x 2 vectors of 3 candidates), forward and backward, next to the forward and backward of a single
soft SSN layer at ResNet-50's smallest and largest map sizes (batch 8), and as ratios to them.

    python benchmarks/bench_sparsestmax.py
"""
import statistics
import time

import torch

import ssn_plugins as S


def seconds(fn, repeats: int = 30) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    torch.manual_seed(0)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        logits = (torch.randn(106, 3) * 1e-3).to(dtype).requires_grad_()
        radius = torch.full((106,), 0.4)

        def project():
            S.sparsestmax(logits, radius).sum().backward()

        rows.append((f"sparsestmax, 106 vectors of 3, {str(dtype)[6:]}, fwd+bwd", seconds(project)))
    for c, h in ((2048, 7), (64, 56)):
        layer = S.SparseSwitchNorm2d(c, radius=0.4)
        x = torch.randn(8, c, h, h, requires_grad=True)

        def step():
            layer(x).sum().backward()

        rows.append((f"one soft SSN layer, 8x{c}x{h}x{h}, fwd+bwd", seconds(step, 10)))
    projection = rows[0][1]
    width = max(len(name) for name, _ in rows)
    for name, t in rows:
        print(f"{name:<{width}}  {t * 1e3:8.3f} ms  projection/this = {projection / t:6.3f}")


if __name__ == "__main__":
    main()
