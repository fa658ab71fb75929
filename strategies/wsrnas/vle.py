"""Wsr-NAS's Efficient Wide Spectrum Searcher (``wsr-nas.txt``, Sec. "Efficient Wide Spectrum Searcher").

EWSS replaces the gradient of the (clean and N1 + N2 adversarial) validation
losses w.r.t. the architecture, which would need the supernet on every
adversarial validation set, by a backward pass through a small learned
model of those losses:

* the Validation Loss Estimator (VLE, eq. 8) ``L_hat = psi(H)``: an LSTM
  over the Gumbel-softmax architecture weights ``H`` (one step per edge, the
  step's input the edge's vector of op weights; the cell types' edges one
  after the other, as the authors' ``torch.cat(weights)``) followed by "a
  dense layer with n + 1 outputs", one per loss: natural, then each search
  strength in increasing order (:class:`ValidationLossEstimator`; LSTM
  hidden size 16, ``methods.md``);
* its memory ``Mv`` of ``(H_t, L_t)`` pairs (:class:`LossMemory`, FIFO,
  capacity 100, ``methods.md``) and the MSE of eq. 9 (:func:`vle_loss`,
  :func:`train_vle`; Adam lr 1e-3);
* the Robust Search Objective of eq. 10 (:class:`RobustObjective`)
  ``alpha L_nat + beta sum_i beta_i L_eps_i`` with ``sum_i beta_i = 1``,
  ``alpha + beta = 1``, all weights > 0;
* the architecture update (Alg. 1 line 24) by a backward pass through the
  VLE only (:func:`arch_gradient`, :func:`arch_step`): ``H =
  GumbelSoftmax(A, xi, tau)`` with ``tau = 0.1``, the estimated objective
  and its gradient w.r.t. the logits ``A``; the supernet is not involved.

:class:`WsrConfig` holds every setting of the method with the paper's and
the authors' defaults.

Choices where the paper is silent:

* ``beta_i`` are given as relative weights and normalised to sum to 1 (eq.
  10: "with different beta_i being summed up to 1"); the authors'
  ``renormalize_search_objective`` does the same and then folds ``beta``
  in (``beta * beta_i``), which is the same objective.
* The heads are linear; the losses are standardised (mean and standard
  deviation of the memory at the first training call, kept afterwards so
  that the estimator's output scale never jumps). The authors bound each
  head by ``2 * sigmoid``, which caps the estimate of a cross-entropy at 2;
  adversarial losses at eps 0.1-0.25 exceed that.
* The authors' architecture step minimises the squared estimates
  (``mse_loss(estimate, 0)`` per head); this module minimises eq. 10 as
  printed (linear in the estimates). Their VLE training adds Gaussian noise
  (std 0.01) to ``H``; so does :func:`train_vle` (``input_noise``).
* In the authors' code the weight decay named ``arch_weight_decay`` (1e-3)
  is given to the VLE's Adam; the architecture's Adam (lr 3e-5, betas 0.5,
  0.999) has none. :class:`WsrConfig` follows the code:
  ``vle_weight_decay=1e-3``, ``arch_weight_decay=0``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nni_robust.config import check_choice, from_dict
from nni_robust.errors import ConfigError

from .estimator import NORMS, VARIANTS, WEIGHTINGS, ReplayMemory

__all__ = [
    "ValidationLossEstimator", "stack_arch", "LossMemory", "vle_loss", "train_vle", "make_vle_optimizer",
    "RobustObjective", "check_objective_weights", "sample_gumbel", "gumbel_softmax", "ArchGradient",
    "arch_gradient", "arch_step", "WsrConfig", "AUTHORS_BETA_I",
]

logger = logging.getLogger(__name__)

AUTHORS_BETA_I = (1.0, 2.0, 3.0, 5.0, 7.0, 10.0)
"""The authors' per-strength weights for 0.03, 0.045, 0.06, 0.075, 0.09, 0.105 (before normalising)."""

_ArchLike = torch.Tensor | Sequence[torch.Tensor] | Mapping[str, torch.Tensor]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------- the VLE (eq. 8)

def stack_arch(weights: _ArchLike) -> torch.Tensor:
    """Architecture weights as one ``(E, K)`` (or ``(B, E, K)``) tensor, edges of all cell types in a row.

    Args:
        weights: A tensor ``(E, K)`` / ``(B, E, K)``, a sequence of per-cell-type
            tensors ``(E_c, K)`` (or ``(B, E_c, K)``), or a mapping cell type ->
            tensor (e.g. ``DartsSupernet.arch_weights()``; the mapping's order
            is the order of the edges).
    """
    if torch.is_tensor(weights):
        parts = [weights]
    elif isinstance(weights, Mapping):
        parts = list(weights.values())
    else:
        parts = list(weights)
    if not parts or any(not torch.is_tensor(p) or p.dim() not in (2, 3) for p in parts):
        raise ConfigError("architecture weights must be a (E, K) or (B, E, K) tensor, or a list / dict of them, "
                          f"but got {type(weights).__name__}.")
    return torch.cat(parts, dim=-2) if len(parts) > 1 else parts[0]


