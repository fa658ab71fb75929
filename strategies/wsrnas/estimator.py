"""Wsr-NAS's Adversarial Noise Estimator (``wsr-nas.txt``, Sec. "Adversarial Noise Estimator").

Given a clean image ``x`` and ``N1`` PGD noises ``delta_1 .. delta_N1`` of
increasing strengths ``eps_1 < .. < eps_N1``, an AN-Estimator produces a
noise for a new strength ``eps_hat`` (eq. 3) far more cheaply than running
PGD again. Three designs are compared in the paper (Table 5); all are here:

* :class:`WAANE` -- the weight-less weighted average of eq. 6
  (:func:`wa_ane`).
* :class:`AANE` -- eq. 7: the WA-ANE output ``delta_dot`` plus an
  "adjustment signal" ``delta_ddot`` from an encoder with a bi-directional
  recurrent network over the noise sequence and an attention mechanism
  (Fig. 2a-b). The paper's choice for the search.
* :class:`EANE` -- the Encoding AN-Estimator: the same WA-ANE branch plus an
  encoding branch whose recurrent hidden states are feature maps
  (convolutional cells); ``attention=False`` gives the paper's E-ANE^-
  ablation (the query feature maps are the output, no attention stage).

Each estimate is rescaled to the target strength (authors' code, see
``shared/notes/methods.md``) in the norm of the estimator (``norm="l2"``:
strengths and targets are L2 norms of the noises, as in the authors' search,
whose targets 2.3, 3.9, 5.5 stand for eps 0.045, 0.075, 0.105 on CIFAR-10
(see :func:`target_strengths`); ``norm="linf"``: strengths and targets are l-inf
radii, i.e. the eps themselves). When the strengths of the source noises are
not given they are measured (their norm), as in the authors' code.

Training (eq. 4-5): a replay memory ``Ma`` (:class:`ReplayMemory`, a FIFO
queue of 600 entries, as the paper's "queue with a limited length") of
``(x, sources, source strengths, target strength, target noise)`` filled with
real PGD noises (:func:`pgd_noises`, :func:`leave_one_out`: the authors'
``form_data``, every one of K noises in turn is the label and the other K-1
the sources), and the MSE of eq. 5 (:func:`estimator_loss`,
:func:`train_estimator`), AdamW lr 5e-4 (weight decay 1e-4) with a linear
warm-up of 4,000 steps then cosine (:func:`make_optimizer`,
:func:`warmup_cosine`).

:func:`attack_strength_report` measures each estimator's attack strength in
the form of Table 5: the accuracy of models under the estimated noises next
to their accuracy under real PGD at the same strengths.

Findings worth knowing before reading Table 5:

* The authors' ``WA_ANE.py`` (read, not run) returns the eq. 6 average of
  *unit-norm* (conv-preprocessed) noises without the final rescaling to the
  target norm that their ``A_ANE.py`` applies; a plausible reason for
  WA-ANE's weak attack in Table 5 (67.4 % vs 43.6 % for A-ANE). Rescaled as
  here, WA-ANE with closely spaced sources (0.03, 0.06, 0.09 -> 0.045,
  0.075, 0.105) attacked a small CNN on 8x8 digits about as well as real
  PGD at those radii (measured), leaving A-ANE nothing to gain there.
* Lower MSE (eq. 5) does not imply a stronger attack: the MSE-optimal
  estimate averages over what the inputs do not determine, so it is less
  saturated than PGD's l-inf noise; rescaled to an l-inf radius
  (``norm="linf"``) a trained A-ANE was a *weaker* attack than WA-ANE in
  that experiment although its MSE was lower. With L2 targets (the
  authors' setting) the two tie. A-ANE clearly wins where eq. 6 is poor:
  widely spaced sources, where eq. 6 leans on the farther noise (see
  ``tests/test_wsrnas_estimators.py``).
* At the authors' targets eq. 6's two weightings coincide: 0.045 and 0.075
  are midpoints, 0.105 is an extrapolation.

Choices where the paper is silent (each is documented where it is made):

* Eq. 6 is implemented exactly as printed (``weighting="paper"``): in the
  interpolation case ``delta_-`` is weighted by ``|eps_hat - eps_-| / (...)``,
  so the *farther* neighbour gets the larger weight -- the reverse of linear
  interpolation, and discontinuous at the source strengths. The authors'
  code does the same. ``weighting="linear"`` gives ordinary linear
  interpolation (``delta_-`` weighted by ``|eps_hat - eps_+| / (...)``).
  When ``eps_hat`` equals an interior source strength, ``eps_-`` is that
  strength (``eps_- <= eps_hat < eps_+``, as the authors' ``get_index``);
  the paper's strict inequalities leave this case open.
* A-ANE's recurrent cells are GRU cells (the paper's cells concatenate the
  previous hidden state with a noise encoding and a norm encoding and map
  them with an FC layer; a GRU cell is that with gates). The noise encoding
  is a Convolution-Pooling-Reshape (CPR) module on the unit-L2-norm noise,
  the norm encoding an FC layer on the strength relative to the largest
  source strength (scale-free, so one estimator serves CIFAR's L2 norms of
  ~5 and l-inf radii of ~0.05 alike). Keys: the concatenated forward and
  backward hidden states; query: both cells run once more from the hidden
  states at ``eps_-`` (forward) and ``eps_+`` (backward) with a zero noise
  encoding and the target's norm encoding (Fig. 2b); where a neighbour is
  missing (extrapolation), the initial state (the CPR encoding of ``x``)
  stands in. Values: the unit-norm noises through a shared residual
  convolutional module. Attention weights: softmax of scaled dot products.
* The adjustment signal is ``delta_ddot = g * ||delta_dot||_2 * sum_k a_k
  V_k`` with unit-norm values ``V_k`` and a gain ``g`` read from the query
  by a linear layer initialised to zero: an untrained A-ANE / E-ANE is
  exactly WA-ANE, training can only move away from it where the MSE says so.
* E-ANE's cells: ``h_k = tanh(conv3x3([u_k, r_k, h_{k-1}]))`` with ``u_k``
  the unit-norm noise, ``r_k`` its relative strength as a constant map and
  the initial maps a convolution of ``x``; keys and the query vector are
  spatial means of hidden maps, values a convolution of the hidden-map pairs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nni_robust.attacks import PGD
from nni_robust.config import check_choice
from nni_robust.errors import ConfigError

__all__ = [
    "NORMS", "WEIGHTINGS", "VARIANTS",
    "noise_norm", "rescale", "wa_coefficients", "wa_ane", "target_strengths",
    "NoiseEstimator", "WAANE", "AANE", "EANE", "build_estimator",
    "ReplayMemory", "NoiseBatch", "pgd_noises", "leave_one_out",
    "estimator_loss", "train_estimator", "make_optimizer", "warmup_cosine",
    "AneReport", "attack_strength_report",
]

logger = logging.getLogger(__name__)

NORMS = ("l2", "linf")
"""Norms in which strengths and targets are given (``l2``: authors' search; ``linf``: the eps)."""
WEIGHTINGS = ("paper", "linear")
"""Interpolation weights of eq. 6: ``paper`` exactly as printed, ``linear`` ordinary interpolation."""
VARIANTS = ("wa_ane", "a_ane", "e_ane", "e_ane_minus")
"""Estimator designs of Table 5, by name (see :func:`build_estimator`)."""

_TINY = 1e-12


# --------------------------------------------------------------------------- validation helpers

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name: str, value: Any, low: int) -> int:
    if not _is_int(value) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, but got {value!r}.")
    return value


