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


class NetOptions(BaseModel):
    """Base of every net's `Options`: closed (an unknown option is an error) and immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


NETS: Registry[type] = Registry("net", "medpipe.models.nets")


def register_net(cls: type | None = None, *, explain_layer: str | None = None):
    """Class decorator. `explain_layer`: the name (for `net.get_submodule`) of the module whose
    spatial activation maps an explanation such as Grad-CAM reads, e.g. the last convolutional
    block; None where the net has no such fixed layer."""

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
