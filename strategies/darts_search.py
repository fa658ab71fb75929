"""What the searches over a DARTS-cell supernet share (DSARA, RNAS, Wsr-NAS).

Three methods relax a DARTS-cell space continuously (``nni_robust.spaces.darts``;
DARTS, Liu et al. 2019), search its architecture parameters with a method of
their own and end alike: the architecture derived by the DARTS rule goes to
the work dir and the shared ``final`` task trains it in a larger network.
What they share sits here, above the method folders:

* :func:`arch_entropy` -- how decided the architecture parameters are (a
  per-epoch / per-iteration metric of every such search);
* :func:`check_arch_decided` -- the trust warning (``<method>.entropy``) when
  they are still (nearly) uniform at the end of a search: the derived
  architecture is then a tie-break of their random initialisation;
* :func:`log_arch_weights` -- the architecture weights to TensorBoard as labelled
  operation x edge heatmaps, one image per cell type (``arch/<cell type>``);
* :func:`export_architecture` -- the derived architecture of a finished search
  to ``work_dir/architecture.json`` and ``work_dir/best_architecture.json``;
* :func:`final_network` and :func:`check_tuner_space` -- the checks of the
  strategies' arguments (the final network's space and width; the tuner's
  NNI space against the trials' ``settings.space``).

The NNI strategy template these searches run as (search trial -> export ->
final trial) is :class:`nni_robust.strategies.darts_strategy.DartsSearchStrategy`
(it imports NNI; this module does not, so trial-side code may import it).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from nni_robust.checkpoint import restore_rng_state
from nni_robust.errors import ConfigError, NniRobustError
from nni_robust.seeding import seed_everything

__all__ = ["arch_entropy", "log_arch_weights", "resume_or_seed", "export_architecture", "final_network",
           "check_tuner_space", "check_arch_decided", "UNIFORM_ENTROPY_RATIO"]

logger = logging.getLogger(__name__)


def arch_entropy(weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean entropy (nats) of the per-edge operation distributions over all cell types.

    Args:
        weights: ``{cell type: (edges, ops) softmax weights}`` (rows sum to 1).

    Returns:
        A 0-d tensor in ``[0, log(ops)]``: ``log(ops)`` at initialisation
        (uniform), 0 when every edge has chosen one operation.
    """
    if not weights:
        raise ConfigError("arch_entropy needs the weights of at least one cell type.")
    rows = torch.cat([w.detach().float().reshape(-1, w.shape[-1]) for w in weights.values()])
    return -(rows * rows.clamp_min(1e-30).log()).sum(dim=1).mean()


def log_arch_weights(writer: Any, supernet: Any, step: int) -> None:
    """The ``softmax(alpha)`` of a :class:`~nni_robust.spaces.darts.DartsSupernet` as one labelled
    operation x edge heatmap per cell type (TensorBoard images ``arch/<cell type>``, with a colour bar)."""
    from nni_robust.archdraw import cell_edge_names
    from nni_robust.spaces.darts import EDGES
    from nni_robust.tb import add_arch_weights

    add_arch_weights(writer, supernet.arch_weights(), ops=supernet.primitives, edges=cell_edge_names(EDGES),
                     step=step)


#: Entropy of the final architecture weights, as a fraction of its maximum ``log(ops)``, above which the
#: weights count as still uniform: the architecture parameters barely moved during the search.
UNIFORM_ENTROPY_RATIO = 0.99