def _check_real(name: str, value: Any, low: float = 0.0, *, low_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (value <= low if low_open else value < low):
        raise ConfigError(f"{name} must be a finite number {'>' if low_open else '>='} {low}, but got {value!r}.")
    return float(value)


def _check_norm(norm: Any) -> str:
    check_choice("norm", norm, NORMS)
    return norm


# --------------------------------------------------------------------------- eq. 6 and rescaling

def noise_norm(delta: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Norm of each noise over its last three dimensions ``(C, H, W)``.

    Args:
        delta: Noises of shape ``(..., C, H, W)``.
        norm: ``"l2"`` or ``"linf"``.

    Returns:
        Tensor of shape ``(...)``.
    """
    _check_norm(norm)
    flat = delta.flatten(-3)
    return flat.norm(dim=-1) if norm == "l2" else flat.abs().amax(dim=-1)


def rescale(delta: torch.Tensor, target: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """``delta * target / ||delta||``: the noises rescaled to the target strengths.

    Args:
        delta: ``(..., C, H, W)``.
        target: Target norms, shape ``(...)`` (broadcastable).
        norm: ``"l2"`` or ``"linf"``.

    A zero noise stays zero (its norm is clamped to 1e-12).
    """
    scale = target / noise_norm(delta, norm).clamp_min(_TINY)
    return delta * scale[..., None, None, None]


def _as_targets(target: torch.Tensor | float | Sequence[float], batch: int, device: torch.device,
                dtype: torch.dtype) -> torch.Tensor:
    t = torch.as_tensor(target, dtype=dtype, device=device)
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() == 1:
        t = t.unsqueeze(0).expand(batch, -1)
    if t.dim() != 2 or t.shape[0] != batch:
        raise ConfigError(f"target must be a scalar, a (T,) tensor of strengths shared by the batch or a "
                          f"(B={batch}, T) tensor, but got shape {tuple(t.shape)}.")
    return t


def _as_strengths(strengths: torch.Tensor | Sequence[float], batch: int, n: int, device: torch.device,
                  dtype: torch.dtype) -> torch.Tensor:
    s = torch.as_tensor(strengths, dtype=dtype, device=device)
    if s.dim() == 1:
        s = s.unsqueeze(0).expand(batch, -1)
    if s.dim() != 2 or tuple(s.shape) != (batch, n):
        raise ConfigError(f"strengths must have shape (N1={n},) or (B={batch}, N1={n}), "
                          f"but got {tuple(s.shape)}.")
    return s


def wa_coefficients(strengths: torch.Tensor, target: torch.Tensor, *, weighting: str = "paper") -> torch.Tensor:
    """The coefficients ``c`` of eq. 6, ``phi_WA = sum_k c_k delta_k``.

    Eq. 6 (``wsr-nas.txt``), with ``eps_-`` the largest source strength
    ``<= eps_hat`` and ``eps_+`` the smallest one ``> eps_hat``::

        phi_WA = |eps_hat - eps_-| / (|eps_hat - eps_-| + |eps_hat - eps_+|) * delta_-
               + |eps_hat - eps_+| / (|eps_hat - eps_-| + |eps_hat - eps_+|) * delta_+
                                             if eps_1 < eps_hat < eps_N1
        phi_WA = eps_hat / eps_1  * delta_1   if eps_hat <= eps_1
        phi_WA = eps_hat / eps_N1 * delta_N1  if eps_hat >= eps_N1

    ``weighting="linear"`` swaps the two interpolation weights (ordinary
    linear interpolation, see the module docstring).

    Args:
        strengths: ``(B, N1)`` source strengths, non-decreasing along dim 1, > 0.
        target: ``(B, T)`` target strengths.
        weighting: ``"paper"`` or ``"linear"``.

    Returns:
        ``(B, T, N1)`` coefficients.
    """
    check_choice("weighting", weighting, WEIGHTINGS)
    b, n = strengths.shape
    s = strengths.unsqueeze(1)                          # (B, 1, N)
    t = target.unsqueeze(2)                             # (B, T, 1)
    coeff = torch.zeros(b, target.shape[1], n, dtype=strengths.dtype, device=strengths.device)
    below = target <= strengths[:, :1]                  # (B, T)
    above = target >= strengths[:, -1:]
    coeff[..., 0] = torch.where(below, target / strengths[:, :1], coeff[..., 0])
    coeff[..., -1] = torch.where(above & ~below, target / strengths[:, -1:], coeff[..., -1])
    if n >= 2:
        lo = ((s <= t).sum(-1) - 1).clamp(0, n - 2)     # index of eps_-
        hi = lo + 1                                      # index of eps_+
        s_b = s.expand(-1, target.shape[1], -1)
        d_lo = (target - s_b.gather(2, lo.unsqueeze(2)).squeeze(2)).abs()
        d_hi = (target - s_b.gather(2, hi.unsqueeze(2)).squeeze(2)).abs()
        denom = (d_lo + d_hi).clamp_min(_TINY)
        w_lo, w_hi = (d_lo / denom, d_hi / denom) if weighting == "paper" else (d_hi / denom, d_lo / denom)
        inside = ~below & ~above
        interior = torch.zeros_like(coeff)
        interior.scatter_(2, lo.unsqueeze(2), w_lo.unsqueeze(2))
        interior.scatter_(2, hi.unsqueeze(2), w_hi.unsqueeze(2))
        coeff = torch.where(inside.unsqueeze(2), interior, coeff)
    return coeff


def wa_ane(sources: torch.Tensor, strengths: torch.Tensor | Sequence[float],
           target: torch.Tensor | float | Sequence[float], *, weighting: str = "paper") -> torch.Tensor:
    """Weighted Average AN-Estimator, eq. 6 of ``wsr-nas.txt`` (no rescaling).

    Args:
        sources: ``(B, N1, C, H, W)`` noises ordered by strength.
        strengths: Their strengths, ``(N1,)`` or ``(B, N1)``, > 0 and
            non-decreasing (eq. 6 needs the noises ordered by strength).
        target: Target strength(s) ``eps_hat``: a scalar, ``(T,)`` or ``(B, T)``.
        weighting: ``"paper"`` (eq. 6 as printed) or ``"linear"``.

    Returns:
        ``(B, T, C, H, W)`` estimated noises.

    Raises:
        ConfigError: bad shapes, or strengths not positive and ordered.
    """
    if sources.dim() != 5:
        raise ConfigError(f"sources must have shape (B, N1, C, H, W), but got {tuple(sources.shape)}.")
    b, n = sources.shape[:2]
    s = _as_strengths(strengths, b, n, sources.device, sources.dtype)
    if bool((s <= 0).any()) or (n > 1 and bool((s[:, 1:] < s[:, :-1]).any())):
        raise ConfigError(f"strengths must be > 0 and ordered (non-decreasing) along the noise sequence, "
                          f"but got {s.tolist() if s.numel() <= 32 else 'a tensor that is not'}.")
    t = _as_targets(target, b, sources.device, sources.dtype)
    return torch.einsum("btn,bnchw->btchw", wa_coefficients(s, t, weighting=weighting), sources)


def target_strengths(target_eps: Sequence[float] | torch.Tensor, sources: torch.Tensor,
                     source_eps: Sequence[float] | torch.Tensor, *, norm: str = "l2") -> torch.Tensor:
    """Target strengths, in the estimator's norm, for target l-inf radii.

    ``norm="linf"``: the radii themselves. ``norm="l2"``: per image,
    ``eps_hat * mean_k(||delta_k||_2 / eps_k)``, the L2 norm per unit eps of
    that image's PGD noises times the target radius. On CIFAR-10 this gives
    about the authors' fixed targets 2.3, 3.9, 5.5 for 0.045, 0.075, 0.105
    (``methods.md``; 2.3 / 0.045, 3.9 / 0.075 and 5.5 / 0.105 are all about
    52, the L2 norm per unit eps of a nearly saturated 3 x 32 x 32 noise),
    and it carries over to other image sizes.

    Args:
        target_eps: ``(T,)`` target radii.
        sources: ``(B, N1, C, H, W)`` PGD noises at ``source_eps``.
        source_eps: ``(N1,)`` their radii.
        norm: ``"l2"`` or ``"linf"``.

    Returns:
        ``(B, T)`` target strengths.
    """
    _check_norm(norm)
    te = torch.as_tensor(target_eps, dtype=sources.dtype, device=sources.device).reshape(1, -1)
    if norm == "linf":
        return te.expand(sources.shape[0], -1)
    se = torch.as_tensor(source_eps, dtype=sources.dtype, device=sources.device).reshape(1, -1)
    if se.shape[1] != sources.shape[1]:
        raise ConfigError(f"source_eps has {se.shape[1]} entries but there are {sources.shape[1]} source noises.")
    ratio = (noise_norm(sources, "l2") / se).mean(dim=1, keepdim=True)
    return ratio * te


# --------------------------------------------------------------------------- estimators

class NoiseEstimator(nn.Module):
    """Base class of the AN-Estimators, ``phi(x, delta_1..delta_N1, eps_hat)`` (eq. 3).

    Contract for subclasses: implement :meth:`_correct`, which receives the
    clean images, the sources sorted by strength, their strengths, the
    targets and the WA-ANE estimate ``delta_dot`` (eq. 6) and returns the
    estimate before rescaling (``delta_dot`` itself for WA-ANE, ``delta_dot
    + delta_ddot`` for eq. 7). :meth:`forward` sorts, computes eq. 6 and
    rescales.

    Args:
        norm: Norm of strengths and targets, ``"l2"`` or ``"linf"``.
        weighting: Eq. 6 interpolation weights, ``"paper"`` or ``"linear"``.
        rescale: Rescale each estimate to its target strength (authors' code).
    """

    variant = ""

    def __init__(self, *, norm: str = "l2", weighting: str = "paper", rescale: bool = True) -> None:
        super().__init__()
        self.norm = _check_norm(norm)
        check_choice("weighting", weighting, WEIGHTINGS)
        self.weighting = weighting
        if not isinstance(rescale, bool):
            raise ConfigError(f"rescale must be True or False, but got {rescale!r}.")
        self.rescale = rescale

    def forward(self, x: torch.Tensor, sources: torch.Tensor, target: torch.Tensor | float | Sequence[float],
                strengths: torch.Tensor | Sequence[float] | None = None) -> torch.Tensor:
        """Estimated noises of ``x`` at the target strengths.

        Args:
            x: ``(B, C, H, W)`` clean images in ``[0, 1]``.
            sources: ``(B, N1, C, H, W)`` PGD noises of ``x`` (any order).
            target: Target strengths in :attr:`norm`: scalar, ``(T,)`` or ``(B, T)``.
            strengths: The sources' strengths, ``(N1,)`` or ``(B, N1)``;
                default: their measured norms (authors' code).

        Returns:
            ``(B, T, C, H, W)`` noises (norm = target when :attr:`rescale`).
        """
        if x.dim() != 4 or sources.dim() != 5 or sources.shape[0] != x.shape[0] \
                or sources.shape[2:] != x.shape[1:]:
            raise ConfigError(f"x must be (B, C, H, W) and sources (B, N1, C, H, W) of the same B, C, H, W, but "
                              f"got {tuple(x.shape)} and {tuple(sources.shape)}.")
        b, n = sources.shape[:2]
        if strengths is None:
            s = noise_norm(sources, self.norm)
        else:
            s = _as_strengths(strengths, b, n, sources.device, sources.dtype)
        s, order = s.sort(dim=1)
        sources = sources.gather(1, order[:, :, None, None, None].expand_as(sources))
        s = s.clamp_min(_TINY)
        t = _as_targets(target, b, sources.device, sources.dtype)
        base = torch.einsum("btn,bnchw->btchw", wa_coefficients(s, t, weighting=self.weighting), sources)
        out = self._correct(x, sources, s, t, base)
        return rescale(out, t, self.norm) if self.rescale else out

    def attack(self, x: torch.Tensor, sources: torch.Tensor, target: torch.Tensor | float | Sequence[float],
               strengths: torch.Tensor | Sequence[float] | None = None) -> torch.Tensor:
        """Adversarial images ``clip(x + phi(...), 0, 1)``, shape ``(B, T, C, H, W)``, detached."""
        with torch.no_grad():
            delta = self(x, sources, target, strengths)
        return (x.unsqueeze(1) + delta).clamp(0.0, 1.0)

    def _correct(self, x: torch.Tensor, sources: torch.Tensor, strengths: torch.Tensor, target: torch.Tensor,
                 base: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}, weighting={self.weighting!r}, rescale={self.rescale}"


class WAANE(NoiseEstimator):
    """WA-ANE: eq. 6 (then rescaled to the target strength). No trainable weights."""

    variant = "wa_ane"

    def _correct(self, x, sources, strengths, target, base):
        return base


def _unit(delta: torch.Tensor) -> torch.Tensor:
    return delta / noise_norm(delta, "l2").clamp_min(_TINY)[..., None, None, None]


def _gather_seq(seq: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``seq`` (B, L, *F), ``index`` (B, T) -> (B, T, *F)."""
    idx = index.reshape(*index.shape, *([1] * (seq.dim() - 2))).expand(*index.shape, *seq.shape[2:])
    return seq.gather(1, idx)


class _CPR(nn.Module):
    """Convolution-Pooling-Reshape: conv3x3 -> ReLU -> adaptive max pool -> flatten (Fig. 2a)."""

    def __init__(self, in_channels: int, channels: int, pool: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.pool = nn.AdaptiveMaxPool2d(pool)
        self.out_dim = channels * pool * pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.conv(x))).flatten(1)


class _AttentionCorrection(NoiseEstimator):
    """Shared tail of A-ANE and E-ANE: ``base + g * ||base|| * correction``."""

    def _gain_and_direction(self, x, sources, strengths, target) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _correct(self, x, sources, strengths, target, base):
        gain, direction = self._gain_and_direction(x, sources, strengths, target)
        scale = gain * noise_norm(base, "l2").unsqueeze(-1)          # (B, T, 1)
        return base + scale[..., None, None] * direction


class AANE(_AttentionCorrection):
    """A-ANE, eq. 7: ``phi = phi_WA + F_A(x, delta_1..delta_N1, eps_hat; theta_A)``.

    ``F_A`` (Fig. 2a-b): a bi-directional recurrent network (GRU cells) over
    the noises ordered by strength, whose initial state encodes ``x`` (CPR);
    each step takes a CPR encoding of the unit-norm noise and an FC encoding
    of its relative strength. The query is formed from the hidden states at
    the target's neighbouring strengths and the target's norm encoding, the
    keys from the hidden-state pairs, the values from the noises through a
    shared convolutional module; see the module docstring for the choices.

    Args:
        in_channels: Image channels.
        hidden: Hidden-state size of each direction (64).
        cpr_channels: Channels of the CPR convolutions (8).
        cpr_pool: Output side of the CPR pooling (4).
        norm_dim: Size of the norm encoding (16).
        attn_dim: Size of queries and keys (32).
        value_channels: Hidden channels of the value module (16).
        norm, weighting, rescale: See :class:`NoiseEstimator`.
    """

    variant = "a_ane"

    def __init__(self, in_channels: int, *, hidden: int = 64, cpr_channels: int = 8, cpr_pool: int = 4,
                 norm_dim: int = 16, attn_dim: int = 32, value_channels: int = 16, norm: str = "l2",
                 weighting: str = "paper", rescale: bool = True) -> None:
        super().__init__(norm=norm, weighting=weighting, rescale=rescale)
        for name, value in (("in_channels", in_channels), ("hidden", hidden), ("cpr_channels", cpr_channels),
                            ("cpr_pool", cpr_pool), ("norm_dim", norm_dim), ("attn_dim", attn_dim),
                            ("value_channels", value_channels)):
            _check_int(name, value, 1)
        self.noise_cpr = _CPR(in_channels, cpr_channels, cpr_pool)
        self.image_cpr = _CPR(in_channels, cpr_channels, cpr_pool)
        self.init_state = nn.Linear(self.image_cpr.out_dim, 2 * hidden)
        self.norm_enc = nn.Sequential(nn.Linear(1, norm_dim), nn.ReLU())
        step_dim = self.noise_cpr.out_dim + norm_dim
        self.cell_f = nn.GRUCell(step_dim, hidden)
        self.cell_b = nn.GRUCell(step_dim, hidden)
        self.query = nn.Linear(2 * hidden, attn_dim)
        self.key = nn.Linear(2 * hidden, attn_dim)
        self.value = nn.Sequential(nn.Conv2d(in_channels, value_channels, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(value_channels, in_channels, 3, padding=1))
        self.gain = nn.Linear(2 * hidden, 1)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.gain.bias)
        self.hidden = hidden
        self.attn_dim = attn_dim

    def _gain_and_direction(self, x, sources, strengths, target):
        b, n = sources.shape[:2]
        u = _unit(sources)
        rel = strengths / strengths[:, -1:]                                   # (B, N)
        rel_t = target / strengths[:, -1:]                                    # (B, T)
        enc = self.noise_cpr(u.flatten(0, 1)).view(b, n, -1)
        steps = torch.cat([enc, self.norm_enc(rel.unsqueeze(-1))], dim=-1)    # (B, N, E)
        h0f, h0b = torch.tanh(self.init_state(self.image_cpr(x))).chunk(2, dim=-1)
        hf, h = [h0f], h0f
        for k in range(n):                                                    # over strengths, not samples
            h = self.cell_f(steps[:, k], h)
            hf.append(h)
        hb, h = [h0b], h0b
        for k in reversed(range(n)):
            h = self.cell_b(steps[:, k], h)
            hb.insert(0, h)
        seq_f, seq_b = torch.stack(hf, 1), torch.stack(hb, 1)                 # (B, N+1, H)
        # m = #{k: eps_k <= eps_hat}: forward state at eps_- is seq_f[m] (0: none -> initial
        # state); backward state at eps_+ is seq_b[m] (N: none -> initial state).
        m = (strengths.unsqueeze(1) <= target.unsqueeze(2)).sum(-1)           # (B, T)
        t = target.shape[1]
        q_in = torch.cat([torch.zeros(b, t, enc.shape[-1], dtype=enc.dtype, device=enc.device),
                          self.norm_enc(rel_t.unsqueeze(-1))], dim=-1).flatten(0, 1)
        q_f = self.cell_f(q_in, _gather_seq(seq_f, m).flatten(0, 1))
        q_b = self.cell_b(q_in, _gather_seq(seq_b, m).flatten(0, 1))
        q_state = torch.cat([q_f, q_b], dim=-1).view(b, t, -1)                # (B, T, 2H)
        keys = self.key(torch.cat([seq_f[:, 1:], seq_b[:, :-1]], dim=-1))     # (B, N, D)
        scores = torch.einsum("btd,bnd->btn", self.query(q_state), keys) / math.sqrt(self.attn_dim)
        values = _unit(u + self.value(u.flatten(0, 1)).view_as(u))            # (B, N, C, H, W)
        direction = torch.einsum("btn,bnchw->btchw", scores.softmax(-1), values)
        return self.gain(q_state), direction


class EANE(_AttentionCorrection):
    """E-ANE (and E-ANE^- with ``attention=False``): recurrent hidden states as feature maps.

    Paper: "Similar to the A-ANE, the E-ANE has a WA-ANE branch and an
    encoding branch [...] formed by a bi-directional RNN and an attention
    mechanism. However, [...] the hidden states are in the form of feature
    maps [...] the hidden cells are formed by convolutional layers. The
    query vector is encoded from the hidden states with strength
    neighbouring eps_hat [...]; the key vectors and the value feature maps
    are encoded from the hidden-state feature map sequence." E-ANE^-
    (Table 5) is "E-ANE without the attention stage, where the Query
    (feature maps) obtained from encoding the bi-directional RNN hidden
    states are used as the output" -- here through a 3x3 convolution to the
    image channels, still added to the WA-ANE branch.

    Args:
        in_channels: Image channels.
        hidden_channels: Channels of each direction's hidden maps (8).
        attn_dim: Size of queries and keys (16).
        attention: ``False`` for E-ANE^-.
        norm, weighting, rescale: See :class:`NoiseEstimator`.
    """

    variant = "e_ane"

    def __init__(self, in_channels: int, *, hidden_channels: int = 8, attn_dim: int = 16, attention: bool = True,
                 norm: str = "l2", weighting: str = "paper", rescale: bool = True) -> None:
        super().__init__(norm=norm, weighting=weighting, rescale=rescale)
        for name, value in (("in_channels", in_channels), ("hidden_channels", hidden_channels),
                            ("attn_dim", attn_dim)):
            _check_int(name, value, 1)
        if not isinstance(attention, bool):
            raise ConfigError(f"attention must be True or False, but got {attention!r}.")
        hc = hidden_channels
        self.attention = attention
        self.variant = "e_ane" if attention else "e_ane_minus"
        self.init_maps = nn.Conv2d(in_channels, 2 * hc, 3, padding=1)
        self.cell_f = nn.Conv2d(in_channels + 1 + hc, hc, 3, padding=1)
        self.cell_b = nn.Conv2d(in_channels + 1 + hc, hc, 3, padding=1)
        if attention:
            self.query = nn.Linear(2 * hc, attn_dim)
            self.key = nn.Linear(2 * hc, attn_dim)
            self.value = nn.Conv2d(2 * hc, in_channels, 3, padding=1)
        else:
            self.out = nn.Conv2d(2 * hc, in_channels, 3, padding=1)
        self.gain = nn.Linear(2 * hc, 1)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.gain.bias)
        self.attn_dim = attn_dim

    @staticmethod
    def _step(cell: nn.Conv2d, noise: torch.Tensor, rel: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        r_map = rel.reshape(-1, 1, 1, 1).expand(-1, 1, *noise.shape[-2:])
        return torch.tanh(cell(torch.cat([noise, r_map, h], dim=1)))

    def _gain_and_direction(self, x, sources, strengths, target):
        b, n, c, hgt, wid = sources.shape
        t = target.shape[1]
        u = _unit(sources)
        rel = strengths / strengths[:, -1:]
        rel_t = target / strengths[:, -1:]
        h0f, h0b = torch.tanh(self.init_maps(x)).chunk(2, dim=1)
        hf, h = [h0f], h0f
        for k in range(n):
            h = self._step(self.cell_f, u[:, k], rel[:, k], h)
            hf.append(h)
        hb, h = [h0b], h0b
        for k in reversed(range(n)):
            h = self._step(self.cell_b, u[:, k], rel[:, k], h)
            hb.insert(0, h)
        seq_f, seq_b = torch.stack(hf, 1), torch.stack(hb, 1)                 # (B, N+1, hc, H, W)
        m = (strengths.unsqueeze(1) <= target.unsqueeze(2)).sum(-1)           # (B, T)
        zero = torch.zeros(b * t, c, hgt, wid, dtype=u.dtype, device=u.device)
        q_f = self._step(self.cell_f, zero, rel_t.flatten(), _gather_seq(seq_f, m).flatten(0, 1))
        q_b = self._step(self.cell_b, zero, rel_t.flatten(), _gather_seq(seq_b, m).flatten(0, 1))
        q_maps = torch.cat([q_f, q_b], dim=1)                                 # (B*T, 2hc, H, W)
        q_vec = q_maps.mean(dim=(2, 3)).view(b, t, -1)
        if self.attention:
            pairs = torch.cat([seq_f[:, 1:], seq_b[:, :-1]], dim=2)           # (B, N, 2hc, H, W)
            keys = self.key(pairs.mean(dim=(3, 4)))
            scores = torch.einsum("btd,bnd->btn", self.query(q_vec), keys) / math.sqrt(self.attn_dim)
            values = _unit(self.value(pairs.flatten(0, 1)).view(b, n, c, hgt, wid))
            direction = torch.einsum("btn,bnchw->btchw", scores.softmax(-1), values)
        else:
            direction = _unit(self.out(q_maps).view(b, t, c, hgt, wid))
        return self.gain(q_vec), direction


def build_estimator(variant: str, *, in_channels: int, norm: str = "l2", weighting: str = "paper",
                    rescale: bool = True, **kwargs: Any) -> NoiseEstimator:
    """An AN-Estimator by name.

    Args:
        variant: ``"wa_ane"``, ``"a_ane"`` (the paper's choice), ``"e_ane"``
            or ``"e_ane_minus"``.
        in_channels: Image channels.
        norm, weighting, rescale: See :class:`NoiseEstimator`.
        **kwargs: Size settings of :class:`AANE` / :class:`EANE`.

    Raises:
        ConfigError: unknown variant or setting.
    """
    check_choice("estimator", variant, VARIANTS)
    common = {"norm": norm, "weighting": weighting, "rescale": rescale}
    try:
        if variant == "wa_ane":
            if kwargs:
                raise ConfigError(f"wa_ane has no settings besides norm, weighting, rescale; got {sorted(kwargs)}.")
            return WAANE(**common)
        if variant == "a_ane":
            return AANE(in_channels, **common, **kwargs)
        return EANE(in_channels, attention=variant == "e_ane", **common, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"Invalid settings for estimator {variant!r}: {exc}") from exc


# --------------------------------------------------------------------------- memory (eq. 4)

class ReplayMemory:
    """A FIFO queue of at most ``capacity`` entries of named tensors (the paper's ``Ma``, ``Mv``).

    Paper (eq. 4): "the memory is a queue with a limited length [...] the
    latest [...] adversarial noises [...] can be stored in the memory [...]
    while the older, less effective ones will be discarded": adding to a
    full memory drops the oldest entries (first in, first out; the authors'
    ``deque(maxlen=...)``). Entries are stored in preallocated ring buffers
    (allocated at the first :meth:`add`, on ``device``), so adding a batch
    never loops over its entries.

    Args:
        capacity: Maximum number of entries (``Ma``: 600; ``Mv``: 100).
        device: Where the entries are kept.
    """

    def __init__(self, capacity: int, *, device: str | torch.device = "cpu") -> None:
        self.capacity = _check_int("capacity", capacity, 1)
        self.device = torch.device(device)
        self._data: dict[str, torch.Tensor] = {}
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def keys(self) -> tuple[str, ...]:
        """Names of the stored tensors (empty before the first :meth:`add`)."""
        return tuple(self._data)

    def add(self, **tensors: torch.Tensor) -> None:
        """Append a batch of entries: every tensor has the batch as its first dimension.

        Raises:
            ConfigError: different batch sizes, or keys / entry shapes that
                differ from the first batch's.
        """
        if not tensors:
            raise ConfigError("ReplayMemory.add needs at least one named tensor.")
        sizes = {k: int(v.shape[0]) if torch.is_tensor(v) and v.dim() > 0 else None for k, v in tensors.items()}
        if None in sizes.values() or len(set(sizes.values())) != 1:
            raise ConfigError(f"ReplayMemory.add: every value must be a tensor whose first dimension is the "
                              f"batch, all of one size, but got sizes {sizes}.")
        n = next(iter(sizes.values()))
        if not self._data:
            self._data = {k: torch.empty((self.capacity, *v.shape[1:]), dtype=v.dtype, device=self.device)
                          for k, v in tensors.items()}
        elif set(tensors) != set(self._data) or any(tuple(v.shape[1:]) != tuple(self._data[k].shape[1:])
                                                    for k, v in tensors.items()):
            raise ConfigError(f"ReplayMemory.add: entries must keep the keys and shapes "
                              f"{({k: tuple(v.shape[1:]) for k, v in self._data.items()})}, but got "
                              f"{({k: tuple(v.shape[1:]) for k, v in tensors.items()})}.")
        if n == 0:
            return
        if n >= self.capacity:  # only the newest `capacity` survive
            for k, v in tensors.items():
                self._data[k].copy_(v[n - self.capacity:].detach())
            self._next, self._size = 0, self.capacity
            return
        idx = (self._next + torch.arange(n)) % self.capacity
        idx = idx.to(self.device)
        for k, v in tensors.items():
            self._data[k][idx] = v.detach().to(self.device, self._data[k].dtype)
        self._next = (self._next + n) % self.capacity
        self._size = min(self._size + n, self.capacity)

    def _order(self) -> torch.Tensor:
        return ((self._next - self._size + torch.arange(self._size)) % self.capacity).to(self.device)

    def get(self) -> dict[str, torch.Tensor]:
        """All entries, oldest first."""
        order = self._order()
        return {k: v[order] for k, v in self._data.items()}

    def sample(self, batch_size: int, *, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``min(batch_size, len)`` distinct entries drawn uniformly."""
        _check_int("batch_size", batch_size, 1)
        if self._size == 0:
            raise ConfigError("ReplayMemory.sample: the memory is empty.")
        pick = torch.randperm(self._size, generator=generator)[:batch_size]
        idx = self._order()[pick.to(self.device)]
        return {k: v[idx] for k, v in self._data.items()}

    def batches(self, batch_size: int, *, generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterator[dict[str, torch.Tensor]]:
        """One pass over the entries in a random order, ``batch_size`` at a time.

        ``drop_last=True`` leaves out the last incomplete batch (the authors'
        ``AE_Memory.get_batch``) unless it is the only one.
        """
        _check_int("batch_size", batch_size, 1)
        if self._size == 0:
            return
        perm = self._order()[torch.randperm(self._size, generator=generator).to(self.device)]
        stop = self._size
        if drop_last and self._size > batch_size:
            stop = self._size - self._size % batch_size
        for start in range(0, stop, batch_size):
            idx = perm[start:start + batch_size]
            yield {k: v[idx] for k, v in self._data.items()}

    def state_dict(self) -> dict[str, Any]:
        """Capacity and entries (oldest first), for checkpoints."""
        return {"capacity": self.capacity, "entries": self.get() if self._data else {}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` (the capacity must match)."""
        if state.get("capacity") != self.capacity:
            raise ConfigError(f"ReplayMemory.load_state_dict: capacity {state.get('capacity')!r} does not match "
                              f"this memory's {self.capacity}.")
        self._data, self._next, self._size = {}, 0, 0
        entries = state.get("entries") or {}
        if entries:
            self.add(**entries)


# --------------------------------------------------------------------------- training data

@dataclasses.dataclass
class NoiseBatch:
    """Training entries of the AN-Estimator (eq. 4): inputs and the label noise.

    Attributes:
        x: ``(B, C, H, W)`` clean images.
        sources: ``(B, N1, C, H, W)`` source noises.
        source_strengths: ``(B, N1)`` their strengths.
        target: ``(B,)`` target strengths ``eps_hat``.
        target_noise: ``(B, C, H, W)`` the real PGD noise at ``eps_hat`` (label).
    """

    x: torch.Tensor
    sources: torch.Tensor
    source_strengths: torch.Tensor
    target: torch.Tensor
    target_noise: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The fields as a dict (for :meth:`ReplayMemory.add`)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, torch.Tensor]) -> "NoiseBatch":
        """Inverse of :meth:`as_dict` (e.g. a batch of :meth:`ReplayMemory.batches`)."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def pgd_noises(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Sequence[float], *, steps: int = 7,
               step_factor: float = 2.5, random_start: bool = True) -> torch.Tensor:
    """PGD noises ``x_adv - x`` of ``x`` at each radius of ``eps`` (l-inf, core :class:`~nni_robust.attacks.PGD`).

    Step size ``eps * step_factor / steps`` (paper: eps_i * 2.5 / 20 for
    evaluation; the authors' search uses PGD-7 with eps * 2.5 / 7). The model
    runs in the mode it is in.

    Returns:
        ``(B, len(eps), C, H, W)``.
    """
    if len(eps) == 0:
        raise ConfigError("pgd_noises needs at least one radius in eps.")
    out = []
    for e in eps:
        e = _check_real("eps", e, 0.0, low_open=False)
        if e == 0.0:
            out.append(torch.zeros_like(x))
            continue
        attack = PGD(e, step=e * step_factor / steps, steps=steps, random_start=random_start)
        out.append(attack(model, x, y) - x)
    return torch.stack(out, dim=1)


def leave_one_out(x: torch.Tensor, noises: torch.Tensor, *, norm: str = "l2") -> NoiseBatch:
    """AN-Estimator training entries from ``K`` noises per image (authors' ``form_data``).

    Each of the ``K`` noises in turn is the label; the other ``K - 1`` are the
    sources; strengths and target are the measured norms (``norm``). The
    authors use K = 4: PGD at 0.03, 0.06, 0.09 and at a radius drawn
    uniformly from [0, 0.15] per batch, so the estimator learns to map the
    three search strengths to unseen ones.

    Args:
        x: ``(B, C, H, W)`` clean images.
        noises: ``(B, K, C, H, W)`` noises of ``x``, K >= 2.
        norm: ``"l2"`` or ``"linf"``.

    Returns:
        A :class:`NoiseBatch` of ``K * B`` entries (label ``k`` major).
    """
    if noises.dim() != 5 or noises.shape[0] != x.shape[0] or noises.shape[1] < 2:
        raise ConfigError(f"noises must be (B, K >= 2, C, H, W) for x of shape {tuple(x.shape)}, "
                          f"but got {tuple(noises.shape)}.")
    k = noises.shape[1]
    strengths = noise_norm(noises, norm)                                     # (B, K)
    keep = torch.tensor([[j for j in range(k) if j != i] for i in range(k)], device=noises.device)  # (K, K-1)
    sources = noises[:, keep].transpose(0, 1).flatten(0, 1)                  # (K*B, K-1, C, H, W)
    src_s = strengths[:, keep].transpose(0, 1).flatten(0, 1)                 # (K*B, K-1)
    return NoiseBatch(x=x.repeat(k, 1, 1, 1), sources=sources, source_strengths=src_s,
                      target=strengths.t().flatten(), target_noise=noises.transpose(0, 1).flatten(0, 1))


# --------------------------------------------------------------------------- training (eq. 5)

def estimator_loss(estimator: NoiseEstimator, batch: NoiseBatch) -> torch.Tensor:
    """Eq. 5: ``L_a = 1/T_a sum_t ||phi(x_t, delta_t,1..N1, eps_hat_t) - delta_eps_hat_t||_2^2``."""
    pred = estimator(batch.x, batch.sources, batch.target.unsqueeze(1), batch.source_strengths)[:, 0]
    return (pred - batch.target_noise).pow(2).flatten(1).sum(1).mean()


def make_optimizer(estimator: nn.Module, *, lr: float = 5e-4, weight_decay: float = 1e-4) -> torch.optim.Optimizer:
    """AdamW(lr 5e-4, weight decay 1e-4), the authors' AN-Estimator optimizer (``methods.md``)."""
    _check_real("lr", lr)
    _check_real("weight_decay", weight_decay, 0.0, low_open=False)
    params = list(estimator.parameters())
    if not params:
        raise ConfigError(f"{type(estimator).__name__} has no trainable weights (WA-ANE needs no optimizer).")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def warmup_cosine(optimizer: torch.optim.Optimizer, *, warmup_steps: int = 4000,
                  total_steps: int = 100_000) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up for ``warmup_steps`` optimizer steps, then cosine to 0 at ``total_steps`` (authors' code).

    Factor ``s / warmup_steps`` for ``s < warmup_steps``, then
    ``0.5 (1 + cos(pi (s - w) / (T - w)))``, 0 from ``total_steps`` on.
    """
    _check_int("warmup_steps", warmup_steps, 0)
    _check_int("total_steps", total_steps, warmup_steps + 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        s = min(step, total_steps)
        return 0.5 * (1.0 + math.cos(math.pi * (s - warmup_steps) / (total_steps - warmup_steps)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_estimator(estimator: NoiseEstimator, memory: ReplayMemory, optimizer: torch.optim.Optimizer | None, *,
                    passes: int = 1, batch_size: int = 64, scheduler: Any = None,
                    generator: torch.Generator | None = None) -> list[float]:
    """Train an AN-Estimator over the memory ``Ma`` (Alg. 1 line 10: ``K_a`` iterations).

    One pass visits every entry once in a random order, in batches of
    ``batch_size`` (the last incomplete one dropped, as the authors'
    ``AE_Memory.get_batch``); each batch is one optimizer (and scheduler)
    step on eq. 5. Paper: ``K_a = 1``.

    Args:
        estimator: The estimator (put in train mode; its mode is restored).
        memory: A :class:`ReplayMemory` of :class:`NoiseBatch` entries.
        optimizer: E.g. :func:`make_optimizer`; ``None`` only for WA-ANE.
        passes: ``K_a``.
        batch_size: Entries per step (authors: 64).
        scheduler: Stepped after every optimizer step (e.g. :func:`warmup_cosine`).
        generator: Seeds the order of the entries.

    Returns:
        The loss of every step (empty for an estimator without weights).
    """
    _check_int("passes", passes, 1)
    if not any(p.requires_grad for p in estimator.parameters()):
        logger.debug("train_estimator: %s has no trainable weights; nothing to do.", type(estimator).__name__)
        return []
    if optimizer is None:
        raise ConfigError("train_estimator needs an optimizer for an estimator with trainable weights.")
    losses: list[torch.Tensor] = []
    mode = estimator.training
    try:
        estimator.train()
        for _ in range(passes):
            for data in memory.batches(batch_size, generator=generator, drop_last=True):
                optimizer.zero_grad(set_to_none=True)
                loss = estimator_loss(estimator, NoiseBatch.from_dict(data))
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                losses.append(loss.detach())
    finally:
        estimator.train(mode)
    return torch.stack(losses).tolist() if losses else []


# --------------------------------------------------------------------------- Table 5 report

@dataclasses.dataclass(frozen=True)
class AneReport:
    """Attack strength of AN-Estimators, the form of the paper's Table 5.

    Accuracies are fractions in [0, 1], averaged over the models (each model
    on the same images); lower accuracy under an estimator's noise means a
    stronger attack, the ideal being the accuracy under real PGD.

    Attributes:
        eps: The target radii (l-inf).
        clean: Mean clean accuracy ("Avg. Nat. Acc.").
        pgd: ``{eps: mean accuracy under real PGD}`` ("Avg. Rob. Acc.").
        estimated: ``{variant: {eps: mean accuracy under its estimated noise}}``.
        mse: ``{variant: {eps: mean ||estimate - PGD noise||_2^2}}``.
        rows: Per model, attack and radius: ``{"model", "attack", "eps",
            "accuracy", "mse"}`` (``mse`` NaN for clean and PGD rows).
        images: Images evaluated per model.
    """

    eps: tuple[float, ...]
    clean: float
    pgd: dict[float, float]
    estimated: dict[str, dict[float, float]]
    mse: dict[str, dict[float, float]]
    rows: list[dict[str, Any]]
    images: int

    def mean(self, attack: str) -> float:
        """Mean accuracy over the radii for ``"pgd"`` or an estimator's name."""
        accs = self.pgd if attack == "pgd" else self.estimated[attack]
        return sum(accs.values()) / len(accs)

    def to_markdown(self) -> str:
        """The summary table: one row per attack, one column per radius, the mean and the gap to PGD."""
        head = "| attack | " + " | ".join(f"eps={e:g}" for e in self.eps) + " | mean | mean - PGD | MSE |"
        sep = "|" + "---|" * (len(self.eps) + 4)
        pgd_mean = self.mean("pgd")
        lines = [head, sep,
                 "| clean | " + " | ".join(f"{100 * self.clean:.1f}" for _ in self.eps)
                 + f" | {100 * self.clean:.1f} | | |",
                 "| PGD | " + " | ".join(f"{100 * self.pgd[e]:.1f}" for e in self.eps)
                 + f" | {100 * pgd_mean:.1f} | 0.0 | 0 |"]
        for name, accs in self.estimated.items():
            mean = self.mean(name)
            mse = sum(self.mse[name].values()) / len(self.eps)
            lines.append(f"| {name} | " + " | ".join(f"{100 * accs[e]:.1f}" for e in self.eps)
                         + f" | {100 * mean:.1f} | {100 * (mean - pgd_mean):+.1f} | {mse:.4g} |")
        return "\n".join(lines) + f"\n\nAccuracy (%) of {len({r['model'] for r in self.rows})} model(s) on " \
                                  f"{self.images} images; lower = stronger attack.\n"

    def to_csv(self) -> str:
        """The per-model rows as CSV (``model,attack,eps,accuracy,mse``)."""
        lines = ["model,attack,eps,accuracy,mse"]
        lines += [f"{r['model']},{r['attack']},{r['eps']:g},{r['accuracy']:.6f},{r['mse']:.6g}" for r in self.rows]
        return "\n".join(lines) + "\n"

    def write(self, folder: str | Path, stem: str = "ane_report") -> tuple[Path, Path]:
        """Write ``<stem>.md`` and ``<stem>.csv`` into ``folder``; returns both paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        md, csv = folder / f"{stem}.md", folder / f"{stem}.csv"
        md.write_text(self.to_markdown())
        csv.write_text(self.to_csv())
        return md, csv


def attack_strength_report(estimators: Mapping[str, NoiseEstimator],
                           models: Sequence[nn.Module] | Mapping[str, nn.Module], loader: Iterable, *,
                           source_eps: Sequence[float] = (0.03, 0.06, 0.09),
                           target_eps: Sequence[float] = (0.045, 0.075, 0.105), steps: int = 7,
                           step_factor: float = 2.5, max_batches: int | None = None,
                           device: str | torch.device | None = None) -> AneReport:
    """Table 5: accuracy of (held-out) models under each estimator's noise vs under real PGD.

    For every model and batch: PGD noises at ``source_eps`` (the N1 search
    strengths) are the estimators' inputs; PGD noises at ``target_eps`` give
    the real-PGD accuracy and the label of the MSE. Each estimator's target
    strength for an image is the norm (in the estimator's own norm) of that
    image's real PGD noise at the target radius (as the label of eq. 5 in
    the authors' code); its images are ``clip(x + estimate, 0, 1)``. Models
    run in eval mode (restored afterwards); counts stay on the device until
    the end.

    Paper (Table 5): 7 pre-trained networks, targets 0.03, 0.06, 0.09; this
    function's defaults are the search setting instead (sources 0.03, 0.06,
    0.09, targets 0.045, 0.075, 0.105).

    Args:
        estimators: ``{name: estimator}``, e.g. ``{"wa_ane": ..., "a_ane": ...}``.
        models: The classifiers (inputs in [0, 1]); a mapping names them.
        loader: Iterable of ``(x, y)`` batches.
        source_eps, target_eps: l-inf radii.
        steps, step_factor: PGD settings (step ``eps * step_factor / steps``).
        max_batches: Evaluate at most this many batches per model.
        device: Where to run; default: the first model's parameters' device.

    Returns:
        An :class:`AneReport`.
    """
    if not estimators:
        raise ConfigError("attack_strength_report needs at least one estimator.")
    named = dict(models) if isinstance(models, Mapping) else {f"model{i}": m for i, m in enumerate(models)}
    if not named:
        raise ConfigError("attack_strength_report needs at least one model.")
    if max_batches is not None:
        _check_int("max_batches", max_batches, 1)
    target_eps = tuple(float(e) for e in target_eps)
    n_t = len(target_eps)
    names = list(estimators)
    rows: list[dict[str, Any]] = []
    clean_sum, pgd_sum = 0.0, torch.zeros(n_t)
    est_sum = {k: torch.zeros(n_t) for k in names}
    mse_sum = {k: torch.zeros(n_t) for k in names}
    images = 0
    for model_name, model in named.items():
        dev = torch.device(device) if device is not None else next(model.parameters()).device
        modes = {m: m.training for m in list(model.modules()) + [m for e in estimators.values() for m in e.modules()]}
        clean_hits = torch.zeros((), device=dev)
        pgd_hits = torch.zeros(n_t, device=dev)
        est_hits = {k: torch.zeros(n_t, device=dev) for k in names}
        sq_err = {k: torch.zeros(n_t, device=dev) for k in names}
        seen = 0
        try:
            model.eval()
            for est in estimators.values():
                est.eval()
            for b, (x, y) in enumerate(loader):
                if max_batches is not None and b >= max_batches:
                    break
                x, y = x.to(dev), y.to(dev)
                if not x.is_floating_point():
                    x = x.float().div_(255.0)
                seen += x.shape[0]
                sources = pgd_noises(model, x, y, source_eps, steps=steps, step_factor=step_factor)
                real = pgd_noises(model, x, y, target_eps, steps=steps, step_factor=step_factor)
                with torch.no_grad():
                    clean_hits += (model(x).argmax(1) == y).sum()
                    pgd_hits += _hits(model, (x.unsqueeze(1) + real).clamp(0, 1), y)
                    for name in names:
                        est = estimators[name]
                        delta = est(x, sources, noise_norm(real, est.norm))
                        est_hits[name] += _hits(model, (x.unsqueeze(1) + delta).clamp(0, 1), y)
                        sq_err[name] += (delta - real).pow(2).flatten(2).sum(2).sum(0)
        finally:
            for m, mode in modes.items():
                m.training = mode
        if seen == 0:
            raise ConfigError("attack_strength_report: the loader yielded no images.")
        images = seen
        clean = float(clean_hits) / seen
        pgd = pgd_hits.cpu() / seen
        clean_sum += clean
        pgd_sum += pgd
        rows.append({"model": model_name, "attack": "clean", "eps": 0.0, "accuracy": clean, "mse": float("nan")})
        rows += [{"model": model_name, "attack": "pgd", "eps": e, "accuracy": float(pgd[i]), "mse": 0.0}
                 for i, e in enumerate(target_eps)]
        for name in names:
            acc, mse = est_hits[name].cpu() / seen, sq_err[name].cpu() / seen
            est_sum[name] += acc
            mse_sum[name] += mse
            rows += [{"model": model_name, "attack": name, "eps": e, "accuracy": float(acc[i]),
                      "mse": float(mse[i])} for i, e in enumerate(target_eps)]
    n_m = len(named)
    return AneReport(eps=target_eps, clean=clean_sum / n_m,
                     pgd={e: float(pgd_sum[i]) / n_m for i, e in enumerate(target_eps)},
                     estimated={k: {e: float(est_sum[k][i]) / n_m for i, e in enumerate(target_eps)} for k in names},
                     mse={k: {e: float(mse_sum[k][i]) / n_m for i, e in enumerate(target_eps)} for k in names},
                     rows=rows, images=images)


def _hits(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Correct predictions per target: ``x_adv`` (B, T, C, H, W) -> (T,)."""
    b, t = x_adv.shape[:2]
    pred = model(x_adv.flatten(0, 1)).argmax(1).view(b, t)
    return (pred == y.unsqueeze(1)).sum(0).float()
