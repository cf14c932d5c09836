"""Eval-mode latency of exported SN / SSN models against the unexported ones and against plain BatchNorm.

A torchvision ResNet-50 with BatchNorm, SN and SSN (every selection fixed, as
at the end of training: half the layers on BN, the rest IN or LN), at batch 1 and 8,
224x224. Every number is a ratio to the BatchNorm network measured in the
same run: the model as trained (eager, eval mode), after
``ssn_plugins.for_inference`` (native layers, FrozenSwitchNorm, BN folded
into the convolutions; for the BatchNorm network that is plain BN folding)
and that model exported to ONNX and run in onnxruntime.

    python benchmarks/bench_deploy.py            # about 10 minutes on 2 cores
    python benchmarks/bench_deploy.py --quick    # batch 1 only, fewer repeats
"""
import argparse

import torch
import torchvision

import ssn_plugins as S

# a script's own folder is on sys.path: the timing helpers are shared with bench_norms.py
from bench_norms import fix_half_bn, time_all


def models():
    """``{name: eval-mode ResNet-50}`` with trained-looking SN/SSN layers."""
    out = {}
    for norm in ("BN", "SN", "SSN"):
        torch.manual_seed(0)
        model = torchvision.models.resnet50()
        if norm != "BN":
            model = S.convert_norm(model, to=norm, **({"radius": 0.3} if norm == "SSN" else {}))
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (S.SwitchNorm, torch.nn.BatchNorm2d)):
                    m.running_mean.normal_(0, 0.1, generator=g)
                    m.running_var.uniform_(0.5, 2.0, generator=g)
                if isinstance(m, S.SwitchNorm):
                    m.mean_weight.normal_(generator=g)
                    m.var_weight.normal_(generator=g)
        if norm == "SSN":
            fix_half_bn(model)  # a trained SSN model: every selection fixed
        out[norm] = model.eval()
    return out


def onnx_runner(model, x):
    import onnxruntime
    program = torch.onnx.export(model, (x,), dynamo=True)
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    feed = {name: x.numpy()}
    return lambda: session.run(None, feed)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 3 if args.quick else 5
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    nets = models()
    inference = {}
    for norm, model in nets.items():
        inference[norm], report = S.for_inference(model)
        print(f"{norm}: {report.summary()}")
    for batch in ((1,) if args.quick else (1, 8)):
        x = torch.randn(batch, 3, 224, 224)
        steps = {}
        for norm in nets:
            steps[f"{norm} eager"] = lambda m=nets[norm]: m(x)
            steps[f"{norm} for_inference"] = lambda m=inference[norm]: m(x)
            steps[f"{norm} onnxruntime"] = onnx_runner(inference[norm], x)
        with torch.no_grad():
            times = time_all(steps, rounds)
        base = times["BN eager"]
        print(f"\n## batch {batch}, 224x224: latency / BatchNorm network (eager) = {base * 1e3:.1f} ms")
        print("| norm | eager | for_inference | for_inference, onnxruntime |")
        print("|---|---|---|---|")
        for norm in nets:
            cells = [f"{times[f'{norm} {kind}'] / base:.2f}" for kind in ("eager", "for_inference", "onnxruntime")]
            print(f"| {norm} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
