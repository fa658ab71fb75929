"""One robustness report per model: every number, its settings, and the masking warnings.

Suites (each adds to the one before; any field can be overridden by keyword):

=========  ================================================================
quick      First 1,000 images. Clean, FGSM, PGD-7 and PGD-20 at ``eps``
           (step eps/4, random start: RobNet's and MSRobNet's evaluation),
           uniform noise in the eps-ball (PGD's own random start, the
           baseline of the "do PGD's steps make progress" check), the
           Wsr-NAS strength curve (PGD-20 at 0.03, 0.10, 0.17, 0.25, step
           eps*2.5/20) and PGD-20 at a large eps (0.5) for the masking
           check, all in the same single pass over the images. No AutoAttack.
standard   All images; PGD-100 too (7/20/100 steps); AutoAttack, standard
           version, on the first 1,000 images (RobustBench's attack; its
           full-test-set figure is the ``full`` suite).
full       All images for everything, AutoAttack on all of them, the
           AutoAttack strength curve (first 1,000 images), and a transfer
           (black-box) attack, PGD-20 crafted on ``source`` (required).
=========  ================================================================

A transfer attack is added to any suite when ``source`` is given. Every PGD
attack at the same eps draws the same random start (see :mod:`._engine`), so
PGD-7/20/100 differ only in their iterations.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..attacks import FGSM, PGD, Attack
from ..errors import ConfigError
from ._autoattack import AUTOATTACK_BATCH_SIZE, run_autoattack, _check_attacks
from ._engine import (DEFAULT_BATCH_SIZE, Data, check_eps_list, check_limit, evaluate_attacks,
                      model_device, resolve_seed)
from ._masking import MaskingThresholds, masking_warnings
from ._strength import (WSR_STEP_FACTOR, WSR_STRENGTHS, add_autoattack_curve, curve_from_evaluation,
                        strength_attacks, strength_key)
from ._transfer import transfer_pgd

__all__ = ["SuiteConfig", "SUITES", "REPORT_FORMAT", "UniformNoise", "robustness_report", "suite_from_spec",
           "flat_metrics", "markdown", "write_json", "write_markdown", "plot_strength_curve", "write_report"]

logger = logging.getLogger(__name__)

REPORT_FORMAT = "nni_robust.robustness_report/1"


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    """What a report measures.

    Attributes:
        name: Suite name.
        num_images: First test images for the PGD pass (``None``: all).
        fgsm: Run FGSM (step = eps, no random start).
        noise: Measure accuracy on PGD's random start alone (uniform noise in
            the eps-ball, the same draws as PGD's start): the baseline of the
            "do PGD's steps make progress" check.
        pgd_steps: PGD iteration counts at ``eps`` (e.g. ``(7, 20)``).
        pgd_step_factor: PGD step = ``eps * pgd_step_factor`` (1/4: 2/255 at 8/255).
        curve_eps: Strengths of the strength curve (empty: no curve).
        curve_steps: PGD iterations per strength (Wsr-NAS: 20).
        curve_step_factor: Curve PGD step = ``eps * factor / steps`` (Wsr-NAS: 2.5).
        large_eps: eps of the "accuracy must reach ~0" check (``None``: skip).
        autoattack: Run AutoAttack at ``eps``.
        autoattack_attacks: Its attacks (``None``: the standard version).
        autoattack_images: First images for AutoAttack (``None``: all).
        autoattack_curve: Run AutoAttack at every curve strength too.
        autoattack_curve_images: First images for the AutoAttack curve.
        transfer_required: Fail without a ``source`` model.
        transfer_steps: PGD iterations of the transfer attack (DSARA: 20).
    """

    name: str = "custom"
    num_images: int | None = 1000
    fgsm: bool = True
    noise: bool = True
    pgd_steps: tuple[int, ...] = (7, 20)
    pgd_step_factor: float = 0.25
    curve_eps: tuple[float, ...] = WSR_STRENGTHS
    curve_steps: int = 20
    curve_step_factor: float = WSR_STEP_FACTOR
    large_eps: float | None = 0.5
    autoattack: bool = False
    autoattack_attacks: tuple[str, ...] | None = None
    autoattack_images: int | None = 1000
    autoattack_curve: bool = False
    autoattack_curve_images: int | None = 1000
    transfer_required: bool = False
    transfer_steps: int = 20

    def __post_init__(self) -> None:
        check_limit("SuiteConfig.num_images", self.num_images)
        check_limit("SuiteConfig.autoattack_images", self.autoattack_images)
        check_limit("SuiteConfig.autoattack_curve_images", self.autoattack_curve_images)
        for name in ("fgsm", "noise", "autoattack", "autoattack_curve", "transfer_required"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"SuiteConfig.{name} must be True or False, but got "
                                  f"{getattr(self, name)!r}.")
        steps = tuple(self.pgd_steps)
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in steps) \
                or len(set(steps)) != len(steps):
            raise ConfigError(f"SuiteConfig.pgd_steps must be distinct integers >= 1, but got "
                              f"{self.pgd_steps!r}.")
        object.__setattr__(self, "pgd_steps", tuple(sorted(steps)))
        for name in ("curve_steps", "transfer_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"SuiteConfig.{name} must be an integer >= 1, but got {v!r}.")
        for name in ("pgd_step_factor", "curve_step_factor"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"SuiteConfig.{name} must be a positive number, but got {v!r}.")
        if self.curve_eps:
            object.__setattr__(self, "curve_eps", check_eps_list("SuiteConfig.curve_eps", self.curve_eps))
        else:
            object.__setattr__(self, "curve_eps", ())
        if self.large_eps is not None:
            check_eps_list("SuiteConfig.large_eps", [self.large_eps])
        if self.autoattack_attacks is not None:
            object.__setattr__(self, "autoattack_attacks", _check_attacks(self.autoattack_attacks))
        if self.autoattack_curve and not self.curve_eps:
            raise ConfigError("SuiteConfig.autoattack_curve needs curve_eps (the strengths).")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d


#: The predefined suites (see the module docstring).
SUITES: dict[str, SuiteConfig] = {
    "quick": SuiteConfig(name="quick", num_images=1000, pgd_steps=(7, 20)),
    "standard": SuiteConfig(name="standard", num_images=None, pgd_steps=(7, 20, 100), autoattack=True,
                            autoattack_images=1000),
    "full": SuiteConfig(name="full", num_images=None, pgd_steps=(7, 20, 100), autoattack=True,
                        autoattack_images=None, autoattack_curve=True, autoattack_curve_images=1000,
                        transfer_required=True),
}


class UniformNoise(Attack):
    """A uniform random point of the eps-ball (clipped to [0, 1]): PGD's random start alone.

    Drawn exactly as :class:`nni_robust.attacks.PGD` draws its start, so with
    the same random stream it is the point PGD starts from ("PGD-0").
    """

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._random_start(x)


def _suite(suite: str | SuiteConfig, overrides: Mapping[str, Any]) -> SuiteConfig:
    if isinstance(suite, SuiteConfig):
        base = suite
    elif isinstance(suite, str) and suite in SUITES:
        base = SUITES[suite]
    else:
        raise ConfigError(f"suite must be one of {list(SUITES)} or a SuiteConfig, but got {suite!r}.")
    fields = {f.name for f in dataclasses.fields(SuiteConfig)} - {"name"}
    for key in overrides:
        if key not in fields:
            raise ConfigError(f"robustness_report: unknown setting {key!r}; valid settings: "
                              f"{', '.join(sorted(fields))}.")
    return dataclasses.replace(base, **overrides) if overrides else base


#: Keys of a robustness spec (:func:`suite_from_spec`) besides the :class:`SuiteConfig` fields.
SPEC_KEYS = ("suite", "eps", "autoattack_kwargs", "thresholds")


def suite_from_spec(spec: Mapping[str, Any], where: str = "robustness") -> tuple[SuiteConfig, dict[str, Any]]:
    """A robustness spec from a config file, checked: ``(suite config, robustness_report keywords)``.

    ``spec`` is ``{"suite": "quick" | "standard" | "full", "eps": ..., "autoattack_kwargs": {...},
    "thresholds": {...}, <any SuiteConfig field>: ...}`` (``suite`` defaults to ``quick``, ``eps``
    to 8/255). Every error names ``<where>.<key>``, the bad value and what is valid, so a config
    fails when it is checked, before any work.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where} must be a mapping such as {{suite: quick, eps: 0.1}}, but got {spec!r}.")
    fields = {f.name for f in dataclasses.fields(SuiteConfig)} - {"name"}
    unknown = sorted(set(spec) - fields - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; valid keys: {', '.join(SPEC_KEYS)} and the suite "
                          f"settings {', '.join(sorted(fields))}.")
    suite = spec.get("suite", "quick")
    if not isinstance(suite, str) or suite not in SUITES:
        raise ConfigError(f"{where}.suite must be one of {list(SUITES)}, but got {suite!r}.")
    eps = spec.get("eps", 8 / 255)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or not 0 < eps <= 1:
        raise ConfigError(f"{where}.eps must be a number in (0, 1] (l-inf radius of images in [0, 1]), "
                          f"but got {eps!r}.")
    overrides = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items() if k in fields}
    try:
        cfg = _suite(suite, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}".replace("SuiteConfig.", f"{where}.")) from None
    kwargs: dict[str, Any] = {"eps": float(eps)}
    aa = spec.get("autoattack_kwargs")
    if aa is not None:
        if not isinstance(aa, Mapping) or set(aa) - {"n_queries", "n_target_classes", "n_restarts"}:
            raise ConfigError(f"{where}.autoattack_kwargs must map n_queries, n_target_classes or n_restarts "
                              f"to integers, but got {aa!r}.")
        kwargs["autoattack_kwargs"] = dict(aa)
    thresholds = spec.get("thresholds")
    if thresholds is not None:
        try:
            kwargs["thresholds"] = MaskingThresholds.from_dict(thresholds)
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"{where}.thresholds: {exc}") from None
    return cfg, kwargs


