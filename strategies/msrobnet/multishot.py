"""Multi-shot evaluation of a topology (MSRobNet, ``msrobnet-multishot-nas.txt``).

Implements Alg. 3 (MultiShotEval) and the one-shot baselines of Sec. 6.2:

1. for each of the K supernets (init channels ``c_1 < ... < c_K``): activate the
   topology, calibrate BatchNorm on the first ``calib_images`` validation images
   (Sec. 5.1: "the first 10 batches in the validation split"), measure clean and
   FGSM accuracy on the first half of the validation split (Sec. 5.3.4) and the
   reward ``(1 - lam) * acc_clean + lam * acc_adv``; count the topology's FLOPs
   in that supernet;
2. fit the extrapolation family to the K (FLOPs, reward) points and evaluate it at
   the target FLOPs (Eq. 3).

A failed fit is reported (``fit_ok = 0``), never raised: the estimate then
falls back to ``fallback_reward`` (default 0.0, the worst possible reward, so a
search drops the topology; the measured one-shot rewards are still reported).

The evaluator holds the supernets and the validation tensors on the device
once; evaluating one topology touches no disk. After a supernet's BN
calibration its BatchNorm layers are folded into their convolutions for the
reward's passes (:func:`nni_robust.bn.fold_bn`, undone afterwards: same
accuracies, fewer operations), and the FLOPs come from the dense_rob closed
form (:func:`~nni_robust.spaces.dense_rob.dense_rob_flops`) once it has
matched the counted FLOPs on the first topology.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from nni_robust.attacks import build_attack
from nni_robust.bn import calibrate_bn, fold_bn
from nni_robust.checkpoint import load_checkpoint
from nni_robust.config import check_choice
from nni_robust.data import DatasetInfo, TensorLoader
from nni_robust.device import resolve_device
from nni_robust.errors import CheckpointError, ConfigError
from nni_robust.evaluation import evaluate
from nni_robust.flops import count_flops
from nni_robust.reward import robust_reward
from nni_robust.spaces.dense_rob import DenseRobArch, dense_rob_flops

from . import extrapolation
from ..networks import build_network
from ..settings import EvalSettings
from ..supernet import supernet_path

__all__ = ["MODES", "MultiShotEvaluator", "supernet_path", "flatten_result"]

logger = logging.getLogger(__name__)

#: ``multishot``: Alg. 3. ``oneshot``: the reward in the single (last) supernet
#: (baseline "one-shot-rA-<c>c"). ``oneshot_per_flops``: that reward divided by the
#: topology's FLOPs in that supernet (baseline "reward / FLOPs").
MODES = ("multishot", "oneshot", "oneshot_per_flops")


@dataclass
class _Supernet:
    width: int
    model: nn.Module
    analytic: bool | None = None  # closed-form FLOPs checked and equal (None: not checked yet)


class MultiShotEvaluator:
    """Estimates a topology's reward at a target FLOPs from K supernets.

    Args:
        supernets: ``{init_channels: supernet}``; each supernet exposes
            ``set_arch(arch)`` (see :class:`nni_robust.spaces.dense_rob.DenseRobNetwork`).
        val_images: validation images (N, C, H, W), uint8 or float in [0, 1].
        val_labels: validation labels (N,).
        info: the dataset's :class:`~nni_robust.data.DatasetInfo`.
        settings: evaluation settings (calibration, attack, lambda).
        target_flops: target capacity C_T in MFLOPs (paper: 1000, 1560, 2000).
        family: extrapolation family name (see :data:`extrapolation.FAMILIES`).
        mode: one of :data:`MODES`.
        all_families: also report the estimate of every family (cheap; used for
            the function-family selection of Alg. 2).
        fallback_reward: the estimate reported when the fit fails.
        flops_unit: FLOPs per fitting unit of the extrapolation (default 1e6:
            the fits run on MFLOPs, the paper's unit; tiny networks such as
            the 8x8 digits ones need a smaller unit, e.g. 1e3, for the families
            with ``log x``).
        channels_last: run the supernets in channels_last memory format
            (faster depthwise convolutions with oneDNN on CPU and on GPU).
        device: where to evaluate.
    """

    def __init__(self, supernets: Mapping[int, nn.Module], val_images: torch.Tensor,
                 val_labels: torch.Tensor, info: DatasetInfo, *, settings: EvalSettings,
                 target_flops: float, family: str = "log_power", mode: str = "multishot",
                 all_families: bool = True, fallback_reward: float = 0.0,
                 flops_unit: float = 1e6, channels_last: bool = True,
                 device: str | torch.device = "auto") -> None:
        check_choice("mode", mode, MODES)
        if family not in extrapolation.FAMILIES:
            raise ConfigError(f"family must be one of {sorted(extrapolation.FAMILIES)}, but got {family!r}.")
        if not supernets:
            raise ConfigError("MultiShotEvaluator needs at least one supernet, got none.")
        if mode == "multishot" and len(supernets) < 2:
            raise ConfigError(f"multi-shot evaluation needs K >= 2 supernets, got widths {sorted(supernets)}.")
        if not target_flops or target_flops <= 0:
            raise ConfigError(f"target_flops must be a positive number of MFLOPs, but got {target_flops!r}.")
        self.device = resolve_device(device)
        self.settings = settings
        self.info = info
        self.target_flops = float(target_flops)
        self.family = family
        self.mode = mode
        self.all_families = all_families
        self.fallback_reward = float(fallback_reward)
        if not flops_unit or flops_unit <= 0:
            raise ConfigError(f"flops_unit must be a positive number of FLOPs, but got {flops_unit!r}.")
        self.flops_unit = float(flops_unit)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.supernets = [_Supernet(w, m.to(self.device, memory_format=fmt).eval())
                          for w, m in sorted(supernets.items())]

        n_val = int(val_labels.shape[0])
        n_eval = settings.eval_images if settings.eval_images is not None else max(1, n_val // 2)
        n_calib = settings.calib_images
        start = settings.eval_offset
        if start + n_eval > n_val or n_calib > n_val:
            raise ConfigError(
                f"evaluation needs eval_offset + eval_images = {start} + {n_eval} and calib_images="
                f"{n_calib} images, but the validation split of {info.name!r} has only {n_val}.")
        # Paper Sec. 5.1 / 5.3.4: calibrate on the first batches of the validation
        # split, reward on its first half.
        self._calib = TensorLoader(val_images[:n_calib], val_labels[:n_calib],
                                   batch_size=settings.calib_batch_size, shuffle=False,
                                   augment=False, device=self.device, channels_last=channels_last)
        self._eval = TensorLoader(val_images[start:start + n_eval], val_labels[start:start + n_eval],
                                  batch_size=settings.batch_size, shuffle=False,
                                  augment=False, device=self.device, channels_last=channels_last)
        step = settings.step if settings.step is not None else settings.eps
        if settings.attack == "fgsm":
            self._attack = build_attack("fgsm", eps=settings.eps, step=step, random_start=False,
                                        autocast=settings.autocast)
        else:
            self._attack = build_attack("pgd", eps=settings.eps, step=step, steps=settings.steps,
                                        random_start=True, autocast=settings.autocast)
        self._input_size = (info.channels, info.size, info.size)

    @classmethod
    def from_dir(cls, supernet_dir: str | Path, widths: Sequence[int], val_images: torch.Tensor,
                 val_labels: torch.Tensor, info: DatasetInfo, *, space: Mapping[str, Any],
                 device: str | torch.device = "auto", **kwargs: Any) -> "MultiShotEvaluator":
        """Load the supernets ``supernet_dir/c<width>/supernet.pt`` written by supernet training."""
        supernets = {}
        for width in widths:
            path = supernet_path(supernet_dir, width)
            if not path.exists():
                found = sorted(p.parent.name for p in Path(supernet_dir).glob("c*/supernet.pt"))
                raise CheckpointError(
                    f"No supernet of width {width} at {path}. Supernets found in "
                    f"{supernet_dir}: {found or 'none'}. Train it first (task 'supernet') or fix 'widths'.")
            state = load_checkpoint(path)
            model = build_network(None, width=int(width), info=info, space=space)
            model.load_state_dict(state["model"])
            supernets[int(width)] = model
        return cls(supernets, val_images, val_labels, info, device=device, **kwargs)

    @property
    def widths(self) -> list[int]:
        return [s.width for s in self.supernets]

    def one_shot(self, arch: DenseRobArch) -> list[dict[str, float]]:
        """Per-supernet one-shot measures of ``arch``: width, MFLOPs, clean/adv accuracy, reward."""
        out = []
        for sn in self.supernets:
            sn.model.set_arch(arch)
            mflops = self._flops(sn, arch) / 1e6
            calibrate_bn(sn.model, self._calib, device=self.device)
            with fold_bn(sn.model):  # calibrated: the reward's passes need no BN statistics any more
                acc = evaluate(sn.model, self._eval, {"clean": None, "adv": self._attack},
                               device=self.device, autocast=self.settings.autocast)
            out.append({"width": sn.width, "mflops": mflops, "acc_clean": acc["clean"],
                        "acc_adv": acc["adv"],
                        "reward": float(robust_reward(acc["clean"], acc["adv"], self.settings.lam))})
        return out

    def _flops(self, sn: _Supernet, arch: DenseRobArch) -> int:
        """FLOPs of ``arch`` in ``sn``: the closed form of the dense_rob space once it has matched
        :func:`count_flops` (a forward pass with hooks) on this supernet, else counted."""
        if sn.analytic is False:
            return count_flops(sn.model, self._input_size)
        model = sn.model
        try:
            stem = model.stem[0]
            flops = dense_rob_flops(arch, init_channels=model.init_channels, num_classes=model.num_classes,
                                    in_channels=self._input_size[0], input_size=self._input_size[-1],
                                    stem_multiplier=stem.out_channels // model.init_channels,
                                    stem_stride=stem.stride[0])
        except Exception:  # not a dense_rob network: count (the closed form is only a shortcut)
            flops = None
        if sn.analytic is None:  # first topology: check the closed form against the count
            counted = count_flops(model, self._input_size)
            sn.analytic = flops == counted
            if not sn.analytic:
                logger.debug("Supernet c%d: closed-form FLOPs %s != counted %d; counting from now on.",
                             sn.width, flops, counted)
            return counted
        return flops

    def evaluate(self, arch: DenseRobArch) -> dict[str, Any]:
        """Alg. 3: the estimated reward of ``arch`` at the target FLOPs, with all measures."""
        start = time.perf_counter()
        per = self.one_shot(arch)
        flops = [p["mflops"] * 1e6 for p in per]
        rewards = [p["reward"] for p in per]
        target = self.target_flops * 1e6
        result: dict[str, Any] = {"mode": self.mode, "target_mflops": self.target_flops,
                                  "supernets": per, "family": self.family}
        if self.mode == "multishot":
            estimate, fit = _extrapolate(self.family, flops, rewards, target, self.flops_unit)
            result["fit"] = {"ok": fit.ok and estimate is not None and math.isfinite(estimate),
                             "params": [float(p) for p in fit.params], "message": fit.message,
                             "rmse": _finite_or_none(fit.rmse)}
            if not result["fit"]["ok"]:
                logger.warning("Fit of family %s failed for %s: %s", self.family, arch, fit.message)
                estimate = self.fallback_reward
            result["estimate"] = float(estimate)
            if self.all_families:
                estimates = {}
                for name in extrapolation.FAMILIES:
                    est, f = _extrapolate(name, flops, rewards, target, self.flops_unit)
                    estimates[name] = est if (f.ok and est is not None and math.isfinite(est)) else None
                result["estimates"] = estimates
        elif self.mode == "oneshot":
            result["estimate"] = rewards[-1]
        else:
            result["estimate"] = rewards[-1] / per[-1]["mflops"]
        result["seconds"] = time.perf_counter() - start
        return result


def _extrapolate(family: str, flops: list[float], rewards: list[float], target: float,
                 unit: float) -> tuple[float | None, "extrapolation.FitResult"]:
    """Fit and extrapolate; a family whose domain excludes the data (``log x <= 0``)
    is a failed fit here, not an error: a search must not stop on it."""
    try:
        return extrapolation.extrapolate(family, flops, rewards, target, unit=unit)
    except ConfigError as exc:
        return None, extrapolation.FitResult(family, (), False, str(exc), math.nan, unit)


def _finite_or_none(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def flatten_result(result: Mapping[str, Any]) -> dict[str, float]:
    """The NNI final-result dict of a multi-shot evaluation: ``default`` plus flat numeric keys.

    NNI's web UI shows numeric metrics; nested lists would show as text. Keys:
    ``default`` (the estimate), ``reward_c<w>``, ``acc_clean_c<w>``, ``acc_adv_c<w>``,
    ``mflops_c<w>`` per supernet width, ``fit_ok``, ``fit_rmse``, ``fit_p<i>``,
    ``est_<family>`` (families whose fit succeeded), ``target_mflops``, ``seconds``.
    """
    flat: dict[str, float] = {"default": float(result["estimate"]),
                              "target_mflops": float(result["target_mflops"]),
                              "seconds": float(result.get("seconds", 0.0))}
    for p in result["supernets"]:
        w = p["width"]
        for key in ("reward", "acc_clean", "acc_adv", "mflops"):
            flat[f"{key}_c{w}"] = float(p[key])
    fit = result.get("fit")
    if fit is not None:
        flat["fit_ok"] = 1.0 if fit["ok"] else 0.0
        if fit.get("rmse") is not None:
            flat["fit_rmse"] = float(fit["rmse"])
        for i, v in enumerate(fit["params"]):
            if math.isfinite(v):
                flat[f"fit_p{i}"] = float(v)
    for name, est in (result.get("estimates") or {}).items():
        if est is not None:
            flat[f"est_{name}"] = float(est)
    return flat
