"""Writing an inference model as TorchScript, a ``torch.export`` program or ONNX, and running the file back.

Framework-free: the detectron2 and OpenMMLab adapters (and ``tools/deploy.py``)
hand over a module whose inputs and outputs are tensors. ONNX uses
PyTorch's ``torch.export``-based exporter (``dynamo=True``; it needs
``onnxscript``), checks the file with ``onnx.checker`` and runs it in
``onnxruntime``; the three packages are imported only for that format.
"""
from pathlib import Path
from typing import Dict, List, Sequence, Union

import torch
from torch import Tensor, nn

__all__ = ["FORMATS", "export_module", "run_exported", "flatten_tensors", "relative_errors"]

#: format name -> file suffix
FORMATS: Dict[str, str] = {"torchscript": ".ts", "export": ".pt2", "onnx": ".onnx"}


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {sorted(FORMATS)}")
    return fmt


def export_module(module: nn.Module, example_inputs: Sequence[Tensor], fmt: str, path: Union[str, Path]) -> Path:
    """Write ``module`` (called as ``module(*example_inputs)``) to ``path`` in format ``fmt``.

    ``torchscript``: ``torch.jit.trace`` (shapes as in the example); ``export``:
    ``torch.export.export`` then ``torch.export.save``; ``onnx``:
    ``torch.onnx.export(..., dynamo=True)``, checked by ``onnx.checker``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = tuple(example_inputs)
    with torch.no_grad():
        if _check_format(fmt) == "torchscript":
            torch.jit.trace(module, inputs, check_trace=False).save(str(path))
        elif fmt == "export":
            torch.export.save(torch.export.export(module, inputs), str(path))
        else:
            import onnx
            program = torch.onnx.export(module, inputs, dynamo=True)
            program.save(str(path))
            onnx.checker.check_model(str(path), full_check=True)
    return path


def run_exported(path: Union[str, Path], fmt: str, inputs: Sequence[Tensor]) -> List[Tensor]:
    """Load a file written by :func:`export_module` and run it on ``inputs``; its outputs, flattened."""
    path = str(path)
    if _check_format(fmt) == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        if len(names) != len(inputs):
            raise ValueError(f"{path} takes {len(names)} inputs, got {len(inputs)}")
        feeds = {name: t.detach().cpu().numpy() for name, t in zip(names, inputs)}
        return [torch.from_numpy(out) for out in session.run(None, feeds)]
    with torch.no_grad():
        if fmt == "torchscript":
            return flatten_tensors(torch.jit.load(path)(*inputs))
        return flatten_tensors(torch.export.load(path).module()(*inputs))


def flatten_tensors(outputs) -> List[Tensor]:
    """The tensors in nested tuples / lists / dicts (dicts in key order), depth first."""
    if isinstance(outputs, Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        return [t for key in sorted(outputs) for t in flatten_tensors(outputs[key])]
    if isinstance(outputs, (tuple, list)):
        return [t for item in outputs for t in flatten_tensors(item)]
    raise TypeError(f"cannot export an output of type {type(outputs).__name__}; outputs must be tensors")


def relative_errors(outputs: Sequence[Tensor], references: Sequence[Tensor]) -> List[float]:
    """``||a - b|| / ||b||`` per output pair (0 for two empty or all-zero tensors)."""
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs against {len(references)} references")
    errors = []
    for a, b in zip(outputs, references):
        if a.shape != b.shape:
            raise ValueError(f"output of shape {tuple(a.shape)} against a reference of shape {tuple(b.shape)}")
        a, b = a.detach().double().cpu(), b.detach().double().cpu()
        norm = b.norm()
        errors.append(0.0 if norm == 0 and a.norm() == 0 else ((a - b).norm() / norm).item())
    return errors
