"""``nni-robust``: the steps of a search that do not run under nnictl, and a launcher that does.

Subcommands:
    profile     params and FLOPs of an architecture (JSON file, preset name) at a width or target FLOPs
    presets     list the built-in published architectures
    export      the best architecture of a finished search (from its work dir)
    train       widen an architecture to the target FLOPs, train it adversarially, evaluate it
    evaluate    clean / FGSM / PGD accuracy of a model written by ``train``
    check       validate an experiment YAML (NNI keys and our tuner's classArgs)
    run         start ``nnictl create`` on a YAML, wait for it, print the result
    resume      resume a stopped experiment by id and wait for it
    benchmark   ``benchmark tabular``: search strategies side by side on a tabular robustness benchmark
    leaderboard every method's experiment one after another: search cost, size and robustness side by side
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from nni_robust.errors import NniRobustError

__all__ = ["main", "build_parser"]

logger = logging.getLogger("nni_robust.cli")

DESCRIPTION = "Adversarially robust architecture search on Microsoft NNI: run a search, train and evaluate what it \
found, compare methods."
EPILOG = """first steps:
  nni-robust run experiments/msrobnet-quick.yml   a whole search on the embedded digits data (minutes on a laptop)
  nni-robust presets                              the published architectures, by name
  nni-robust train MSRobNet-1000 -o out           train one adversarially and evaluate it

'nni-robust COMMAND --help' explains a command's options."""


def _darts_presets() -> dict[str, Any]:
    """The DARTS-space architectures of nni_robust/spaces/data/darts_presets.json (and the unavailable ones)."""
    from importlib import resources

    return json.loads(resources.files("nni_robust.spaces").joinpath("data/darts_presets.json").read_text())


def _darts_preset(name: str):
    """(architecture, space) of a DARTS-space preset ``name`` (case-insensitive), or None."""
    from nni_robust.errors import ConfigError

    data = _darts_presets()
    key = next((k for k in data["presets"] if k.lower() == name.lower()), None)
    if key is None:
        gone = next((k for k in data["unavailable"] if k.lower() == name.lower()), None)
        if gone is not None:
            raise ConfigError(f"{gone} is listed in its paper but not available: {data['unavailable'][gone]['reason']}")
        return None
    from nni_robust.spaces.darts import DartsArch

    entry = data["presets"][key]
    return DartsArch.from_darts_genotype(entry["genotype"]), dict(entry["space"])


def _load_arch(spec: str):
    """An architecture from a JSON file, a JSON string or a preset name.

    Accepts an architecture's own JSON (dense robust cell or DARTS/DSARA, told
    apart by its ``space`` key) and a search's export ``best_architecture.json``
    (``{"arch": ..., "final_space": ...}``).

    Returns:
        (architecture, preset or None, the space dict the file names or None).
    """
    from nni_robust.errors import ArchitectureError
    from nni_robust.spaces.presets import get_preset, list_presets
    from nni_robust.strategies.networks import arch_from_json

    from nni_robust.errors import ConfigError

    path = Path(spec)
    text = path.read_text() if path.is_file() else spec if spec.lstrip().startswith("{") else None
    if text is None:
        if spec in list_presets():
            preset = get_preset(spec)
            return preset.arch, preset, None
        darts = _darts_preset(spec) if "/" not in spec and not spec.endswith(".json") else None
        if darts is not None:
            return darts[0], None, darts[1]
        if "/" in spec or "\\" in spec or spec.endswith(".json") or path.exists():
            raise ConfigError(f"architecture file {spec!r} does not exist (or is not a file); give an architecture "
                              f"JSON file, a JSON string or a preset name ({', '.join(list_presets())}).")
        get_preset(spec)  # raises a ConfigError listing close names
        raise AssertionError("unreachable")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArchitectureError(f"{spec if path.exists() else 'the architecture'} is not valid JSON: {exc}") from exc
    space = None
    if isinstance(data, dict) and isinstance(data.get("arch"), (dict, str)):  # a search's export
        space = data.get("final_space") or data.get("space")
        data = data["arch"]
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise ArchitectureError(f"{spec}: its 'arch' is a string that is not architecture JSON: {exc}") from exc
    kind = data.get("space", "dense_rob") if isinstance(data, dict) else "dense_rob"
    if space is None and kind != "dense_rob":
        space = {"name": kind}
    return arch_from_json(data, space or {}), None, space