def check_arch_decided(work_dir: str | Path | None, method: str, metrics: Mapping[str, Any] | None,
                       num_ops: int) -> str | None:
    """Record a trust warning when a search ended with (nearly) uniform architecture weights.

    The entropy ratio is ``metrics["arch_entropy_ratio"]`` when the search reports it (Wsr-NAS),
    else ``metrics["arch_entropy"] / log(num_ops)`` (DSARA, RNAS: the last epoch's mean entropy).
    Above :data:`UNIFORM_ENTROPY_RATIO` the warning ``<method>.entropy`` goes to
    ``<work_dir>/warnings.jsonl`` (:func:`nni_robust.strategies.trust.record_warning`).

    Returns:
        The warning's sentence, or ``None`` (the weights moved, or the metrics carry no entropy).
    """
    from .trust import record_warning

    metrics = metrics or {}
    ratio = metrics.get("arch_entropy_ratio")
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool):
        entropy = metrics.get("arch_entropy")
        if not isinstance(entropy, (int, float)) or isinstance(entropy, bool) or num_ops < 2:
            return None
        ratio = float(entropy) / math.log(num_ops)
    ratio = float(ratio)
    if not ratio > UNIFORM_ENTROPY_RATIO:
        return None
    epochs = metrics.get("epochs", metrics.get("epoch"))
    text = (f"The architecture weights are still nearly uniform at the end of the {method} search (entropy "
            f"{100 * ratio:.2f}% of its maximum log({num_ops}) = {math.log(num_ops):.3f}"
            + (f", after {int(epochs)} epochs" if isinstance(epochs, (int, float)) else "") + "): the derived "
            "architecture is close to the argmax of their random initialisation, not a choice of the search. "
            "Give the architecture more update steps (more epochs or images) or a larger learning rate.")
    record_warning(work_dir, f"{method}.entropy", text, entropy_ratio=ratio, num_ops=int(num_ops),
                   arch_entropy=metrics.get("arch_entropy"))
    return text


def resume_or_seed(resume: Mapping[str, Any] | None, loaders: Mapping[str, Any], seed: int, *,
                   fresh: bool) -> None:
    """Start (or continue) a search loop's run: the checkpoint's random states, or the run's seed.

    With ``resume`` (a loaded checkpoint with ``rng`` and ``loaders``): every
    generator's state and each named loader's position are restored, so the run
    continues exactly. Otherwise, when ``fresh`` (nothing ran yet), every
    generator is seeded with ``seed``; a later call of an unfinished run in the
    same process changes nothing.
    """
    if resume is not None:
        restore_rng_state(resume["rng"])
        for key, state in resume["loaders"].items():
            if key in loaders and hasattr(loaders[key], "load_state_dict"):
                loaders[key].load_state_dict(state)
    elif fresh:
        seed_everything(seed)


def export_architecture(work_dir: str | Path, search_dir: str | Path, *, method: str,
                        method_args: Mapping[str, Any] | None = None, space: Mapping[str, Any] | None = None,
                        final_space: Mapping[str, Any] | None = None,
                        metrics: Mapping[str, Any] | None = None, arch: str | None = None,
                        selection: Mapping[str, Any] | None = None) -> Path:
    """Copy the derived architecture of a finished search to ``work_dir`` (and check it parses).

    Writes ``work_dir/architecture.json`` (the architecture alone) and
    ``work_dir/best_architecture.json`` (``{"arch", "genotype", "method",
    "method_args", "space", "final_space", "search", "warnings"}``, ``search`` the
    numeric entries of ``metrics``, plus ``"selection"`` when given). When the
    search ended with nearly uniform architecture weights (:func:`check_arch_decided`)
    the warning is recorded in ``work_dir/warnings.jsonl`` and listed under ``warnings``.

    Args:
        arch: The architecture JSON to export instead of the search's last
            one (``search_dir/architecture.json``), e.g. an earlier epoch's.
        selection: How ``arch`` was chosen (recorded as is).

    Returns:
        The path of ``architecture.json``.

    Raises:
        NniRobustError: the search wrote no ``search_dir/architecture.json``.
        ArchitectureError: it does not parse.
    """
    from nni_robust.spaces.darts import DartsArch

    src = Path(search_dir) / "architecture.json"
    if not src.exists():
        raise NniRobustError(f"{src} does not exist: the search did not finish.")
    arch = DartsArch.from_json(src.read_text() if arch is None else arch)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    out = work_dir / "architecture.json"
    out.write_text(arch.to_json(indent=2))
    numeric = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    uniform = check_arch_decided(work_dir, method, numeric, len(arch.primitives))
    best = {"arch": arch.to_dict(), "genotype": arch.to_darts_genotype(), "method": method,
            "method_args": dict(method_args or {}), "space": dict(space or {}),
            "final_space": dict(final_space or {}), "search": numeric, "warnings": [uniform] if uniform else []}
    if selection is not None:
        best["selection"] = dict(selection)
    (work_dir / "best_architecture.json").write_text(json.dumps(best, indent=2, sort_keys=True))
    logger.info("Derived architecture exported to %s: %s", out, arch)
    return out