class ValidationLossEstimator(nn.Module):
    """VLE ``psi``, eq. 8: LSTM over the edges' op-weight vectors + a dense layer with ``n + 1`` outputs.

    Args:
        num_ops: Ops per edge ``K`` (the LSTM's input size; DARTS: 8).
        num_losses: ``1 + N1 + N2`` (natural loss + one per search strength).
        hidden: LSTM hidden size (authors: 16).
        num_layers: LSTM layers (authors: 1).

    Forward: ``(E, K) -> (num_losses,)`` or ``(B, E, K) -> (B, num_losses)``;
    the output order is natural loss first, then the strengths increasing.
    """

    def __init__(self, num_ops: int, num_losses: int, *, hidden: int = 16, num_layers: int = 1) -> None:
        super().__init__()
        for name, value in (("num_ops", num_ops), ("num_losses", num_losses), ("hidden", hidden),
                            ("num_layers", num_layers)):
            if not _is_int(value) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, but got {value!r}.")
        self.num_ops, self.num_losses = num_ops, num_losses
        self.lstm = nn.LSTM(num_ops, hidden, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden, num_losses)
        self.register_buffer("loss_mean", torch.zeros(num_losses))
        self.register_buffer("loss_std", torch.ones(num_losses))
        self.register_buffer("scaled", torch.tensor(False))

    def forward(self, weights: _ArchLike) -> torch.Tensor:
        h = stack_arch(weights)
        single = h.dim() == 2
        if single:
            h = h.unsqueeze(0)
        if h.shape[-1] != self.num_ops:
            raise ConfigError(f"architecture weights must have {self.num_ops} ops per edge, but got {h.shape[-1]}.")
        _, (hidden, _) = self.lstm(h.to(self.head.weight.dtype))
        out = self.head(hidden[-1]) * self.loss_std + self.loss_mean
        return out[0] if single else out

    def fit_scale(self, losses: torch.Tensor) -> None:
        """Standardise the outputs by the mean and std of ``losses`` ``(T, num_losses)`` (std >= 1e-3)."""
        losses = losses.detach().to(self.loss_mean)
        self.loss_mean.copy_(losses.mean(0))
        self.loss_std.copy_(losses.std(0, unbiased=False).clamp_min(1e-3) if losses.shape[0] > 1
                            else torch.ones_like(self.loss_std))
        self.scaled.fill_(True)


class LossMemory(ReplayMemory):
    """``Mv = {(H_t, L_t)}``: a FIFO memory of architecture weights and measured losses (capacity 100).

    Entries are stored under the keys ``"weights"`` ``(E, K)`` and ``"losses"``
    ``(num_losses,)``.
    """

    def __init__(self, capacity: int = 100, *, device: str | torch.device = "cpu") -> None:
        super().__init__(capacity, device=device)

    def add_arch(self, weights: _ArchLike, losses: torch.Tensor | Sequence[float]) -> None:
        """Add one architecture (or a batch): weights ``(E, K)`` / ``(B, E, K)``, losses ``(L,)`` / ``(B, L)``."""
        h = stack_arch(weights).detach()
        loss = torch.as_tensor(losses, dtype=torch.float32).detach()
        if h.dim() == 2:
            h, loss = h.unsqueeze(0), loss.reshape(1, -1)
        self.add(weights=h.float(), losses=loss.float())


