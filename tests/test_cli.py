"""The nni-robust command line: profile, presets, check, and its errors."""

from __future__ import annotations

import json

import pytest

from nni_robust.trial.cli import main


def test_profile_preset_reports_published_size(capsys):
    assert main(["profile", "MSRobNet-1000"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["init_channels"] == 51
    assert out["params_M"] == pytest.approx(3.16, rel=0.01)
    assert out["mflops"] == pytest.approx(1018, rel=0.01)


def test_profile_widens_to_target(capsys):
    assert main(["profile", "MSRobNet-1000", "--target-mflops", "1560"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["init_channels"] > 51
    assert out["mflops"] == pytest.approx(1560, rel=0.05)


def test_presets_lists_the_published_architectures(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("MSRobNet-1000", "MSRobNet-1560", "MSRobNet-2000-P", "RobNet-large", "RobNet-free"):
        assert name in out


def test_bad_inputs_are_clear_errors(capsys, tmp_path):
    assert main(["profile", "MSRobNet-100"]) == 2
    assert "MSRobNet-1000" in capsys.readouterr().err  # close names suggested
    import random

    from nni_robust.spaces.dense_rob import DenseRobArch, Layout

    data = json.loads(DenseRobArch.random(Layout.from_name("cellwise"), random.Random(0)).to_json())
    data["cells"]["c0"]["n2"][0] = "conv_9x9"
    bad = tmp_path / "arch.json"
    bad.write_text(json.dumps(data))
    assert main(["profile", str(bad)]) == 2
    assert "conv_9x9" in capsys.readouterr().err
    assert main(["profile", "MSRobNet-1000", "--dataset", "imagenet"]) == 2
    assert "imagenet" in capsys.readouterr().err


def test_missing_dataset_names_the_folder(capsys, tmp_path):
    assert main(["train", "MSRobNet-1000", "--init-channels", "4", "--dataset", "cifar10",
                 "--data-root", str(tmp_path / "nodata"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nodata" in err and "cifar-10-batches-py" in err


def test_profile_and_train_take_darts_architectures_and_exports(capsys, tmp_path):
    """A DARTS/DSARA architecture (own JSON, or a differentiable search's export) builds in its space."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_darts_spaces import DARTS_V2

    from nni_robust.spaces.darts import DartsArch

    arch = DartsArch.from_darts_genotype(DARTS_V2)
    own = tmp_path / "arch.json"
    own.write_text(arch.to_json())
    assert main(["profile", str(own), "--width", "36", "--space", '{"name": "darts", "num_cells": 20}']) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params_M"] == pytest.approx(3.349, abs=0.01)  # DARTS_V2's published size (no auxiliary head)
    export = tmp_path / "best_architecture.json"
    export.write_text(json.dumps({"arch": json.loads(arch.to_json()), "method": "rnas",
                                  "final_space": {"name": "darts", "num_cells": 20}}))
    assert main(["profile", str(export), "--width", "36"]) == 0
    assert json.loads(capsys.readouterr().out)["params_M"] == pytest.approx(3.349, abs=0.01)
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"arch": json.loads(arch.to_json()), "final_space": {"name": "darts", "num_cells": 3}}))
    assert main(["train", str(small), "--init-channels", "2", "--dataset", "digits", "--device", "cpu",
                 "--epochs", "1", "--batch-size", "256", "--eval-images", "16", "-o", str(tmp_path / "run")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["init_channels"] == 2 and set(report["accuracy"]) >= {"clean", "pgd20"}

    # The robustness report of the saved model: its dataset comes from the file (no --dataset).
    model = tmp_path / "run" / "model.pt"
    assert main(["evaluate", str(model), "--suite", "quick", "--eps", "0.1", "--device", "cpu",
                 "--eval-images", "16", "-o", str(tmp_path / "rob")]) == 0
    out = capsys.readouterr().out
    rob = json.loads((tmp_path / "rob" / "robustness.json").read_text())
    assert rob["num_images"] == 16 and rob["eps"] == pytest.approx(0.1) and rob["suite"] == "quick"
    assert set(rob["accuracy"]) >= {"clean", "fgsm", "pgd7", "pgd20"}
    assert rob["accuracy"]["pgd20"] <= rob["accuracy"]["clean"]
    curve = rob["strength_curve"]["pgd"]
    assert all(a >= b for a, b in zip(curve, curve[1:]))  # non-increasing in eps
    assert "PGD-20" in out and "robustness.json" in out  # the Markdown report and the paths
    assert (tmp_path / "rob" / "robustness.png").stat().st_size > 0
    assert main(["evaluate", str(model), "--dataset", "cifar10"]) == 2
    assert "trained on 'digits'" in capsys.readouterr().err
    assert main(["evaluate", str(model), "--eps", "0.1"]) == 2
    assert "--eps needs --suite" in capsys.readouterr().err
