"""Small tensor functions compiled into one kernel each by inductor (``torch.compile``'s code generator) for eager
calls.

Eager, each small operation costs a few microseconds of dispatch whatever its size; inductor fuses a function of
``(N, C)``-sized tensors into a few loops of C++ (CPU) or Triton (CUDA) that run in about the time of one operation.
A function is traced once with symbolic sizes, so one kernel serves every ``N`` and ``C``, and is called directly
(no ``torch.compile`` guards, which alone cost more than the operations they would save).

Each *family* (the key of what shapes a graph: candidates, dtypes, device, ...) is compiled at its first call, once
per process (one to a few seconds a function, logged). Not later, after eager warm-up calls: which calls ran eagerly
would then depend on the process's history, and a run resumed in a new process would round differently from the
uninterrupted one. Where inductor cannot compile (no C++ compiler, no Triton, a torch without these internals) or
the compiled kernel disagrees with the eager function on fresh inputs, the family stays eager and one warning says
why. The environment variable ``SSN_PLUGINS_COMPILE=0`` keeps every family eager.
"""
import contextlib
import logging
import os
import threading
import time
import warnings
from typing import Callable, Hashable, List, Optional, Sequence

import torch

__all__ = ["ENVIRONMENT_SWITCH", "compile_function", "family_kernels", "compile_seconds", "reset_families"]

#: the environment variable that, set to ``0``, keeps every family eager
ENVIRONMENT_SWITCH = "SSN_PLUGINS_COMPILE"

_FAILED = object()  # a family that could not compile (warned once)
_families: dict = {}  # key -> the kernels, or _FAILED
_compile_seconds: dict = {}  # key -> seconds its compile took
_lock = threading.Lock()


def compile_function(fn: Callable, example_inputs: Sequence, device_type: str) -> Callable[[list], list]:
    """``fn`` (tensors and ints in, a tuple of tensors out) as one inductor kernel for inputs of any size.

    The ints of ``example_inputs`` and every dimension of its tensors become symbols; their example values must
    not be 0 or 1 and must differ from each other (tracing specialises such sizes). The result takes a list (which
    it empties) of contiguous tensors of the traced ranks and dtypes, unchecked, and returns a sequence of tensors.
    """
    from torch._guards import TracingContext, tracing
    from torch._inductor import config
    from torch._inductor.compile_fx import compile_fx_inner
    from torch._inductor.decomposition import select_decomp_table
    from torch.fx.experimental.proxy_tensor import make_fx

    with torch.autocast(device_type, enabled=False) if device_type in ("cpu", "cuda") else contextlib.nullcontext():
        graph = make_fx(torch.func.functionalize(fn, remove="mutations"), tracing_mode="symbolic",
                        decomposition_table=select_decomp_table())(*example_inputs)
    symbolic_inputs = [node.meta["val"] for node in graph.graph.nodes if node.op == "placeholder"]
    fake_mode = next(v.fake_mode for v in symbolic_inputs if isinstance(v, torch.Tensor))
    # One thread: these loops are microseconds long, shorter than waking a thread pool. No size asserts: each
    # costs a Python call per input, and the caller guarantees the ranks, dtypes and contiguity.
    with config.patch({"cpp.threads": 1, "size_asserts": False, "compile_threads": 1}), \
            tracing(TracingContext(fake_mode)):
        compiled = compile_fx_inner(graph, symbolic_inputs)
    # The generated function itself: the compiled graph's own __call__ adds profiler and cache bookkeeping.
    return getattr(compiled, "current_callable", None) or compiled


def family_kernels(key: Hashable, build: Callable[[], object], describe: Callable[[], str]) -> Optional[object]:
    """The compiled kernels of ``key``'s family (what ``build()`` returns), or ``None`` where it runs eagerly.

    ``build`` compiles and checks them at the family's first call; any exception it raises keeps the family eager,
    with one warning. ``describe()`` names the computation in the log and the warning (called only then).
    """
    if os.environ.get(ENVIRONMENT_SWITCH, "1") == "0":  # read at every call (well under a microsecond)
        return None
    state = _families.get(key)
    if state is None:
        with _lock:
            state = _families.get(key)
            if state is None:
                state = _build(key, build, describe())
                _families[key] = state
    return None if state is _FAILED else state


def _build(key: Hashable, build: Callable[[], object], what: str) -> object:
    logger = logging.getLogger(__name__)
    logger.info("ssn_plugins: compiling %s (once per process and family)", what)
    start = time.perf_counter()
    try:
        state = build()
    except Exception as error:  # any failure of the compiler stack means "run eagerly", said once
        state = _FAILED
        warnings.warn(f"ssn_plugins: {what} run eagerly (slower on small maps): compiling them failed with "
                      f"{type(error).__name__}: {error}. Set {ENVIRONMENT_SWITCH}=0 to skip the attempt.",
                      RuntimeWarning, stacklevel=5)
    _compile_seconds[key] = time.perf_counter() - start
    if state is not _FAILED:
        logger.info("ssn_plugins: compiled %s in %.1f s", what, _compile_seconds[key])
    return state


def compile_seconds() -> dict:
    """``{family key: seconds}`` of the compiles this process ran (failed ones included), for benchmarks."""
    return dict(_compile_seconds)


def reset_families() -> List[Hashable]:
    """Forget every family (each compiles again at its next call); returns their keys. For tests and benchmarks."""
    with _lock:
        keys = list(_families)
        _families.clear()
        _compile_seconds.clear()
    return keys
