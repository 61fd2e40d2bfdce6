"""Plain nn.Modules. Each takes in_channels, num_outputs and spatial_shape (filled in from the
processed data's metadata) plus its own options, stated once in its `Options` model.

Every module of this package is imported here and its `__all__` re-exported, so a net is reachable
as `medpipe.models.nets.<Name>` (the `_target_` in conf/model/*.yaml) without any list to edit.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from medpipe.models.nets.registry import NETS, NetOptions, register_net

__all__ = ["NETS", "NetOptions", "register_net"]
for _info in _pkgutil.iter_modules(__path__, f"{__name__}."):
    _module = _importlib.import_module(_info.name)
    for _name in getattr(_module, "__all__", ()):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