def final_network(label: str, trial_space: Mapping[str, Any] | None, *, spaces: Sequence[str],
                  final_space: Mapping[str, Any] | None, final_init_channels: Any, target_mflops: Any,
                  default_cells: int, default_channels: int) -> tuple[dict, dict, int | None, float | None]:
    """Check a DARTS-cell search's spaces and its final network's width; fill in the paper's defaults.

    Args:
        label: The search's name in messages (``dsara``, ``wsrnas``).
        trial_space: ``settings.space`` (the supernet the search trial builds).
        spaces: The space names the search accepts (e.g. ``("darts", "dsara")``).
        final_space: ``settings.space`` of the final network; ``None``: the
            search space with ``default_cells`` cells.
        final_init_channels: C of the final network, or ``None``.
        target_mflops: Widen the final network to these MFLOPs instead, or ``None``.
        default_cells, default_channels: The paper's evaluation network.

    Returns:
        ``(trial_space, final_space, final_init_channels, target_mflops)``;
        ``final_init_channels`` is ``default_channels`` when neither width is given.

    Raises:
        ConfigError: naming the bad argument.
    """
    from nni_robust.spaces.darts import space_layout

    from .networks import space_name

    if final_init_channels is not None and target_mflops is not None:
        raise ConfigError(f"Give final_init_channels or target_mflops, not both (got {final_init_channels!r} "
                          f"and {target_mflops!r}).")
    if final_init_channels is not None and (isinstance(final_init_channels, bool)
                                            or not isinstance(final_init_channels, int) or final_init_channels < 1):
        raise ConfigError(f"final_init_channels must be a positive integer, but got {final_init_channels!r}.")
    if target_mflops is not None and (isinstance(target_mflops, bool) or not isinstance(target_mflops, (int, float))
                                      or target_mflops <= 0):
        raise ConfigError(f"target_mflops must be a positive number, but got {target_mflops!r}.")
    if target_mflops is None and final_init_channels is None:
        final_init_channels = default_channels
    trial_space = dict(trial_space or {})
    if space_name(trial_space) not in spaces:
        names = " or ".join(repr(s) for s in spaces)
        raise ConfigError(f"The {label} search needs settings.space with name {names}, but got "
                          f"{trial_space or None!r}.")
    if final_space is not None and not isinstance(final_space, Mapping):
        raise ConfigError(f"final_space must be a space settings dict, but got {final_space!r}.")
    final_space = dict(final_space) if final_space is not None else {**trial_space, "num_cells": default_cells}
    layout, _ = space_layout(trial_space)
    final_layout, _ = space_layout(final_space)
    if set(final_layout.cell_types) != set(layout.cell_types):
        raise ConfigError(f"final_space {final_space} has the cell types {list(final_layout.cell_types)}, "
                          f"but the search space {trial_space} has {list(layout.cell_types)}.")
    return trial_space, final_space, final_init_channels, \
        float(target_mflops) if target_mflops is not None else None


def check_tuner_space(model_space: Any, trial_space: Mapping[str, Any], inputs_per_node: int) -> None:
    """Check that the tuner's NNI model space is the discrete space of ``trial_space``'s cells.

    A DARTS-cell search samples nothing from the tuner's space, but the two
    must describe the same cells (cell types, operations, inputs per node),
    or the exported architecture would not be one of the experiment's space.

    Raises:
        ConfigError: they disagree.
    """
    from nni_robust.spaces.darts import darts_choices, space_layout

    layout, prims = space_layout(trial_space)
    expected = {k: tuple(v) for k, v in darts_choices(layout.cell_types, prims, inputs_per_node).items()}
    found = {label: tuple(m.values) for label, m in model_space.simplify().items()}
    if found != expected:
        raise ConfigError(
            f"The tuner's space and the trials' settings.space {dict(trial_space)} disagree: the tuner's space "
            f"has the choices {sorted(found)[:4]}..., settings.space the choices {sorted(expected)[:4]}... "
            "(cell types, operations and inputs per node must match).")