def _environment(device: torch.device) -> dict[str, Any]:
    try:
        import pyautoattack
        aa_version = str(getattr(pyautoattack, "__version__", "unknown"))
    except ImportError:  # pragma: no cover
        aa_version = None
    env = {"torch": torch.__version__, "pyautoattack": aa_version, "python": platform.python_version(),
           "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _model_info(model: nn.Module, input_shape: Sequence[int]) -> dict[str, Any]:
    from ..flops import count_flops, count_params

    info: dict[str, Any] = {"name": type(model).__name__, "params": count_params(model),
                            "input_size": list(input_shape)}
    try:
        info["flops"] = count_flops(model, tuple(input_shape))
    except (RuntimeError, ConfigError, TypeError, ValueError) as exc:
        logger.warning("robustness_report: could not count FLOPs of %s: %s", info["name"], exc)
        info["flops"] = None
    return info


def robustness_report(model: nn.Module, data: Data, *, suite: str | SuiteConfig = "quick",
                      eps: float = 8 / 255, source: nn.Module | None = None,
                      source_name: str | None = None, seed: int | None = 0,
                      device: torch.device | str | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                      autoattack_batch_size: int = AUTOATTACK_BATCH_SIZE,
                      autoattack_kwargs: Mapping[str, Any] | None = None,
                      thresholds: MaskingThresholds | Mapping[str, Any] | None = None,
                      progress: bool | None = None, **overrides: Any) -> dict[str, Any]:
    """Evaluate ``model``'s robustness with a suite of attacks and the masking checks.

    Args:
        model: Classifier taking inputs in ``[0, 1]`` (normalization inside).
        data: Test ``(images, labels)`` tensors or a re-iterable loader of
            ``(x, y)`` batches in a fixed order ("first N images" are the
            loader's first; it is read once for the PGD pass and once per
            AutoAttack run).
        suite: ``"quick"``, ``"standard"``, ``"full"`` (see the module
            docstring) or a :class:`SuiteConfig`.
        eps: l-inf radius of FGSM, PGD, AutoAttack and the transfer attack.
        source: Model to craft transfer attacks on (required by ``full``).
        source_name: How the report names the source (default: its class).
        seed: Seed of every attack (``None``: drawn; stored in the report).
        device: Where to evaluate (default: where the model is).
        batch_size: PGD-pass batch size when ``data`` is tensors.
        autoattack_batch_size: AutoAttack batch size.
        autoattack_kwargs: Further :func:`run_autoattack` keywords
            (``n_queries``, ``n_target_classes``, ``n_restarts``); changing
            them makes the figure non-standard (the report records them).
        thresholds: Masking-check thresholds (:class:`MaskingThresholds` or a dict).
        progress: Progress bars (``None``: only when stderr is a terminal).
        **overrides: :class:`SuiteConfig` fields replacing the suite's.

    Returns:
        The report dict: ``format``, ``suite`` and ``suite_settings``, ``eps``,
        ``num_images``, ``model`` (name, params, FLOPs, input size),
        ``accuracy`` and ``loss`` per attack (``clean``, ``fgsm``,
        ``pgd<steps>``), ``attacks`` (each attack's settings),
        ``strength_curve``, ``large_eps``, ``transfer``, ``autoattack``
        (with ``per_attack``), ``autoattack_pgd`` (the strongest PGD on
        AutoAttack's images), ``warnings``, ``seconds``, ``seed`` and
        ``environment``; parts a suite does not run are ``None``.

    Raises:
        ConfigError: bad settings, or ``full`` without ``source``.
        NonFiniteOutputError: the model (or source) returned NaN/inf logits.
    """
    cfg = _suite(suite, overrides)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) \
            or not 0 < eps <= 1:
        raise ConfigError(f"eps must be a number in (0, 1], but got {eps!r}.")
    eps = float(eps)
    if isinstance(thresholds, Mapping):
        thresholds = MaskingThresholds.from_dict(thresholds)
    elif thresholds is not None and not isinstance(thresholds, MaskingThresholds):
        raise ConfigError(f"thresholds must be a MaskingThresholds, a dict or None, but got {thresholds!r}.")
    if source is not None and not isinstance(source, nn.Module):
        raise ConfigError(f"source must be a torch.nn.Module or None, but got {type(source).__name__}.")
    if cfg.transfer_required and source is None:
        raise ConfigError(f"suite {cfg.name!r} includes a transfer attack and needs source= (a model to "
                          f"craft it on, e.g. nni_robust.robustness.train_transfer_source(...)).")
    aa_kwargs = dict(autoattack_kwargs or {})
    for key in aa_kwargs:
        if key not in ("n_queries", "n_target_classes", "n_restarts"):
            raise ConfigError(f"autoattack_kwargs: unknown or reserved key {key!r}; valid: "
                              f"n_queries, n_target_classes, n_restarts.")
    seed = resolve_seed(seed, "robustness_report seed")
    dev = model_device(model, device)
    t_start = time.perf_counter()

    # ---- one pass: clean, FGSM, PGD-k, strength curve, large eps, transfer
    attacks: dict[str, Any] = {"clean": None}
    settings: dict[str, dict[str, Any]] = {"clean": {}}
    if cfg.fgsm:
        attacks["fgsm"] = FGSM(eps)
        settings["fgsm"] = {"attack": "fgsm", "eps": eps, "step": eps, "random_start": False}
    step = eps * cfg.pgd_step_factor
    if cfg.noise:
        attacks["noise"] = UniformNoise(eps)
        settings["noise"] = {"attack": "uniform noise (PGD's random start)", "eps": eps}
    for k in cfg.pgd_steps:
        attacks[f"pgd{k}"] = PGD(eps, step=step, steps=k, random_start=True)
        settings[f"pgd{k}"] = {"attack": "pgd", "eps": eps, "step": step, "steps": k, "random_start": True}
    curve_attacks = strength_attacks(cfg.curve_eps, steps=cfg.curve_steps,
                                     step_factor=cfg.curve_step_factor) if cfg.curve_eps else {}
    attacks.update(curve_attacks)
    large_key = None
    if cfg.large_eps is not None:
        large_key = strength_key(cfg.large_eps, cfg.curve_steps)
        if large_key not in attacks:
            attacks.update(strength_attacks([cfg.large_eps], steps=cfg.curve_steps,
                                            step_factor=cfg.curve_step_factor))
    transfer_key = None
    if source is not None:
        transfer_key = f"transfer_pgd{cfg.transfer_steps}"
        attacks[transfer_key] = transfer_pgd(source, eps=eps, steps=cfg.transfer_steps, step=step)
    ev = evaluate_attacks(model, data, attacks, seed=seed, num_images=cfg.num_images,
                          batch_size=batch_size, device=dev, progress=progress,
                          desc=f"{len(attacks) - 1} attacks", keep_masks=True)
    main_keys = (["clean"] + (["fgsm"] if cfg.fgsm else []) + (["noise"] if cfg.noise else [])
                 + [f"pgd{k}" for k in cfg.pgd_steps])
    report: dict[str, Any] = {
        "format": REPORT_FORMAT, "suite": cfg.name, "suite_settings": cfg.to_dict(), "eps": eps,
        "num_images": ev.num_images, "model": _model_info(model, ev.input_shape),
        "accuracy": {k: ev.accuracy[k] for k in main_keys}, "loss": {k: ev.loss[k] for k in main_keys},
        "attacks": {k: settings[k] for k in main_keys if k != "clean"},
        "strength_curve": None, "large_eps": None, "transfer": None, "autoattack": None,
        "autoattack_pgd": None, "warnings": [], "seconds": {"pgd_pass": ev.seconds}, "seed": seed,
        "environment": _environment(dev)}
    curve = None
    if cfg.curve_eps:
        curve = curve_from_evaluation(ev, cfg.curve_eps, steps=cfg.curve_steps,
                                      step_factor=cfg.curve_step_factor, random_start=True)
    if large_key is not None:
        report["large_eps"] = {"eps": cfg.large_eps, "attack": f"pgd{cfg.curve_steps}",
                               "step": cfg.large_eps * cfg.curve_step_factor / cfg.curve_steps,
                               "accuracy": ev.accuracy[large_key]}
    if transfer_key is not None:
        report["transfer"] = {"source": source_name or type(source).__name__,
                              "attack": {"attack": "pgd", "eps": eps, "step": step,
                                         "steps": cfg.transfer_steps, "random_start": True,
                                         "crafted_on": "source"},
                              "accuracy": ev.accuracy[transfer_key]}

    # ---- AutoAttack
    if cfg.autoattack:
        aa = run_autoattack(model, data, eps=eps, attacks=cfg.autoattack_attacks,
                            num_images=cfg.autoattack_images, batch_size=autoattack_batch_size,
                            seed=seed, device=dev, progress=progress, **aa_kwargs)
        report["autoattack"] = aa.to_dict()
        report["seconds"]["autoattack"] = sum(aa.seconds.values())
        pgd_keys = [f"pgd{k}" for k in cfg.pgd_steps]
        if pgd_keys and ev.correct is not None and aa.num_images <= ev.num_images:
            m = aa.num_images
            accs = {k: ev.correct[k][:m].float().mean().item() for k in pgd_keys}
            best = min(pgd_keys, key=lambda k: (accs[k], -int(k[3:])))
            report["autoattack_pgd"] = {"attack": f"PGD-{best[3:]}", "accuracy": accs[best],
                                        "num_images": m}
    if curve is not None and cfg.autoattack_curve:
        curve = add_autoattack_curve(curve, model, data, num_images=cfg.autoattack_curve_images,
                                     seed=seed, device=dev, progress=progress,
                                     autoattack_kwargs={"attacks": cfg.autoattack_attacks,
                                                        "batch_size": autoattack_batch_size, **aa_kwargs})
        report["seconds"]["autoattack_curve"] = sum(
            v for k, v in curve.seconds.items() if k.startswith("autoattack"))
    if curve is not None:
        report["strength_curve"] = curve.to_dict()

    # ---- masking checks
    warnings = masking_warnings(report, thresholds)
    if report["autoattack"]:
        warnings += [f"AutoAttack's own check: {w}" for w in report["autoattack"]["warnings"]]
    report["warnings"] = warnings
    report["seconds"]["total"] = time.perf_counter() - t_start
    for w in warnings:
        logger.warning("robustness_report (%s): %s", report["model"]["name"], w)
    return report


