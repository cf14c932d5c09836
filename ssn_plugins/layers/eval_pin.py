"""The "eval-pinned" mode of a layer: it stays in eval mode whatever ``train()`` says, and its parameters keep
training unless they were frozen too. OpenMMLab's ``norm_eval`` means this; detectron2's ``FREEZE_AT`` is this plus
no gradients (:meth:`SwitchNorm.freeze`). Both adapters set it once, at build or before training."""
from torch import nn


class EvalPinnable(nn.Module):
    """Mixin of the SN/SSN and CE layers: :meth:`pin_eval` and the ``train()`` that honours it."""

    #: set by :meth:`pin_eval` (a class default, so that any instance has it)
    eval_pinned = False

    def pin_eval(self, pinned: bool = True) -> "EvalPinnable":
        """Keep this layer in eval mode (running statistics, none updated) from now on; ``False`` releases it."""
        self.eval_pinned = bool(pinned)
        if pinned:
            super().train(False)
        return self

    def train(self, mode: bool = True) -> "EvalPinnable":
        return super().train(mode and not self.eval_pinned)
