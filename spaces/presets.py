"""Published robust architectures of the dense robust cell space, by name.

The data (``data/presets.json``) holds the authors' genotype encodings and the
published sizes:

* ``MSRobNet-1000``, ``MSRobNet-1560`` (cell-wise) and ``MSRobNet-2000-P``
  (stage-wise): Ning et al., "Multi-shot NAS for Discovering Adversarially
  Robust Convolutional Neural Architectures at Targeted Capacities",
  Table 1; genotypes from the authors' aw_nas configs. Built with the
  MSRobNet construction they reproduce their published parameters and FLOPs
  (3.160M / 1018.5M, 5.305M / 1588.2M, 5.738M / 2034.2M).
* ``RobNet-large``, ``RobNet-large-v2``, ``RobNet-free``: Guo et al., "When
  NAS Meets Robustness" (CVPR 2020), Table 1; codes from gmh14/RobNets. The
  released code (reproduced with ``robnet_style=True``) builds 0.3-0.9% fewer
  parameters than the paper publishes.

``MSRobNet-2000``, ``MSRobNet-1560-P``, ``RobNet-small`` and ``RobNet-medium``
are listed in the papers but their genotypes are not public; asking for them
raises a :class:`~nni_robust.errors.ConfigError` that says so.

A timm-like registry: :func:`register_preset` adds user presets,
:func:`list_presets`, :func:`get_preset`, :func:`build_preset`.
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Mapping

from torch import nn

from nni_robust.errors import ConfigError

from .dense_rob import DenseRobArch, DenseRobNetwork, Layout

__all__ = ["Preset", "PRESETS", "UNAVAILABLE", "register_preset", "list_presets", "get_preset",
           "build_preset"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    """A named architecture with the construction that reproduces its published size.

    Attributes:
        name: Registry name, e.g. ``"MSRobNet-1000"``.
        arch: The topology.
        init_channels: ``C`` of the published model.
        network_kwargs: Further :class:`DenseRobNetwork` keyword arguments
            (``stem_multiplier``, ``robnet_style``, ...), without ``layout``.
        params_M: Published parameters in millions (``None`` if unpublished).
        flops_M: Published FLOPs in millions at 32x32 (``None`` if unpublished).
        size_tolerance: Relative deviation of the built size from the
            published one that the construction is known to have.
        paper: Where the sizes are published.
        source: Where the genotype comes from.
        training: The authors' final-training configuration, where known.
    """

    name: str
    arch: DenseRobArch
    init_channels: int
    network_kwargs: Mapping[str, Any] = field(default_factory=dict)
    params_M: float | None = None
    flops_M: float | None = None
    size_tolerance: float = 0.01
    paper: str = ""
    source: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)

    @property
    def layout(self) -> Layout:
        """The architecture's layout."""
        return self.arch.layout

    @property
    def published(self) -> dict[str, float]:
        """``{"params_M": ..., "flops_M": ...}`` (published values only)."""
        return {k: v for k, v in (("params_M", self.params_M), ("flops_M", self.flops_M)) if v is not None}

    def space_kwargs(self) -> dict[str, Any]:
        """``DenseRobNetwork`` keyword arguments other than width/classes/data:
        ``{"layout": name, **network_kwargs}`` (JSON-serializable)."""
        return {"layout": self.layout.to_json_value(), **dict(self.network_kwargs)}

    def build(self, num_classes: int = 10, *, init_channels: int | None = None, **overrides: Any) -> nn.Module:
        """Build the network (fresh weights).

        Args:
            num_classes: Output classes.
            init_channels: Override the published width.
            **overrides: Further :class:`DenseRobNetwork` keyword arguments
                (``in_channels``, ``input_size``, ``mean``, ``std`` ...).
        """
        kwargs = {**dict(self.network_kwargs), **overrides}
        return DenseRobNetwork(self.arch, layout=self.layout, num_classes=num_classes,
                               init_channels=self.init_channels if init_channels is None else init_channels,
                               **kwargs)


#: Registered presets by name.
PRESETS: dict[str, Preset] = {}
#: Presets listed in the papers whose genotypes are not public: name -> reason.
UNAVAILABLE: dict[str, str] = {}


def register_preset(preset: Preset, *, overwrite: bool = False) -> Preset:
    """Add ``preset`` to :data:`PRESETS` (returns it).

    Raises:
        ConfigError: the name is taken and ``overwrite`` is false.
    """
    if not isinstance(preset, Preset):
        raise ConfigError(f"register_preset needs a Preset, but got {type(preset).__name__}.")
    if preset.name in PRESETS and not overwrite:
        raise ConfigError(f"Preset {preset.name!r} is already registered; pass overwrite=True to replace it.")
    PRESETS[preset.name] = preset
    UNAVAILABLE.pop(preset.name, None)
    return preset


def list_presets(*, include_unavailable: bool = False) -> list[str]:
    """Names of the registered presets (and, optionally, the non-public ones)."""
    names = list(PRESETS)
    if include_unavailable:
        names += [n for n in UNAVAILABLE if n not in PRESETS]
    return names


def _resolve(name: str) -> str:
    if name in PRESETS or name in UNAVAILABLE:
        return name
    lowered = {n.lower(): n for n in list(PRESETS) + list(UNAVAILABLE)}
    key = str(name).lower()
    if key in lowered:
        return lowered[key]
    close = difflib.get_close_matches(str(name), list(PRESETS) + list(UNAVAILABLE), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"Unknown preset {name!r}.{hint} Available presets: {', '.join(PRESETS)}.")


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (case-insensitive).

    Raises:
        ConfigError: unknown name (close names are listed), or a preset whose
            genotype is not public.
    """
    key = _resolve(name)
    if key in PRESETS:
        return PRESETS[key]
    raise ConfigError(f"Preset {key!r} is listed in its paper but not available: {UNAVAILABLE[key]} "
                      f"Available presets: {', '.join(PRESETS)}.")


def build_preset(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """Build the preset ``name``; see :meth:`Preset.build` for ``kwargs``."""
    return get_preset(name).build(num_classes, **kwargs)


def _arch_from_entry(name: str, entry: Mapping[str, Any]) -> DenseRobArch:
    layout = Layout.from_name(entry["layout"])
    genotype = entry["genotype"]
    arch = DenseRobArch.from_aw_nas(genotype["aw_nas"], layout)
    if "robnet_codes" in genotype:
        from_codes = DenseRobArch.from_robnet_codes(genotype["robnet_codes"], layout)
        if from_codes != arch:  # the two encodings in the data must agree
            raise ConfigError(f"Preset {name!r}: the RobNet codes and the aw_nas strings disagree.")
    return arch


def _load_builtin() -> None:
    text = resources.files(__package__).joinpath("data/presets.json").read_text(encoding="utf-8")
    data = json.loads(text)
    for name, entry in data["presets"].items():
        pub = entry.get("published", {})
        register_preset(Preset(
            name=name,
            arch=_arch_from_entry(name, entry),
            init_channels=int(entry["init_channels"]),
            network_kwargs=dict(entry.get("network", {})),
            params_M=pub.get("params_M"),
            flops_M=pub.get("flops_M"),
            size_tolerance=float(entry.get("size_tolerance", 0.01)),
            paper=entry.get("paper", ""),
            source=dict(entry.get("source", {})),
            training=dict(entry.get("training", {})),
        ))
    for name, entry in data.get("unavailable", {}).items():
        UNAVAILABLE[name] = entry["reason"]


_load_builtin()