def _space_for(arch, space_hint, settings_space):
    """The space to build ``arch`` in: the settings' when they are of its kind, else the file's."""
    from nni_robust.spaces.registry import kind_of_arch, space_of

    settings_space = dict(settings_space or {})
    have = space_of(settings_space)
    if isinstance(arch, have.arch_type):
        return settings_space
    wanted = kind_of_arch(arch).name
    if space_hint is None:
        space_hint = {"name": wanted}
    logger.info("The architecture is of space %r; building it in %s (the settings name %r).", wanted,
                space_hint, have.name)
    return dict(space_hint)


def _settings(path: str | None, dataset: str | None, data_root: str | None, device: str | None):
    from nni_robust.strategies.settings import TrialSettings
    from .experiment import load_experiment_settings

    data: dict[str, Any] = load_experiment_settings(path) if path else {}
    if dataset:
        data["dataset"] = dataset
    if data_root:
        data["data_root"] = data_root
    if device:
        data["device"] = device
    return TrialSettings.from_dict(data)


def cmd_profile(ns: argparse.Namespace) -> int:
    from nni_robust.config import check_choice
    from nni_robust.errors import ConfigError
    from nni_robust.data import DATASETS
    from nni_robust.flops import count_flops, count_params, search_width
    from nni_robust.strategies.networks import build_network

    arch, preset, hint = _load_arch(ns.arch)
    check_choice("--dataset", ns.dataset, tuple(DATASETS))
    info = DATASETS[ns.dataset]
    if ns.space:
        try:
            space = json.loads(ns.space)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--space must be a JSON object like '{{\"name\": \"darts\", \"num_cells\": 20}}', "
                              f"but got {ns.space!r}: {exc}") from exc
        if not isinstance(space, dict):
            raise ConfigError(f"--space must be a JSON object (a dict with 'name'), but got {ns.space!r}.")
    elif preset is not None:
        space = preset.space_kwargs()
    else:
        space = _space_for(arch, hint, {"layout": ns.layout})
    input_size = (info.channels, info.size, info.size)
    if ns.target_mflops:
        width, _ = search_width(lambda c: build_network(arch, width=c, info=info, space=space),
                                ns.target_mflops * 1e6, input_size=input_size)
    else:
        width = ns.width or (preset.init_channels if preset else 36)
    model = build_network(arch, width=width, info=info, space=space)
    out = {"init_channels": width, "params_M": count_params(model) / 1e6,
           "mflops": count_flops(model, input_size) / 1e6, "dataset": info.name}
    print(json.dumps(out, indent=2))
    return 0


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _paper(text: str) -> str:
    """``Ning et al., Multi-shot NAS ..., Table 1`` -> ``Ning et al., Table 1`` (short enough for a table)."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) >= 3 and len(parts[1]) > 25:
        parts = [parts[0], *parts[2:]]
    out = ", ".join(parts).split(";")[0]
    out = re.sub(r"^(\w+) \(([^)]*)\)", r"\1", out) if len(out) > 46 else out  # DSARA (its title), ...
    return out if len(out) <= 50 else out[:47] + "..."


def cmd_presets(ns: argparse.Namespace) -> int:
    from nni_robust.spaces.presets import PRESETS, UNAVAILABLE

    rows = []
    for name, p in PRESETS.items():
        space = f"dense_rob {p.layout.to_json_value()}"
        rows.append([name, _paper(p.paper), space, f"{p.init_channels}", f"{p.params_M:.2f}" if p.params_M else "-",
                     f"{p.flops_M:.0f}" if p.flops_M else "-", "yes"])
    darts = _darts_presets()
    for name, e in darts["presets"].items():
        built = e.get("built") or {}
        rows.append([name, _paper(e["paper"]), f"darts, {e['space'].get('num_cells')} cells", str(e["init_channels"]),
                     f"{built['params_M']:.2f}*" if built.get("params_M") else "-",
                     f"{built['flops_M']:.0f}*" if built.get("flops_M") else "-", "yes"])
    gone = [(n, r) for n, r in UNAVAILABLE.items()] + [(n, e["reason"]) for n, e in darts["unavailable"].items()]
    for name, reason in gone:
        entry = darts["unavailable"].get(name, {})
        published = entry.get("published") or {}
        space = entry.get("space", "dense_rob")
        paper = entry.get("paper", "")
        if name in UNAVAILABLE:  # presets.json keeps their published sizes; the paper is their family's
            published = published or _unavailable_sizes().get(name, {})
            paper = next((p.paper for n, p in PRESETS.items() if n.split("-")[0] == name.split("-")[0]), "")
        rows.append([name, _paper(paper) or "-", space, "-",
                     f"{published['params_M']:.2f}" if published.get("params_M") else "-",
                     f"{published['flops_M']:.0f}" if published.get("flops_M") else "-", "no"])
    print(_table(["name", "paper", "space", "C", "params (M)", "MFLOPs", "genotype public"], rows))
    print("\nSizes at 32x32 as published (FLOPs = 2 x multiply-adds); * = counted here (the DARTS paper publishes "
          "3.3 M parameters and no FLOPs).\nA name with 'genotype public: yes' is an architecture for profile and "
          "train, e.g. 'nni-robust profile DARTS_V2'; the others are listed in their papers only:")
    for name, reason in gone:
        print(f"  {name}: {reason.split(':')[0]}")  # (presets.json's reasons go on with where it was searched)
    return 0


def _unavailable_sizes() -> dict[str, dict]:
    from importlib import resources

    data = json.loads(resources.files("nni_robust.spaces").joinpath("data/presets.json").read_text())
    return {k: v.get("published") or {} for k, v in data.get("unavailable", {}).items()}


def cmd_export(ns: argparse.Namespace) -> int:
    from nni_robust.strategies.export import export_best

    path = export_best(ns.work_dir, ns.output)
    print(path.read_text())
    return 0


def cmd_train(ns: argparse.Namespace) -> int:
    from nni_robust.strategies.final import train_final

    arch, preset, hint = _load_arch(ns.arch)
    settings = _settings(ns.config, ns.dataset, ns.data_root, ns.device)
    space = _space_for(arch, hint, settings.space)
    if space != dict(settings.space):
        settings = settings.replace(space=space)
    if ns.epochs is not None or ns.batch_size is not None:
        import dataclasses
        train = settings.final.train
        changes = {k: v for k, v in (("epochs", ns.epochs), ("batch_size", ns.batch_size)) if v is not None}
        if ns.epochs is not None and train.milestones:  # the schedule keeps its shape: milestones scale
            scaled = sorted({min(ns.epochs, max(1, round(m * ns.epochs / train.epochs))) for m in train.milestones})
            changes["milestones"] = tuple(scaled)
        train = dataclasses.replace(train, **changes)
        settings = dataclasses.replace(settings, final=dataclasses.replace(settings.final, train=train))
    if ns.eval_images is not None:
        import dataclasses
        settings = dataclasses.replace(settings, final=dataclasses.replace(settings.final,
                                                                           eval_images=ns.eval_images))
    if preset is not None and ns.target_mflops is None and ns.init_channels is None:
        ns.init_channels = preset.init_channels
    if ns.target_mflops is None and ns.init_channels is None:
        raise SystemExit("nni-robust train: give --target-mflops or --init-channels")
    report = train_final(settings, arch, ns.output, target_mflops=ns.target_mflops,
                         init_channels=ns.init_channels, tb_dir=Path(ns.output) / "tensorboard", nproc=ns.nproc,
                         progress=_bars(ns.progress))
    if report is not None:  # (inside torchrun, rank 0 alone has the report)
        print(json.dumps({k: report[k] for k in ("init_channels", "mflops", "params_M", "accuracy")}, indent=2))
    return 0


def cmd_evaluate(ns: argparse.Namespace) -> int:
    from nni_robust.checkpoint import load_checkpoint
    from nni_robust.errors import ConfigError
    from nni_robust.strategies.final import evaluate_checkpoint

    if not Path(ns.model).is_file():
        raise ConfigError(f"nni-robust evaluate: model file {ns.model!r} does not exist (give the model.pt written by "
                          "'nni-robust train' or a final trial).")
    trained_on = load_checkpoint(ns.model).get("dataset")
    if ns.dataset and trained_on and ns.dataset != trained_on:
        raise ConfigError(f"--dataset is {ns.dataset!r}, but {ns.model} was trained on {trained_on!r}: a model can "
                          f"only be evaluated on its own dataset (leave --dataset out; the file carries it).")
    settings = _settings(ns.config, ns.dataset or trained_on, ns.data_root, ns.device)
    if ns.eval_images is not None:
        import dataclasses
        settings = dataclasses.replace(settings, final=dataclasses.replace(settings.final,
                                                                           eval_images=ns.eval_images))
    if ns.suite is None:
        for flag in ("eps", "source", "autoattack_images"):
            if getattr(ns, flag) is not None:
                raise ConfigError(f"--{flag.replace('_', '-')} needs --suite (quick, standard or full).")
        acc = evaluate_checkpoint(settings, ns.model, out_dir=ns.output, progress=_bars(ns.progress))
        print(json.dumps(acc, indent=2))
        return 0
    spec: dict[str, Any] = {"suite": ns.suite}
    if ns.eps is not None:
        spec["eps"] = ns.eps
    if ns.autoattack_images is not None:
        spec["autoattack_images"] = ns.autoattack_images
    source, source_name = _transfer_source(ns.source, settings, ns.model) if ns.source else (None, None)
    out = ns.output or str(Path(ns.model).resolve().parent)
    report = evaluate_checkpoint(settings, ns.model, out_dir=out, robustness=spec, source=source,
                                 source_name=source_name, progress=_bars(ns.progress) or False)
    print(Path(report["paths"]["markdown"]).read_text())
    print(json.dumps(report["paths"], indent=2))
    return 0


def _transfer_source(source: str, settings: Any, model_path: str) -> tuple[Any, str]:
    """``--source``: a model.pt of the project, or ``resnet18`` (trained here, standard training, cached)."""
    from nni_robust.checkpoint import load_checkpoint, save_checkpoint
    from nni_robust.errors import ConfigError
    from nni_robust.strategies.final import load_final_model

    if source != "resnet18":
        if not Path(source).is_file():
            raise ConfigError(f"--source must be a model.pt written by 'nni-robust train' (or a final trial) or "
                              f"'resnet18', but {source!r} is neither.")
        model, _, _ = load_final_model(settings, source)
        return model, str(source)
    from nni_robust.device import resolve_device
    from nni_robust.robustness import train_transfer_source

    cache = Path(model_path).resolve().parent / f"transfer_resnet18_{settings.dataset}.pt"
    splits = settings.data("final")
    if cache.is_file():
        from nni_robust.models import CifarResNet  # the network train_transfer_source trains (width 64)

        info = splits.info
        model = CifarResNet((2, 2, 2, 2), num_classes=info.num_classes, in_channels=info.channels, width=64,
                            mean=info.mean, std=info.std)
        model.load_state_dict(load_checkpoint(cache)["model"])
        print(f"nni-robust evaluate: transfer source from {cache}", file=sys.stderr)
    else:
        print("nni-robust evaluate: training a standard ResNet-18 on the training split as the transfer source "
              f"(cached in {cache})", file=sys.stderr)
        model = train_transfer_source(splits, device=settings.device, seed=settings.seed)
        save_checkpoint(cache, model=model.state_dict(), dataset=settings.dataset)
    return model.to(resolve_device(settings.device)).eval(), "ResNet-18 (standard training)"


def cmd_check(ns: argparse.Namespace) -> int:
    from .experiment import check_experiment

    summary = check_experiment(ns.config, environment=not ns.config_only)
    print(json.dumps(summary, indent=2))
    for warning in summary.get("warnings") or []:  # multi-machine configs: advice, not a failure
        print(f"nni-robust check: warning: {warning}", file=sys.stderr)
    problems = summary.get("environment") or []
    for problem in problems:
        print(f"nni-robust check: warning: {problem}", file=sys.stderr)
    if problems:
        print("nni-robust check: the config is valid, but it cannot run on this machine as it is "
              "(--config-only checks the config alone).", file=sys.stderr)
    return 1 if problems else 0


def _bars(flag: bool | None):
    """A tqdm progress factory (nni_robust.progress) on stderr: with --progress, or by default on a terminal."""
    if flag is False or (flag is None and not sys.stderr.isatty()):
        return None
    import functools

    from tqdm import tqdm

    return functools.partial(tqdm, file=sys.stderr, dynamic_ncols=True, mininterval=0.5, smoothing=0.1)


def _lines(flag: bool | None):
    """Where nni-robust run prints its progress lines (stderr), or None with --no-progress."""
    if flag is False:
        return None
    return lambda line: print(line, file=sys.stderr, flush=True)


def cmd_run(ns: argparse.Namespace) -> int:
    from .experiment import run_experiment

    result = run_experiment(ns.config, port=ns.port, timeout=ns.timeout, keep=ns.keep, progress=_lines(ns.progress))
    return _summarise(result, ns.keep)


def cmd_resume(ns: argparse.Namespace) -> int:
    from .experiment import resume_experiment

    result = resume_experiment(ns.id, experiment_dir=ns.experiment_dir, port=ns.port, timeout=ns.timeout,
                               keep=ns.keep, progress=_lines(ns.progress))
    return _summarise(result, ns.keep)


def cmd_benchmark_tabular(ns: argparse.Namespace) -> int:
    from .benchmark import main_tabular

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = main_tabular(ns.config, table=ns.table, seeds=ns.seeds, budgets=ns.budgets, labels=ns.strategies,
                          out=ns.out, progress=progress, workers=ns.workers, seed_offset=ns.seed_offset)
    print(Path(result["paths"]["md"]).read_text())
    print(json.dumps({"seconds": round(result["seconds"], 1), **result["paths"]}, indent=2))
    return 0


def cmd_leaderboard(ns: argparse.Namespace) -> int:
    from .leaderboard import run_leaderboard

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    doc = run_leaderboard(ns.config, out=ns.out, methods=ns.methods, readme=ns.readme, resume=ns.resume,
                          timeout=ns.timeout, experiment_dir=ns.experiment_dir, progress=progress,
                          experiment_progress=progress,
                          command=" ".join(["nni-robust leaderboard", ns.config, *(["--methods", *ns.methods]
                                                                                   if ns.methods else [])]))
    print(Path(doc["paths"]["md"]).read_text())
    print(json.dumps(doc["paths"], indent=2))
    return 0 if all(r.get("status") == "ok" for r in doc["rows"]) else 1


def _closing_summary(result: dict, keep: bool) -> None:
    """The run's summary for a person (stderr), after writing the experiment's report page."""
    from .monitor import closing_summary

    page = None
    try:  # nni-robust report, when the command exists: the page the summary points to
        from .report import write_report

        paths = write_report(result["experiment_dir"], experiment_dir=str(Path(result["experiment_dir"]).parent))
        page = str(paths.get("html") or paths.get("md"))
    except ImportError:
        pass
    except Exception as exc:  # the page is a convenience: the run's result stands without it
        logger.warning("Could not write the report page (%s); try: nni-robust report %s", exc, result["id"])
    try:
        text = closing_summary(result, keep=keep, report=page)
    except Exception:  # (never lose the JSON result over the summary)
        logger.exception("Could not write the run's summary.")
        return
    print("\n" + text + "\n", file=sys.stderr, flush=True)


def _summarise(result: dict, keep: bool) -> int:
    _closing_summary(result, keep)
    counts: dict[str, dict[str, int]] = {}
    finals = []
    for t in result["trials"]:
        params = t.get("parameters") or {}
        task = params.get("task", "trial") if isinstance(params, dict) else "trial"
        counts.setdefault(task, {}).setdefault(t["status"], 0)
        counts[task][t["status"]] += 1
        if task == "final" and isinstance(t.get("final"), dict):
            finals.append(t["final"])
    best = result.get("best") or {}
    summary = {"id": result["id"], "status": result["status"], "errors": result.get("errors"),
               "web_ui": f"http://127.0.0.1:{result['port']}" + ("" if keep else " (stopped)"),
               "seconds": round(result["seconds"], 1), "trials": counts,
               "work_dir": result["work_dir"],
               "exported_architecture": str(Path(result["work_dir"]) / "best_architecture.json") if best else None,
               "estimated_reward": best.get("estimate"), "family": best.get("family"),
               "final": finals[-1] if finals else None}
    pareto = Path(result["work_dir"]) / "pareto.md"
    if pareto.exists():  # an Optuna experiment (e.g. a trade-off): its Pareto front and study
        summary.update({"pareto_front": str(pareto), "study": str(pareto.with_name("optuna.db")),
                        "hparams": str(pareto.with_name("tensorboard"))})
    print(json.dumps(summary, indent=2))
    return 0 if result.get("status") == "DONE" and not result.get("failed_trials") else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nni-robust", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    p = sub.add_parser("profile", help="parameters and FLOPs of an architecture (a JSON file or a preset name)")
    p.add_argument("arch", help="architecture JSON file, JSON string, or preset name")
    p.add_argument("--width", type=int, help="init channels (default: the preset's, else 36)")
    p.add_argument("--target-mflops", type=float, help="widen to this many MFLOPs (Eq. 2)")
    p.add_argument("--layout", default="cellwise", help="layout of a non-preset dense-robust architecture")
    p.add_argument("--space", help='space dict as JSON, e.g. \'{"name": "darts", "num_cells": 20}\' '
                   "(default: the file's final_space, or the architecture's kind)")
    p.add_argument("--dataset", default="cifar10")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("presets", help="list the built-in published architectures")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("export", help="write the best architecture of a finished search (from its work dir)")
    p.add_argument("work_dir", help="the search's work dir (tuner classArg work_dir)")
    p.add_argument("-o", "--output", help="where to write the JSON (default: WORK_DIR/best_architecture.json)")
    p.set_defaults(func=cmd_export)

    for name, func, helptext in (("train", cmd_train, "widen an architecture to a target FLOPs, train it "
                                  "adversarially, evaluate it"),
                                 ("evaluate", cmd_evaluate, "clean / FGSM / PGD accuracy (or a robustness report) of "
                                  "a model written by train")):
        p = sub.add_parser(name, help=helptext)
        if name == "train":
            p.add_argument("arch", help="architecture JSON file, JSON string, or preset name")
            p.add_argument("--target-mflops", type=float, help="target FLOPs C_T in MFLOPs (Eq. 2)")
            p.add_argument("--init-channels", type=int, help="use this width instead of a target")
            p.add_argument("--epochs", type=int, help="override final.train.epochs (milestones scale with it)")
            p.add_argument("--batch-size", type=int, help="override final.train.batch_size")
            p.add_argument("-o", "--output", required=True, help="output folder (report, model, TensorBoard)")
            p.add_argument("--nproc", type=int, help="train data-parallel in N processes on this machine (torchrun; "
                           "one GPU each with a CUDA device, gloo on the CPU; default: settings.final.nproc, 1)")
        else:
            p.add_argument("model", help="model.pt written by 'nni-robust train' or a final trial (it carries its "
                           "architecture and dataset)")
            p.add_argument("-o", "--output", help="folder for evaluation.json, or with --suite the robustness report "
                           "(default: the model's folder)")
            p.add_argument("--suite", choices=("quick", "standard", "full"),
                           help="robustness report instead of settings.final.attacks: quick (FGSM, PGD-7/20, strength "
                                "curve, masking checks, 1,000 images), standard (+ PGD-100 and AutoAttack on 1,000 "
                                "images, all test images for PGD), full (+ AutoAttack on all and per strength, "
                                "transfer from --source)")
            p.add_argument("--eps", type=float, help="with --suite: l-inf radius (default 8/255)")
            p.add_argument("--autoattack-images", type=int, help="with --suite: first N test images for AutoAttack")
            p.add_argument("--source", help="with --suite: transfer source, a model.pt or 'resnet18' (trained here)")
        p.add_argument("--config", help="experiment YAML (its tuner classArgs.settings) or settings YAML")
        p.add_argument("--dataset")
        p.add_argument("--data-root")
        p.add_argument("--device")
        p.add_argument("--eval-images", type=int, help="evaluate on the first N test images")
        p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="progress bars with the time left, on stderr (default: when stderr is a terminal)")
        p.set_defaults(func=func)

    p = sub.add_parser("check", help="validate an experiment YAML (and that this machine can run it)")
    p.add_argument("config")
    p.add_argument("--config-only", action="store_true",
                   help="check the config alone, not the data folder, device and GPUs of this machine")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("run", help="run an experiment YAML under nnictl and wait for it")
    p.add_argument("config")
    p.add_argument("--port", type=int, default=0, help="web UI port (0: a free one)")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait (default: no limit)")
    p.add_argument("--keep", action="store_true", help="leave the experiment (and web UI) running")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="one line per trial started or ended and per stage of the search, on stderr (default: on)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="resume a stopped experiment by id (nnictl resume) and wait for it")
    p.add_argument("id", help="the experiment id")
    p.add_argument("--experiment-dir", default="~/nni-experiments",
                   help="its experimentWorkingDirectory (default ~/nni-experiments)")
    p.add_argument("--port", type=int, default=0, help="web UI port (0: a free one)")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait (default: no limit)")
    p.add_argument("--keep", action="store_true", help="leave the experiment (and web UI) running")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="one line per trial started or ended and per stage of the search, on stderr (default: on)")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("benchmark", help="search strategies side by side on a tabular benchmark")
    bench = p.add_subparsers(dest="benchmark", required=True)
    p = bench.add_parser("tabular", help="every strategy of a config against the NAS-Bench-201 robustness table")
    p.add_argument("config", help="benchmark YAML, e.g. benchmarks/nb201-tabular.yml")
    p.add_argument("--table", help="the robustness dataset's folder (default: the config's table)")
    p.add_argument("--seeds", type=int, help="seeds per strategy (default: the config's)")
    p.add_argument("--seed-offset", type=int, help="first seed (default: the config's seed_offset; e.g. 100 for "
                   "seeds the tuned settings were not chosen on)")
    p.add_argument("--budgets", type=int, nargs="+", help="query budgets (default: the config's)")
    p.add_argument("--strategies", nargs="+", help="run only these strategy labels of the config")
    p.add_argument("--out", default="benchmark-tabular", help="output folder (default: ./benchmark-tabular)")
    p.add_argument("--workers", type=int, default=1, help="processes running the runs (default 1; results do not "
                   "depend on it)")
    p.set_defaults(func=cmd_benchmark_tabular)

    p = sub.add_parser("leaderboard", help="every method's experiment one after another: cost, size and robustness "
                       "side by side")
    p.add_argument("config", nargs="?", default="benchmarks/leaderboard-quick.yml",
                   help="leaderboard YAML (default: benchmarks/leaderboard-quick.yml)")
    p.add_argument("--methods", nargs="+", help="run only these methods of the config (its names)")
    p.add_argument("--out", default="leaderboard", help="output folder: leaderboard.{md,csv,json,png} "
                   "(default: ./leaderboard)")
    p.add_argument("--readme", help="replace the section between '<!-- leaderboard:start -->' and "
                   "'<!-- leaderboard:end -->' of this file with the table and the plot")
    p.add_argument("--resume", action="store_true", help="reuse the finished rows of OUT/leaderboard.json whose "
                   "experiment (after the overrides) is unchanged; run the others")
    p.add_argument("--timeout", type=float, help="seconds per experiment (default: the config's timeout)")
    p.add_argument("--experiment-dir", help="NNI's experiment folder (default: each YAML's "
                   "experimentWorkingDirectory, else ~/nni-experiments)")
    p.set_defaults(func=cmd_leaderboard)

    from .report import add_parser as add_report_parser  # nni-robust report EXPERIMENT: the experiment's page
    add_report_parser(sub)
    _describe_commands(sub)
    return parser


def _describe_commands(sub: Any) -> None:
    """Each command's --help starts with what the command does (its one-line help), sub-commands included."""
    for action in sub._choices_actions:  # (argparse keeps the help of each choice here)
        parser = sub.choices.get(action.dest)
        if parser is None:
            continue
        if parser.description is None and action.help:
            parser.description = action.help[0].upper() + action.help[1:] + "."
        for child in parser._actions:
            if isinstance(child, argparse._SubParsersAction):
                _describe_commands(child)


#: NNI 3.0 warns once per unknown torch class when its NAS layers are imported under a newer torch
#: ("<class 'torch.nn.parameter.Buffer'> is found to be not a nn.Module ..."): harmless for the spaces here
#: (tests/test_spaces.py builds every one), and noise at the top of every command's output.
_NNI_TORCH_CLASS_WARNING = r"<class 'torch\..*'> is found to be not a nn.Module"


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if not ns.verbose:
        warnings.filterwarnings("ignore", message=_NNI_TORCH_CLASS_WARNING, category=RuntimeWarning)
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return ns.func(ns)
    except NniRobustError as exc:
        print(f"nni-robust {ns.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
