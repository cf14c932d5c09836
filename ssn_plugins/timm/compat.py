"""The timm internals this adapter uses, in one place: written against timm 1.0.31.

timm has no registration API for norm layers: ``get_norm_layer`` and
``get_norm_act_layer`` (``timm.layers.create_norm`` / ``create_norm_act``)
resolve names and classes through module-level tables, which are what
registering a layer means there.
"""
from timm.layers import create_norm, create_norm_act

#: name -> norm class, for ``norm_layer="name"`` (``get_norm_layer``)
NORM_BY_NAME = create_norm._NORM_MAP
#: name -> norm + activation class, for ``norm_layer="name"`` in models that fuse the activation
NORM_ACT_BY_NAME = create_norm_act._NORM_ACT_MAP
#: lower-cased norm class name -> its norm + activation class, for ``norm_layer=SomeNormClass``
NORM_ACT_BY_NORM_NAME = create_norm_act._NORM_TO_NORM_ACT_MAP
#: the norm + activation classes timm passes through as they are
NORM_ACT_CLASSES = create_norm_act._NORM_ACT_TYPES
#: the norm + activation classes that take the model's ``act_layer``
TAKES_ACT_LAYER = create_norm_act._NORM_ACT_REQUIRES_ARG
