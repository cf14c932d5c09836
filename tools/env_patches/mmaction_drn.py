"""Stand-in for ``mmaction.models.localizers.drn.drn``.

mmaction2 1.2.0 is published without this sub-package although
``mmaction/models/localizers/__init__.py`` imports it, so ``import
mmaction.models`` fails. tools/with_env.sh installs this file in its place. It
registers the name ``DRN`` (the temporal-grounding localizer ssn_plugins does
not use) so the registry stays complete, and building it says what happened.
"""
from mmaction.registry import MODELS


@MODELS.register_module()
class DRN:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(
            "mmaction2 1.2.0 is published without its DRN localizer "
            "(mmaction/models/localizers/drn); this environment provides only "
            "the name so that `import mmaction.models` works.")