def vle_loss(vle: ValidationLossEstimator, weights: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """Eq. 9: ``L_v = 1/T sum_t ||psi(H_t) - L_t||_2^2`` over a batch ``(T, E, K)``, ``(T, L)``."""
    return (vle(weights) - losses.to(vle.head.weight)).pow(2).sum(-1).mean()


def make_vle_optimizer(vle: nn.Module, *, lr: float = 1e-3, betas: tuple[float, float] = (0.5, 0.999),
                       weight_decay: float = 1e-3) -> torch.optim.Optimizer:
    """Adam(lr 1e-3, betas (0.5, 0.999), weight decay 1e-3): the authors' VLE optimizer."""
    return torch.optim.Adam(vle.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)


def train_vle(vle: ValidationLossEstimator, memory: LossMemory, optimizer: torch.optim.Optimizer, *,
              epochs: int = 1, batch_size: int = 64, input_noise: float = 0.01,
              generator: torch.Generator | None = None) -> list[float]:
    """Train the VLE over ``Mv`` (Alg. 1 lines 18 and 23) on eq. 9.

    Each epoch is one pass over the memory in a random order, in batches of
    ``batch_size`` (authors: ``Memory.get_batch`` + one step per batch); the
    architecture weights get Gaussian noise of std ``input_noise`` (authors:
    0.01). At the first call the outputs are standardised by the memory's
    losses (:meth:`ValidationLossEstimator.fit_scale`). Warm-up: ``K_v`` =
    500 epochs (``methods.md``); during the search: one per iteration.

    Returns:
        The loss of every step.
    """
    if not _is_int(epochs) or epochs < 1:
        raise ConfigError(f"epochs must be an integer >= 1, but got {epochs!r}.")
    if not _is_real(input_noise) or input_noise < 0:
        raise ConfigError(f"input_noise must be a number >= 0, but got {input_noise!r}.")
    if len(memory) == 0:
        raise ConfigError("train_vle: the memory Mv is empty.")
    if not bool(vle.scaled):
        vle.fit_scale(memory.get()["losses"])
    out: list[torch.Tensor] = []
    mode = vle.training
    try:
        vle.train()
        for _ in range(epochs):
            for batch in memory.batches(batch_size, generator=generator):
                h = batch["weights"]
                if input_noise > 0:
                    h = h + input_noise * torch.randn(h.shape, generator=generator).to(h)
                optimizer.zero_grad(set_to_none=True)
                loss = vle_loss(vle, h, batch["losses"])
                loss.backward()
                optimizer.step()
                out.append(loss.detach())
    finally:
        vle.train(mode)
    logger.debug("train_vle: %d steps over %d entries, last loss %.4g", len(out), len(memory), float(out[-1]))
    return torch.stack(out).tolist()


# --------------------------------------------------------------------------- eq. 10

def check_objective_weights(alpha: Any, beta: Any, beta_i: Any, *, num_strengths: int | None = None,
                            where: str = "method_args", tol: float = 1e-6) -> tuple[float, float, tuple[float, ...]]:
    """Validate the weights of eq. 10 and normalise ``beta_i`` to sum to 1.

    Eq. 10 requires ``alpha > 0``, ``beta > 0``, ``alpha + beta = 1`` and
    ``beta_i > 0`` with ``sum_i beta_i = 1``; ``beta_i`` may be given as
    relative weights (e.g. the authors' 1, 2, 3, 5, 7, 10) and is normalised.

    Args:
        alpha, beta: The weights of the natural and the adversarial terms.
        beta_i: One positive weight per search strength (increasing strengths).
        num_strengths: Required length of ``beta_i`` (``N1 + N2``), if known.
        where: Prefix of the keys in error messages (``method_args.alpha``).
        tol: Tolerance of ``alpha + beta = 1``.

    Returns:
        ``(alpha, beta, normalised beta_i)``.

    Raises:
        ConfigError: naming the key (e.g. ``method_args.alpha``) and the value.
    """
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not _is_real(value) or value <= 0:
            raise ConfigError(f"{where}.{name} must be a number > 0 (eq. 10), but got {value!r}.")
    if abs(alpha + beta - 1.0) > tol:
        raise ConfigError(f"{where}.alpha + {where}.beta must equal 1 (eq. 10), but got alpha={alpha!r} + "
                          f"beta={beta!r} = {alpha + beta!r}.")
    if isinstance(beta_i, (str, bytes)) or not isinstance(beta_i, Sequence) or len(beta_i) == 0:
        raise ConfigError(f"{where}.beta_i must be a non-empty list of positive weights, one per search strength, "
                          f"but got {beta_i!r}.")
    for i, value in enumerate(beta_i):
        if not _is_real(value) or value <= 0:
            raise ConfigError(f"{where}.beta_i[{i}] must be a number > 0 (eq. 10), but got {value!r} in "
                              f"{list(beta_i)!r}.")
    if num_strengths is not None and len(beta_i) != num_strengths:
        raise ConfigError(f"{where}.beta_i must have one weight per search strength ({num_strengths}), but got "
                          f"{len(beta_i)}: {list(beta_i)!r}.")
    total = float(sum(beta_i))
    return float(alpha), float(beta), tuple(float(v) / total for v in beta_i)


class RobustObjective:
    """The Robust Search Objective of eq. 10: ``alpha L_nat + beta sum_i beta_i L_eps_i``.

    Args:
        alpha: Weight of the natural loss (0.8).
        beta: Weight of the adversarial losses (0.2); ``alpha + beta = 1``.
        beta_i: Relative per-strength weights, increasing strengths
            (authors: 1, 2, 3, 5, 7, 10), normalised to sum to 1.
        where: Key prefix of the error messages.

    Attributes:
        weights: ``(1 + n,)`` tensor ``[alpha, beta * beta_1, ..., beta * beta_n]``.
    """

    def __init__(self, alpha: float = 0.8, beta: float = 0.2, beta_i: Sequence[float] = AUTHORS_BETA_I, *,
                 where: str = "method_args") -> None:
        self.alpha, self.beta, self.beta_i = check_objective_weights(alpha, beta, beta_i, where=where)
        self.weights = torch.tensor([self.alpha, *(self.beta * b for b in self.beta_i)])

    @property
    def num_losses(self) -> int:
        return len(self.weights)

    def __call__(self, losses: torch.Tensor) -> torch.Tensor:
        """``losses`` ``(..., 1 + n)`` (natural first) -> the objective ``(...)``."""
        if losses.shape[-1] != self.num_losses:
            raise ConfigError(f"the objective weighs {self.num_losses} losses (natural + {self.num_losses - 1} "
                              f"strengths), but got {losses.shape[-1]}.")
        return losses @ self.weights.to(losses)

    def __repr__(self) -> str:
        return f"RobustObjective(alpha={self.alpha}, beta={self.beta}, beta_i={self.beta_i})"


# --------------------------------------------------------------------------- the architecture update

def sample_gumbel(like: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """i.i.d. Gumbel(0, 1) samples shaped like ``like``: ``-log(-log U)``, ``U ~ U(0, 1)``."""
    u = torch.rand(like.shape, generator=generator, dtype=torch.float64).clamp_(1e-20, 1.0 - 1e-12)
    return (-(-u.log()).log()).to(like)


def gumbel_softmax(logits: torch.Tensor, tau: float = 0.1, *, gumbel: torch.Tensor | None = None) -> torch.Tensor:
    """``H = softmax((A + xi) / tau)`` over the last dimension (eq. 2, 10); ``xi = 0`` when ``gumbel`` is None."""
    if not _is_real(tau) or tau <= 0:
        raise ConfigError(f"tau must be a number > 0, but got {tau!r}.")
    return F.softmax((logits if gumbel is None else logits + gumbel) / tau, dim=-1)


def _leaves(logits: _ArchLike) -> tuple[list[torch.Tensor], Any]:
    if torch.is_tensor(logits):
        return [logits], None
    if isinstance(logits, Mapping):
        return list(logits.values()), list(logits.keys())
    return list(logits), len(logits)


def _rebuild(values: list[torch.Tensor], structure: Any) -> Any:
    if structure is None:
        return values[0]
    if isinstance(structure, list):
        return dict(zip(structure, values))
    return list(values)


@dataclasses.dataclass
class ArchGradient:
    """Result of :func:`arch_gradient`.

    Attributes:
        objective: The estimated objective of eq. 10 (detached scalar).
        losses: The VLE's estimates ``(1 + n,)``, natural first (detached).
        grads: d objective / d logits, in the structure of the logits.
        weights: The Gumbel-softmax weights ``H`` used (detached, same structure).
        gumbel: The Gumbel noise used (same structure).
    """

    objective: torch.Tensor
    losses: torch.Tensor
    grads: Any
    weights: Any
    gumbel: Any


def arch_gradient(vle: ValidationLossEstimator, logits: _ArchLike, objective: RobustObjective, *,
                  tau: float = 0.1, gumbel: _ArchLike | None = None, generator: torch.Generator | None = None,
                  accumulate: bool = False) -> ArchGradient:
    """The estimated objective (eq. 10 through the VLE) and its gradient w.r.t. the architecture logits.

    ``H = GumbelSoftmax(A, xi, tau)`` per cell type, ``L_hat = psi(H)``
    (eq. 8), objective ``alpha L_hat_nat + beta sum_i beta_i L_hat_i``; one
    backward pass through the VLE, nothing else: the gradient is taken with
    ``torch.autograd.grad`` w.r.t. the logits only, so the VLE's parameters
    get no ``.grad`` and no supernet is evaluated.

    Args:
        vle: The trained VLE.
        logits: The architecture parameters ``A`` (requires_grad): a tensor
            ``(E, K)``, a list, or a dict cell type -> ``(E_c, K)`` (the
            supernet's ``alphas``, in the order the VLE was trained with).
        objective: The :class:`RobustObjective`.
        tau: Gumbel-softmax temperature (authors: 0.1).
        gumbel: The Gumbel noise ``xi`` (same structure as ``logits``), e.g.
            the sample the supernet was trained with this iteration (authors'
            code); default: a fresh sample from ``generator``. Pass zeros for
            the plain softmax.
        generator: Seeds a fresh Gumbel sample.
        accumulate: Also add the gradients to the logits' ``.grad`` (for an
            optimizer step, as :func:`arch_step`).

    Returns:
        An :class:`ArchGradient`.
    """
    leaves, structure = _leaves(logits)
    if not leaves or any(not torch.is_tensor(a) or not a.requires_grad for a in leaves):
        raise ConfigError("arch_gradient: the architecture logits must be tensors with requires_grad=True.")
    if gumbel is None:
        noise = [sample_gumbel(a, generator=generator) for a in leaves]
    else:
        noise, _ = _leaves(gumbel)
        if len(noise) != len(leaves) or any(tuple(g.shape) != tuple(a.shape) for g, a in zip(noise, leaves)):
            raise ConfigError("arch_gradient: gumbel must have the structure and shapes of the logits.")
        noise = [g.detach().to(a) for g, a in zip(noise, leaves)]
    weights = [gumbel_softmax(a, tau, gumbel=g) for a, g in zip(leaves, noise)]
    mode = vle.training
    try:
        vle.train()  # no dropout / BN inside; train mode lets cuDNN's LSTM run backward
        estimates = vle(torch.cat(weights, dim=-2))
    finally:
        vle.train(mode)
    obj = objective(estimates)
    grads = list(torch.autograd.grad(obj, leaves))
    if accumulate:
        for a, g in zip(leaves, grads):
            a.grad = g.clone() if a.grad is None else a.grad + g
    return ArchGradient(objective=obj.detach(), losses=estimates.detach(), grads=_rebuild(grads, structure),
                        weights=_rebuild([w.detach() for w in weights], structure), gumbel=_rebuild(noise, structure))


def arch_step(vle: ValidationLossEstimator, logits: _ArchLike, objective: RobustObjective,
              optimizer: torch.optim.Optimizer, **kwargs: Any) -> ArchGradient:
    """Alg. 1 line 24: one optimizer step of the logits on the VLE's estimated objective.

    ``optimizer`` holds the logits (authors: Adam lr 3e-5, betas (0.5,
    0.999)); ``kwargs`` go to :func:`arch_gradient`.
    """
    optimizer.zero_grad(set_to_none=True)
    result = arch_gradient(vle, logits, objective, accumulate=True, **kwargs)
    optimizer.step()
    return result


# --------------------------------------------------------------------------- settings

_PLUS_EPS = (0.03, 0.0375, 0.045, 0.0525, 0.06, 0.0675, 0.075, 0.0825, 0.09, 0.0975, 0.105)


def _interp_beta(eps: Sequence[float]) -> tuple[float, ...]:
    """The authors' beta_i curve (1, 2, 3, 5, 7, 10 at 0.03 .. 0.105) read linearly at ``eps``."""
    xs = (0.03, 0.045, 0.06, 0.075, 0.09, 0.105)
    out = []
    for e in eps:
        j = min(max(sum(1 for x in xs if x <= e) - 1, 0), len(xs) - 2)
        w = (e - xs[j]) / (xs[j + 1] - xs[j])
        out.append(round(AUTHORS_BETA_I[j] + w * (AUTHORS_BETA_I[j + 1] - AUTHORS_BETA_I[j]), 10))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class WsrConfig:
    """Every setting of Wsr-NAS; defaults are WsrNet-Basic's search, ``(N1, N2) = (3, 3)``.

    Sources: ``wsr-nas.txt`` (Sec. "Experiments", Alg. 1, eq. 10) and the
    authors' code as summarised in ``shared/notes/methods.md``. Strengths are
    l-inf radii on images in [0, 1]. Errors name the keys as
    ``method_args.<key>`` (the YAML's ``strategy_args.method_args``).

    Attributes:
        pgd_eps: The N1 strengths whose noises PGD generates (0.03, 0.06, 0.09).
        estimated_eps: The N2 strengths the AN-Estimator generates
            (0.045, 0.075, 0.105 for (3, 3)); the search strengths are the
            union, sorted.
        estimated_norms: Their targets as L2 norms (``norm="l2"`` only);
            ``None``: per image from the PGD noises
            (:func:`.estimator.target_strengths`), which on CIFAR-10 gives
            about the authors' fixed 2.3, 3.9, 5.5.
        eval_eps: Strengths of the final evaluation (0.03, 0.10, 0.17, 0.25).
        norm: Norm of the estimator's strengths and targets (``"l2"``, authors).
        pgd_steps: PGD iterations in the search (7); step ``eps * pgd_step_factor / pgd_steps``.
        pgd_step_factor: 2.5 (Madry et al.).
        eval_steps: PGD iterations of the evaluation (20; step eps * 2.5 / 20).
        train_eps: Radius of the supernet's adversarial training (0.03, PGD-7).
        estimator: AN-Estimator, one of ``wa_ane, a_ane, e_ane, e_ane_minus`` (``a_ane``).
        weighting: Eq. 6 interpolation weights, ``paper`` or ``linear``.
        ane_memory: Capacity of ``Ma`` (600).
        ane_lr, ane_weight_decay: AdamW (5e-4, 1e-4).
        ane_warmup_steps, ane_total_steps: Warm-up then cosine (4,000; 100,000 optimizer steps).
        ane_batch_size: Entries per estimator step (64).
        ane_samples: ``B``, images of ``Dt`` drawn per update of ``Ma`` (paper: 10;
            Alg. 1 line 9): their PGD noises at ``pgd_eps`` and at one radius
            drawn from U(0, ``ane_random_eps_max``) give ``N1 + 1``
            leave-one-out entries each (:func:`.estimator.leave_one_out`).
        ane_passes: ``K_a``, passes over ``Ma`` per update (1).
        ane_random_eps_max: The extra training strength is drawn from U(0, this) (0.15).
        vle_hidden: LSTM hidden size (16).
        vle_memory: Capacity of ``Mv`` (100).
        vle_lr, vle_weight_decay: Adam (1e-3, 1e-3; betas 0.5, 0.999).
        vle_batch_size: 64.
        vle_warmup_epochs: ``K_v``, passes over ``Mv`` before the search (500).
        vle_epochs: Passes over ``Mv`` per search iteration (1).
        vle_input_noise: Std of the noise added to ``H`` in VLE training (0.01).
        alpha: Weight of the natural loss (0.8).
        beta: Weight of the adversarial losses; ``None`` means ``1 - alpha``
            (0.2 by default). ``alpha + beta = 1`` is checked.
        beta_i: Relative per-strength weights, one per search strength in
            increasing order (authors: 1, 2, 3, 5, 7, 10), normalised to sum 1.
        tau: Gumbel-softmax temperature (0.1).
        warmup_population: ``N``, architectures warmed up before the search (100).
        epochs: ``T``, search iterations (200).
        batch_size: 64.
        lr, lr_min, momentum, weight_decay, grad_clip: Supernet SGD (0.1 cosine
            to 0.001, 0.9, 3e-4, 5).
        arch_lr: Adam learning rate of the architecture logits (3e-5).
        arch_betas: (0.5, 0.999).
        arch_weight_decay: 0 (see the module docstring).
        init_channels: C of the supernet (16); its cells are ``settings.space``'s
            (paper: the DARTS space, 8 cells). ``Dt`` and ``Dv`` are the search
            split of the settings (``settings.val_fraction: 0.5`` for the
            paper's halves of the training set).
        train_batches: Batches of ``Dt`` in one "epoch" of Alg. 1 lines 4, 8
            and 21 (``None``: all of ``Dt``, the paper); a budget knob.
        val_images: Images of ``Dv`` each architecture is evaluated on (Alg. 1
            lines 11-15; ``None``: all, the paper); the same images every time.
        val_batch_size: Batch size of that evaluation (memory only).
        augment: Random crop (+ flip where the data allows) on ``Dt``.
        warmup_attack: Attack of the warm-up training (lines 3-5): ``none``
            (the paper says "warm-up", and "adversarially train" only from
            line 8 on) or ``pgd`` (PGD-7 at ``train_eps``).
        ewss: Update the architecture through the VLE (EWSS, line 24). False:
            the naive update of Table 6 ("Basic"): the gradient of eq. 10 taken
            through the supernet on ``Dv`` (clean and adversarial inputs), one
            Adam step per validation batch, no VLE.
        arch_steps: Adam steps on the architecture through the VLE per search
            iteration, each with a fresh Gumbel sample (``None``: one per
            training batch of the iteration, as DARTS pairs them); EWSS only.
        project: Clip estimated noises to the l-inf ball of their radius (an
            L2-rescaled estimate can exceed it where its sources agree).
        derive_inputs_per_node: Inputs kept per node by the DARTS derivation (2).
        autocast: bf16 autocast of the supernet's forward passes (GPU).
        channels_last: Supernet and batches in ``channels_last`` memory format.
        seed: Seed of the search (``None``: drawn and logged by the caller).
    """

    pgd_eps: tuple[float, ...] = (0.03, 0.06, 0.09)
    estimated_eps: tuple[float, ...] = (0.045, 0.075, 0.105)
    estimated_norms: tuple[float, ...] | None = None
    eval_eps: tuple[float, ...] = (0.03, 0.10, 0.17, 0.25)
    norm: str = "l2"
    pgd_steps: int = 7
    pgd_step_factor: float = 2.5
    eval_steps: int = 20
    train_eps: float = 0.03
    estimator: str = "a_ane"
    weighting: str = "paper"
    ane_memory: int = 600
    ane_lr: float = 5e-4
    ane_weight_decay: float = 1e-4
    ane_warmup_steps: int = 4000
    ane_total_steps: int = 100_000
    ane_batch_size: int = 64
    ane_samples: int = 10
    ane_passes: int = 1
    ane_random_eps_max: float = 0.15
    vle_hidden: int = 16
    vle_memory: int = 100
    vle_lr: float = 1e-3
    vle_weight_decay: float = 1e-3
    vle_batch_size: int = 64
    vle_warmup_epochs: int = 500
    vle_epochs: int = 1
    vle_input_noise: float = 0.01
    alpha: float = 0.8
    beta: float | None = None
    beta_i: tuple[float, ...] = AUTHORS_BETA_I
    tau: float = 0.1
    warmup_population: int = 100
    epochs: int = 200
    batch_size: int = 64
    lr: float = 0.1
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 3e-5
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 0.0
    init_channels: int = 16
    train_batches: int | None = None
    val_images: int | None = None
    val_batch_size: int = 256
    augment: bool = True
    warmup_attack: str = "none"
    ewss: bool = True
    arch_steps: int | None = None
    project: bool = True
    derive_inputs_per_node: int = 2
    autocast: bool = False
    channels_last: bool = False
    seed: int | None = 0

    WHERE = "method_args"

    # -- validation ----------------------------------------------------------------
    def _fail(self, key: str, what: str) -> None:
        raise ConfigError(f"{self.WHERE}.{key} must be {what}, but got {getattr(self, key)!r}.")

    def _int(self, key: str, low: int) -> None:
        if not _is_int(getattr(self, key)) or getattr(self, key) < low:
            self._fail(key, f"an integer >= {low}")

    def _real(self, key: str, low: float | None = None, high: float | None = None, *, open_low: bool = False,
              open_high: bool = False) -> None:
        v = getattr(self, key)
        ok = _is_real(v) and (low is None or (v > low if open_low else v >= low)) \
            and (high is None or (v < high if open_high else v <= high))
        if not ok:
            lo = "-inf" if low is None else low
            hi = "inf" if high is None else high
            self._fail(key, f"a number in {'(' if open_low else '['}{lo}, {hi}{')' if open_high else ']'}")

    def _eps_tuple(self, key: str, *, allow_empty: bool = False) -> None:
        v = getattr(self, key)
        if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or (not v and not allow_empty) \
                or not all(_is_real(e) and 0 < e <= 1 for e in v) or any(b <= a for a, b in zip(v, v[1:])):
            self._fail(key, "a list of strictly increasing radii in (0, 1]")
        object.__setattr__(self, key, tuple(float(e) for e in v))

    def __post_init__(self) -> None:
        w = self.WHERE
        for key in ("pgd_eps", "estimated_eps", "eval_eps"):
            self._eps_tuple(key, allow_empty=key == "estimated_eps")
        overlap = sorted(set(self.pgd_eps) & set(self.estimated_eps))
        if overlap:
            raise ConfigError(f"{w}.estimated_eps must not repeat a strength of {w}.pgd_eps, but both hold {overlap}.")
        check_choice(f"{w}.norm", self.norm, NORMS)
        if self.estimated_norms is not None:
            if self.norm != "l2":
                raise ConfigError(f"{w}.estimated_norms are L2 targets and need {w}.norm='l2'; with "
                                  f"norm={self.norm!r} the targets are the eps. Got {self.estimated_norms!r}.")
            v = self.estimated_norms
            if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) != len(self.estimated_eps) \
                    or not all(_is_real(e) and e > 0 for e in v) or any(b <= a for a, b in zip(v, v[1:])):
                self._fail("estimated_norms", f"null or {len(self.estimated_eps)} increasing L2 norms > 0, one "
                                              f"per estimated strength")
            object.__setattr__(self, "estimated_norms", tuple(float(e) for e in v))
        for key, low in (("pgd_steps", 1), ("eval_steps", 1), ("ane_memory", 1), ("ane_warmup_steps", 0),
                         ("ane_batch_size", 1), ("ane_samples", 1), ("ane_passes", 1), ("vle_hidden", 1),
                         ("vle_memory", 1), ("vle_batch_size", 1), ("vle_warmup_epochs", 0), ("vle_epochs", 1),
                         ("warmup_population", 1), ("epochs", 0), ("batch_size", 1), ("init_channels", 1),
                         ("val_batch_size", 1), ("derive_inputs_per_node", 1)):
            self._int(key, low)
        for key in ("train_batches", "val_images", "arch_steps"):
            if getattr(self, key) is not None:
                self._int(key, 1)
        for key in ("augment", "ewss", "project", "autocast", "channels_last"):
            if not isinstance(getattr(self, key), bool):
                self._fail(key, "true or false")
        check_choice(f"{w}.warmup_attack", self.warmup_attack, ("none", "pgd"))
        self._int("ane_total_steps", self.ane_warmup_steps + 1)
        self._real("pgd_step_factor", 0, open_low=True)
        self._real("train_eps", 0, 1)
        check_choice(f"{w}.estimator", self.estimator, VARIANTS)
        check_choice(f"{w}.weighting", self.weighting, WEIGHTINGS)
        for key in ("ane_lr", "vle_lr", "lr", "arch_lr", "tau"):
            self._real(key, 0, open_low=True)
        for key in ("ane_weight_decay", "vle_weight_decay", "weight_decay", "arch_weight_decay", "vle_input_noise",
                    "grad_clip"):
            self._real(key, 0)
        self._real("ane_random_eps_max", 0, 1, open_low=True)
        self._real("lr_min", 0, self.lr if _is_real(self.lr) else None)
        self._real("momentum", 0, 1)
        betas = self.arch_betas
        if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2 \
                or not all(_is_real(b) and 0 <= b < 1 for b in betas):
            self._fail("arch_betas", "two numbers in [0, 1)")
        object.__setattr__(self, "arch_betas", (float(betas[0]), float(betas[1])))
        if self.seed is not None and not _is_int(self.seed):
            self._fail("seed", "an integer or null")
        if not _is_real(self.alpha):
            self._fail("alpha", "a number > 0 (eq. 10)")
        beta = round(1.0 - self.alpha, 12) if self.beta is None else self.beta
        alpha, beta, _ = check_objective_weights(self.alpha, beta, self.beta_i, num_strengths=self.num_strengths,
                                                 where=w)
        object.__setattr__(self, "beta", beta)
        object.__setattr__(self, "beta_i", tuple(float(b) for b in self.beta_i))

    # -- derived -------------------------------------------------------------------
    @property
    def n1(self) -> int:
        """Number of strengths from PGD."""
        return len(self.pgd_eps)

    @property
    def n2(self) -> int:
        """Number of strengths from the AN-Estimator."""
        return len(self.estimated_eps)

    @property
    def num_strengths(self) -> int:
        return len(self.pgd_eps) + len(self.estimated_eps)

    @property
    def search_eps(self) -> tuple[float, ...]:
        """All search strengths, increasing (the order of ``beta_i`` and of the VLE's adversarial heads)."""
        return tuple(sorted(self.pgd_eps + self.estimated_eps))

    @property
    def num_losses(self) -> int:
        """Outputs of the VLE: natural + one per search strength."""
        return 1 + self.num_strengths

    def objective(self) -> RobustObjective:
        """The :class:`RobustObjective` of these settings."""
        return RobustObjective(self.alpha, self.beta, self.beta_i, where=self.WHERE)

    # -- (de)serialisation -----------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "method_args") -> "WsrConfig":
        """Build from a dict (the YAML's ``method_args``); unknown keys are a :class:`ConfigError`."""
        return from_dict(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (lists for tuples), the inverse of :meth:`from_dict`."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def basic(cls, **overrides: Any) -> "WsrConfig":
        """WsrNet-Basic: ``(N1, N2) = (3, 3)``, the class defaults."""
        return cls(**overrides)

    @classmethod
    def plus(cls, **overrides: Any) -> "WsrConfig":
        """WsrNet-Plus: ``(N1, N2) = (3, 8)``, 11 strengths.

        The paper only says that the N1 + N2 strengths fall into N1
        intervals, each starting with a PGD strength followed by estimated
        ones. Choice: 11 strengths evenly spaced from 0.03 to 0.105 (step
        0.0075); PGD at 0.03, 0.06, 0.09, the other 8 estimated; ``beta_i``
        the authors' curve (1, 2, 3, 5, 7, 10 over 0.03 .. 0.105) read
        linearly at the 11 strengths.
        """
        pgd = (0.03, 0.06, 0.09)
        settings: dict[str, Any] = {"pgd_eps": pgd, "estimated_eps": tuple(e for e in _PLUS_EPS if e not in pgd),
                                    "beta_i": _interp_beta(_PLUS_EPS)}
        settings.update(overrides)
        return cls(**settings)
