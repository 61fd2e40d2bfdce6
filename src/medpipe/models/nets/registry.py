"""The net registry. A net is a plain nn.Module under the contract

    Net(in_channels, num_outputs, spatial_shape, **options);  forward(x, lengths=None)

whose options are stated once, as its pydantic `Options` model: the constructor validates its
keyword arguments with it, and the config check reads the same model (unknown keys, types, ranges)
before anything is built. `@register_net` adds a class to the registry; `model.net._target_` names
it by import path (a net in your own module is found by importing that module).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from medpipe.registry import Registry, locate
from medpipe.targets import RefusedTarget


class NetOptions(BaseModel):
    """Base of every net's `Options`: closed (an unknown option is an error) and immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


NETS: Registry[type] = Registry("net", "medpipe.models.nets")


def register_net(cls: type | None = None, *, explain_layer: str | None = None):
    """Class decorator. `explain_layer`: the name (for `net.get_submodule`) of the module whose
    activation maps an explanation such as Grad-CAM reads, e.g. the last convolutional block; None
    where the net has no such layer (medpipe.evaluation.explain then attributes the output to the
    input itself, e.g. by integrated gradients over the time axis of a signal).

    The contract, for an input (N, C, *spatial):

    - the layer's output is (N, C', *spatial') with as many spatial axes as the input (image
      (N, C', h, w), volume or frames (N, C', d, h, w), signal (N, C', t)); Grad-CAM weights its
      channels and upsamples the map to the input's spatial shape;
    - or, for a net that folds the slices of a volume into the batch (one 2D encoder shared by
      every slice), (N * S, C', h, w), sample-major (row n * S + s is slice s of sample n). Such a
      net has an int attribute `slice_axis`: the axis of (D, H, W) its S slices are cut along;
      the explanation unfolds the maps back to (N, C', S, h, w) before weighting and upsampling.

    The name may go through a property (e.g. `last_block`) where the layer's index depends on the
    options; it must resolve to a module of the net (one of `net.named_modules()`).
    """

    def add(cls: type) -> type:
        options = getattr(cls, "Options", None)
        if not (isinstance(options, type) and issubclass(options, NetOptions)):
            raise TypeError(
                f"{cls.__qualname__}: a net declares its options as `Options(NetOptions)`"
            )
        cls.explain_layer = explain_layer
        return NETS.register(f"{cls.__module__}.{cls.__qualname__}", cls)

    return add(cls) if cls is not None else add


def net_class(target: Any) -> tuple[type | None, str | None]:
    """(class, None) for a registered net at import path `target`, else (None, the problem)."""
    key = "model.net._target_"
    if not isinstance(target, str) or not target:
        return (
            None,
            f"{key}: missing; name the network class to build (e.g. medpipe.models.nets.SimpleCNN)",
        )
    try:
        cls = locate(target)
    except RefusedTarget as err:
        return None, f"{key}: {err}"
    except (ImportError, AttributeError) as err:
        return None, f"{key}: cannot import '{target}' ({type(err).__name__}: {err})"
    registered = [c for _, c in NETS.items()]
    if cls not in registered:
        names = ", ".join(
            sorted(
                f"medpipe.models.nets.{c.__name__}"
                for c in registered
                if c.__module__.startswith("medpipe.")
            )
        )
        return None, (
            f"{key}: '{target}' is not a registered net (decorate it with "
            f"@medpipe.models.nets.register_net; README: Extending medpipe); built in: {names}"
        )
    return cls, None


def options_of(cls: type, options: dict[str, Any]) -> BaseModel:
    """The validated options (raises pydantic.ValidationError)."""
    return cls.Options.model_validate(options)  # type: ignore[attr-defined]
