"""Search spaces (installed as ``nni_robust.spaces``).

* :mod:`.ops` -- cell operations (DARTS / dense robust cell primitives).
* :mod:`.dense_rob` -- the dense robust cell space of RobNet and MSRobNet:
  :class:`Layout`, :class:`DenseRobArch`, :class:`DenseRobNetwork` (network
  and weight-sharing supernet), ``DenseRobSpace`` (NNI ``ModelSpace``).
* :mod:`.presets` -- published architectures by name.
* :mod:`.darts` -- the DARTS cell space, generic over cell types and their
  placement: :class:`DartsLayout`, :class:`DartsArch`, :class:`DartsSupernet`
  (continuous relaxation), :class:`DartsNetwork`, ``DartsSpace`` (NNI),
  :func:`build_darts_space` (RNAS searches this space).
* :mod:`.dsara` -- the DSARA space (accurate / robust / reduction cells):
  :func:`dsara_layout`, ``DSARA_PRIMITIVES``.

``DenseRobSpace`` and ``DartsSpace`` are resolved lazily: importing NNI takes seconds, and only
code that talks to NNI needs it.
"""

from .darts import PRIMITIVES as DARTS_PRIMITIVES
from .darts import DartsArch, DartsLayout, DartsNetwork, DartsSupernet, build_darts_space, darts_choices
from .darts import _make_space_class as _darts_space_class
from .dense_rob import (EDGES, NUM_EDGES, DenseRobArch, DenseRobCell, DenseRobNetwork, Layout,
                        dense_rob_flops, edge_labels)
from .dense_rob import _make_space_class as _dense_rob_space_class
from .dsara import DSARA_PRIMITIVES, dsara_layout, dsara_network, dsara_space, dsara_supernet
from .nni_space import lazy_module_getattr
from .ops import OPS, PRIMITIVES, build_op, register_op
from .presets import PRESETS, Preset, build_preset, get_preset, list_presets, register_preset

__all__ = [
    "PRIMITIVES", "OPS", "build_op", "register_op",
    "EDGES", "NUM_EDGES", "edge_labels", "Layout", "DenseRobArch", "DenseRobCell", "DenseRobNetwork",
    "DenseRobSpace", "dense_rob_flops",
    "PRESETS", "Preset", "build_preset", "get_preset", "list_presets", "register_preset",
    "DARTS_PRIMITIVES", "DartsLayout", "DartsArch", "DartsSupernet", "DartsNetwork", "DartsSpace",
    "build_darts_space", "darts_choices",
    "DSARA_PRIMITIVES", "dsara_layout", "dsara_supernet", "dsara_network", "dsara_space",
]


__getattr__ = lazy_module_getattr(__name__, DenseRobSpace=_dense_rob_space_class, DartsSpace=_darts_space_class)