def flat_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The report's headline numbers as a flat ``{name: float}`` (e.g. for NNI's final metrics).

    Keys: ``clean``, ``fgsm``, ``pgd<k>``, ``autoattack``, ``autoattack_<attack>``,
    ``strength_mean``, ``strength@<eps>``, ``transfer``, ``large_eps``,
    ``masking_warnings`` (their number); present when measured.
    """
    out = {k: float(v) for k, v in report["accuracy"].items()}
    aa = report.get("autoattack")
    if aa:
        out["autoattack"] = float(aa["robust"])
        out.update({f"autoattack_{k}": float(v) for k, v in aa["per_attack"].items()})
    curve = report.get("strength_curve")
    if curve:
        out["strength_mean"] = float(curve["pgd_mean"])
        out.update({f"strength@{e:g}": float(a) for e, a in zip(curve["eps"], curve["pgd"])})
    if report.get("transfer"):
        out["transfer"] = float(report["transfer"]["accuracy"])
    if report.get("large_eps"):
        out["large_eps"] = float(report["large_eps"]["accuracy"])
    out["masking_warnings"] = float(len(report.get("warnings") or []))
    return out


# --------------------------------------------------------------------------- writers


def write_json(report: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write the report as indented JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _eps(e: float) -> str:
    n = e * 255
    return f"{e:g} ({n:.0f}/255)" if abs(n - round(n)) < 1e-6 else f"{e:g}"


def markdown(report: Mapping[str, Any]) -> str:
    """The report as a Markdown document."""
    m = report["model"]
    flops = "-" if m.get("flops") is None else f"{m['flops'] / 1e6:.3f} M"
    lines = [f"# Robustness report: {m['name']}", "",
             f"Suite `{report['suite']}`, l-inf eps {_eps(report['eps'])}, {report['num_images']} images, "
             f"seed {report['seed']}. Parameters {m['params'] / 1e6:.3f} M, FLOPs {flops} per image "
             f"(input {'x'.join(str(s) for s in m['input_size'])}).", "",
             "## White-box attacks", "", "| attack | settings | accuracy |", "|---|---|---|"]
    for key, acc in report["accuracy"].items():
        s = report["attacks"].get(key, {})
        if key == "clean":
            desc = "no attack"
        elif key == "noise":
            desc = "uniform noise in the eps-ball (PGD's random start)"
        elif s.get("attack") == "fgsm":
            desc = f"step {s['step']:.4g}, no random start"
        else:
            desc = f"{s['steps']} steps of {s['step']:.4g}, random start"
        label = {"clean": "clean", "noise": "noise", "fgsm": "FGSM"}.get(key, f"PGD-{key[3:]}")
        lines.append(f"| {label} | {desc} | {_pct(acc)} |")
    aa = report.get("autoattack")
    if aa:
        lines += ["", f"## AutoAttack ({aa['settings']['version']}, {aa['num_images']} images)", "",
                  "| after attack | robust accuracy (cumulative) | seconds |", "|---|---|---|",
                  f"| clean | {_pct(aa['clean'])} | |"]
        lines += [f"| {k} | {_pct(v)} | {aa['seconds'].get(k, 0.0):.1f} |" for k, v in aa["per_attack"].items()]
        lines.append(f"\n**AutoAttack robust accuracy: {_pct(aa['robust'])}**")
        if report.get("autoattack_pgd"):
            p = report["autoattack_pgd"]
            lines.append(f"({p['attack']} on the same {p['num_images']} images: {_pct(p['accuracy'])}.)")
        changed = {k: v for k, v in aa["settings"]["attacks"].items()}
        lines.append(f"\nSettings: pyautoattack {aa['settings']['package_version']}, seed "
                     f"{aa['settings']['seed']}, batch {aa['settings']['batch_size']}; "
                     + "; ".join(f"{k}: " + ", ".join(f"{a}={b}" for a, b in v.items())
                                 for k, v in changed.items()) + ".")
    curve = report.get("strength_curve")
    if curve:
        has_aa = curve.get("autoattack") is not None
        lines += ["", f"## Strength curve (PGD-{curve['settings']['steps']}, step eps*"
                      f"{curve['settings']['step_factor']:g}/{curve['settings']['steps']})", "",
                  "| eps | PGD |" + (" AutoAttack |" if has_aa else ""),
                  "|---|---|" + ("---|" if has_aa else "")]
        for i, e in enumerate(curve["eps"]):
            row = f"| {e:g} | {_pct(curve['pgd'][i])} |"
            if has_aa:
                row += f" {_pct(curve['autoattack'][i])} |"
            lines.append(row)
        row = f"| mean | {_pct(curve['pgd_mean'])} |"
        if has_aa:
            row += f" {_pct(curve['autoattack_mean'])} |"
        lines.append(row)
        if has_aa:
            lines.append(f"\nAutoAttack curve on the first {curve['autoattack_images']} images.")
    if report.get("large_eps"):
        le = report["large_eps"]
        lines += ["", f"Large-eps check: PGD-{le['attack'][3:]} (step {le['step']:.4g}) at eps {le['eps']:g}: "
                      f"{_pct(le['accuracy'])} (should be ~0)."]
    if report.get("transfer"):
        tr = report["transfer"]
        a = tr["attack"]
        lines += ["", "## Transfer (black-box) attack", "",
                  f"PGD-{a['steps']} (step {a['step']:.4g}) crafted on `{tr['source']}`, evaluated on this "
                  f"model: {_pct(tr['accuracy'])}."]
    lines += ["", "## Gradient-masking checks", ""]
    lines += [f"- WARNING: {w}" for w in report["warnings"]] or ["No warning (checks: FGSM vs PGD, PGD "
                                                                 "steps, large eps, strength curve, "
                                                                 "transfer, AutoAttack vs PGD, Square)."]
    env = report["environment"]
    secs = report["seconds"]
    lines += ["", f"Run: {secs['total']:.1f} s on {env['device']} ({env['threads']} thread(s)), torch "
                  f"{env['torch']}, pyautoattack {env['pyautoattack']}.", ""]
    return "\n".join(lines)


def write_markdown(report: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write :func:`markdown` of the report; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(report), encoding="utf-8")
    return path


def plot_strength_curve(report: Mapping[str, Any], path: str | os.PathLike) -> Path | None:
    """PNG of robust accuracy against eps (PGD, AutoAttack if measured, clean as a line).

    Uses matplotlib's object API with the Agg canvas (no global backend change).
    Returns the path, or ``None`` when the report has no strength curve.
    """
    curve = report.get("strength_curve")
    if not curve:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    eps = [0.0] + list(curve["eps"])
    pgd = [curve["clean"]] + list(curve["pgd"])
    ax.plot(eps, [100 * a for a in pgd], marker="o", color="tab:blue",
            label=f"PGD-{curve['settings']['steps']} (mean {100 * curve['pgd_mean']:.1f}%)")
    if curve.get("autoattack"):
        ax.plot(list(curve["eps"]), [100 * a for a in curve["autoattack"]], marker="s", color="tab:red",
                label=f"AutoAttack (mean {100 * curve['autoattack_mean']:.1f}%, "
                      f"{curve['autoattack_images']} images)")
    ax.axhline(100 * curve["clean"], color="gray", linestyle="--", linewidth=1,
               label=f"clean {100 * curve['clean']:.1f}%")
    report_eps = report.get("eps")
    if report_eps:
        ax.axvline(report_eps, color="gray", linestyle=":", linewidth=1, label=f"eps {report_eps:.4g}")
    for e, a in zip(curve["eps"], curve["pgd"]):
        ax.annotate(f"{100 * a:.1f}", (e, 100 * a), textcoords="offset points", xytext=(5, 5),
                    ha="left", fontsize=8, color="tab:blue")
    ax.set_xlabel("attack strength eps (l-inf)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(-2, 105)
    ax.set_xlim(-0.02 * max(eps), max(eps) * 1.08)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{report['model']['name']}: accuracy vs strength ({curve['num_images']} images)",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def write_report(report: Mapping[str, Any], directory: str | os.PathLike, *,
                 stem: str = "robustness") -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and (with a curve) ``<stem>.png`` into ``directory``.

    Returns:
        ``{"json": path, "markdown": path, "png": path}`` (``png`` only when written).
    """
    directory = Path(directory)
    out = {"json": write_json(report, directory / f"{stem}.json"),
           "markdown": write_markdown(report, directory / f"{stem}.md")}
    png = plot_strength_curve(report, directory / f"{stem}.png")
    if png is not None:
        out["png"] = png
    return out
