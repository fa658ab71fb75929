"""The NAS-Bench-201 space (spaces/nb201.py) and the tabular robustness benchmark (nni_robust/tabular.py).

A tiny table in the layout of Jung et al.'s robustness dataset is written by the tests; the real
CIFAR-10 files are checked when ``../shared/data/nb201-robustness`` (or ``$NNI_ROBUST_NB201``) exists.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from nni_robust.data import DatasetInfo
from nni_robust.errors import ArchitectureError, ConfigError, DatasetNotFoundError
from nni_robust.spaces.nb201 import (EDGES, NB201_OPS, NNI_OPS, NUM_ARCHS, NB201Arch, NB201Cell, NB201Network,
                                     all_archs, all_strings, build_nb201_space, canonical_string, edge_labels,
                                     load_nb201_table)
from nni_robust.tabular import Objective, load_robustness_table

ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
#: Isomorphic pairs: hand-derived (a dead node, a skip chain, a cell with no path) and two taken from the
#: dataset's meta.json (intermediate nodes renumbered).
ISO_PAIRS = [
    ("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
     "|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"),
    ("|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|nor_conv_3x3~2|",
     "|skip_connect~0|+|skip_connect~0|none~1|+|none~0|none~1|nor_conv_3x3~2|"),
    (ALL_NONE, "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"),
    ("|avg_pool_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|avg_pool_3x3~0|skip_connect~1|skip_connect~2|",
     "|skip_connect~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|skip_connect~2|"),
    ("|skip_connect~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|nor_conv_3x3~0|skip_connect~1|nor_conv_1x1~2|",
     "|skip_connect~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"),
]
#: Not isomorphic for the dataset: nodes 1 and 2 swapped, but node 2's 'none' edge from node 1 leaves a
#: zero term in node 2's sum (the dataset's rule keeps zero terms).
NOT_ISO = ("|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_1x1~2|",
           "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_1x1~2|")
INFO = DatasetInfo("cifar10", 10, 3, 8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _real_root() -> Path:
    env = os.environ.get("NNI_ROBUST_NB201")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared/data/nb201-robustness"


# --------------------------------------------------------------------------- strings, JSON, samples


def test_string_round_trip_and_enumeration():
    strings = all_strings()
    assert len(strings) == NUM_ARCHS == 15625 and len(set(strings)) == NUM_ARCHS
    assert strings[0] == ALL_NONE and all_archs()[-1].ops == ("avg_pool_3x3",) * 6
    for s in strings[::7]:
        arch = NB201Arch.from_string(s)
        assert arch.to_string() == s and str(arch) == s
        assert NB201Arch.from_index(arch.index) == arch and strings[arch.index] == s
    arch = NB201Arch.from_string("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|none~2|")
    assert arch.ops == ("nor_conv_3x3", "none", "nor_conv_1x1", "skip_connect", "avg_pool_3x3", "none")
    assert EDGES == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
    # index: base 5, first edge most significant, ops in NB201_OPS order
    assert arch.index == ((((3 * 5 + 0) * 5 + 2) * 5 + 1) * 5 + 4) * 5 + 0
    assert NB201Arch.from_string("  " + ALL_CONV3 + "\n").to_string() == ALL_CONV3
    assert NB201Arch.random(5) == NB201Arch.random(5)


@pytest.mark.parametrize("text, match", [
    ("|nor_conv_3x3~0|+|none~0|none~1|", "3 node groups"),
    ("nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "starts and ends with"),
    ("|conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", r"'conv_3x3~0'.*Did you mean"),
    ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", r"node 2 token 'none~1' has source 1, expected 0"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", r"node 2 group 'none~0' must list 2"),
    ("|none~0|+|none~0|none-1|+|none~0|none~1|none~2|", r"node 2 token 'none-1' is not 'op~1'"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2| |", "starts and ends with|3 node groups|node 3"),
])
def test_string_parsing_is_strict(text, match):
    with pytest.raises(ArchitectureError, match=match):
        NB201Arch.from_string(text)


def test_arch_validation_json_and_samples():
    with pytest.raises(ArchitectureError, match="6 operation names"):
        NB201Arch(("none",) * 5)
    with pytest.raises(ArchitectureError, match="edge 1->2: unknown operation 'conv'"):
        NB201Arch(("none", "none", "conv", "none", "none", "none"))
    arch = NB201Arch.from_string(ALL_CONV3)
    assert NB201Arch.from_json(arch.to_json()) == arch and json.loads(arch.to_json()) == {"space": "nb201",
                                                                                         "arch": ALL_CONV3}
    with pytest.raises(ArchitectureError, match="'darts'"):
        NB201Arch.from_json({"space": "darts", "arch": ALL_CONV3})
    with pytest.raises(ArchitectureError, match="Unknown keys"):
        NB201Arch.from_json({"arch": ALL_CONV3, "cells": 1})
    # NNI samples: the labels and op names of NNI's hub NasBench201
    a = NB201Arch.from_string("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|none~2|")
    sample = a.to_sample()
    assert sample == {"cell/0_1": "conv_3x3", "cell/0_2": "none", "cell/1_2": "conv_1x1",
                      "cell/0_3": "skip_connect", "cell/1_3": "avg_pool_3x3", "cell/2_3": "none"}
    assert list(sample) == list(edge_labels()) and set(sample.values()) <= set(NNI_OPS)
    assert NB201Arch.from_sample(sample) == a
    bare = a.to_sample(scope=None)
    assert list(bare) == ["0_1", "0_2", "1_2", "0_3", "1_3", "2_3"] and NB201Arch.from_sample(bare) == a
    dataset_names = {k: op for k, op in zip(edge_labels(), a.ops)}
    assert NB201Arch.from_sample({**dataset_names, "__arch__": "ignored"}) == a
    assert NB201Arch.parse(sample) == a and NB201Arch.parse(a.to_string()) == a and NB201Arch.parse(a.to_json()) == a
    for arch in random.Random(0).sample(all_archs(), 50):
        assert NB201Arch.from_sample(arch.to_sample()) == arch
    with pytest.raises(ArchitectureError, match=r"Missing edges \['2_3'\]"):
        NB201Arch.from_sample({k: v for k, v in sample.items() if k != "cell/2_3"})
    with pytest.raises(ArchitectureError, match="Unknown label 'cell/0_4'"):
        NB201Arch.from_sample({**sample, "cell/0_4": "none"})
    with pytest.raises(ArchitectureError, match="'cell/0_1'.*'sep_conv_3x3'"):
        NB201Arch.from_sample({**sample, "cell/0_1": "sep_conv_3x3"})
    with pytest.raises(ArchitectureError, match="both name edge 0_1"):
        NB201Arch.from_sample({**sample, "0_1": "none"})


# --------------------------------------------------------------------------- isomorphism


def test_canonical_form_known_cases():
    for a, b in ISO_PAIRS:
        assert canonical_string(a) == canonical_string(b) == NB201Arch.from_string(b).canonical()
    assert canonical_string(NOT_ISO[0]) != canonical_string(NOT_ISO[1])
    assert canonical_string(ALL_NONE) == "#+#+#"
    # the hand-computed key of a skip chain: node 1 = 0, node 2 = #+0, node 3 = #+#+(#+0)@nor_conv_3x3
    assert canonical_string(ISO_PAIRS[1][0]) == "#+#+(#+0)@nor_conv_3x3"
    assert canonical_string(ALL_CONV3) != canonical_string(ALL_CONV3.replace("nor_conv_3x3~2", "nor_conv_1x1~2"))
    with pytest.raises(ArchitectureError):
        canonical_string("|none~0|")


# --------------------------------------------------------------------------- a tiny table


#: The tiny table: representative string -> (clean, pgd at eps 0.5/1/2, fgsm at eps 0.5/1).
TINY_REPS = {
    ALL_CONV3: (0.90, (0.50, 0.30, 0.10), (0.60, 0.40)),
    ISO_PAIRS[0][0]: (0.80, (0.60, 0.50, 0.20), (0.70, 0.55)),
    ISO_PAIRS[1][0]: (0.95, (0.30, 0.10, 0.00), (0.50, 0.20)),
    ALL_NONE: (0.10, (0.10, 0.10, 0.10), (0.10, 0.10)),
}
TINY_EPS = {"pgd@Linf": [0.5, 1.0, 2.0], "fgsm@Linf": [0.5, 1.0], "aa_square@Linf": [1.0]}


def _write_table(root: Path, *, drop: str | None = None) -> dict:
    """Write the tiny table under ``root`` (uids sparse and unordered); returns the meta dict."""
    ids, reps, uid = {}, {}, 3
    for rep in TINY_REPS:
        reps[rep] = str(uid)
        ids[str(uid)] = {"nb201-string": rep, "isomorph": str(uid)}
        uid += 4
    for a, b in ISO_PAIRS[:3]:
        ids[str(uid)] = {"nb201-string": b, "isomorph": reps[a]}
        uid += 2
    ids = dict(reversed(list(ids.items())))
    meta = {"ids": ids, "epsilons": TINY_EPS}
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "cifar10").mkdir(exist_ok=True)
    files = {
        "data/meta.json": meta,
        "cifar10/clean_accuracy.json": {"cifar10": {"clean": {"accuracy": {reps[s]: v[0]
                                                                           for s, v in TINY_REPS.items()}}}},
        "cifar10/pgd@Linf_accuracy.json": {"cifar10": {"pgd@Linf": {"accuracy": {reps[s]: list(v[1])
                                                                                 for s, v in TINY_REPS.items()}}}},
        "cifar10/fgsm@Linf_accuracy.json": {"cifar10": {"fgsm@Linf": {"accuracy": {reps[s]: list(v[2])
                                                                                   for s, v in TINY_REPS.items()}}}},
    }
    for name, data in files.items():
        if name != drop:
            (root / name).write_text(json.dumps(data))
    return meta


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    _write_table(tmp_path)
    return tmp_path


def test_tiny_table_loads_and_answers(tiny_root: Path):
    table = load_robustness_table(tiny_root)
    assert len(table) == 7 and table.num_classes == 4
    assert table.uids.tolist() == [3, 7, 11, 15, 19, 21, 23]  # sorted, sparse
    assert table.attacks == ("fgsm", "pgd") and table.missing_attacks == ("aa_square@Linf",)
    # the isomorphism of meta.json: the pairs share a uid and every value
    for a, b in ISO_PAIRS[:3]:
        assert table.uid(a) == table.uid(b) and table.row(a) != table.row(b)
        assert table.lookup(a, "pgd@1.0") == table.lookup(b, "pgd@1.0")
    assert table.lookup(ISO_PAIRS[0][1], "fgsm@0.5") == pytest.approx(0.70)
    # objectives
    values = table.lookup([ALL_CONV3, ISO_PAIRS[0][1], ISO_PAIRS[1][0], ALL_NONE], "pgd@1")
    np.testing.assert_allclose(values, [0.30, 0.50, 0.10, 0.10])
    reward = table.lookup([ALL_CONV3, ISO_PAIRS[0][0], ISO_PAIRS[1][0]], "reward(pgd@1.0, lam=0.25)")
    np.testing.assert_allclose(reward, [0.75 * 0.90 + 0.25 * 0.30, 0.75 * 0.80 + 0.25 * 0.50,
                                        0.75 * 0.95 + 0.25 * 0.10])
    assert table.lookup(ALL_CONV3, {"adv": "pgd@2", "lam": 0.5}) == pytest.approx(0.5)
    assert table.optimum("clean") == (0.95, 11, ISO_PAIRS[1][0])
    assert table.optimum("pgd@1.0") == (0.5, 7, ISO_PAIRS[0][0])
    assert table.optimum("reward(fgsm@1)")[0] == pytest.approx(0.675)  # lam defaults to 0.5
    # quantiles over the 4 measured architectures (0.1, 0.1, 0.3, 0.5) or the 7 strings
    assert table.quantile("pgd@1", 0.5) == pytest.approx(0.2)
    assert table.quantile("pgd@1", 0.5, over="strings") == pytest.approx(0.1)  # 0.1 x 4, 0.3, 0.5 x 2
    np.testing.assert_allclose(table.quantile("pgd@1", [0.0, 1.0]), [0.1, 0.5])
    assert table.top_threshold("pgd@1", 0.25) == pytest.approx(0.35)
    assert not table.values("clean").flags.writeable
    # strings meta.json does not list: by isomorphism when a canonical form is given
    unlisted = ISO_PAIRS[3][0]
    with pytest.raises(ArchitectureError, match="canonicalize="):
        table.row(ISO_PAIRS[0][0].replace("nor_conv_3x3~0", "nor_conv_1x1~0"))
    nb = load_nb201_table(tiny_root)
    assert nb.uid(ISO_PAIRS[0][0].replace("nor_conv_3x3~0", "nor_conv_1x1~0")) == 7  # dead node 1
    with pytest.raises(ArchitectureError, match="no listed string is isomorphic"):
        nb.row(unlisted)
    ag = nb.agreement(canonical_string)
    assert ag.exact and (ag.table_classes, ag.key_classes, ag.strings_disagreeing) == (4, 4, 0)
    # a key that merges everything: every table class is merged into one key class
    coarse = nb.agreement(lambda s: 0)
    assert (coarse.merged_key_classes, coarse.split_table_classes, coarse.strings_disagreeing) == (1, 0, 7)
    assert nb.agreement(lambda s: s).split_table_classes == 3


def test_objective_parsing_and_validation(tiny_root: Path):
    assert Objective.parse("clean") == Objective() and str(Objective()) == "clean"
    assert Objective.parse("pgd@1") == Objective("pgd", 1.0, 1.0) and str(Objective("pgd", 1.0)) == "pgd@1"
    obj = Objective.parse("reward(fgsm@0.5, lam=0.2)")
    assert (obj.attack, obj.eps, obj.lam) == ("fgsm", 0.5, 0.2) and Objective.parse(str(obj)) == obj
    assert Objective.parse({"adv": "pgd@2.0"}).lam == 0.5
    for bad, match in [("pgd", "valid forms"), ("pgd@-1", "valid forms"), ("reward(pgd@1, lam=2)", r"\[0, 1\]"),
                       ({"adv": "pgd@1", "weight": 1}, "'adv' and optionally 'lam'"), (3, "valid forms")]:
        with pytest.raises(ConfigError, match=match):
            Objective.parse(bad)
    table = load_robustness_table(tiny_root)
    with pytest.raises(ConfigError, match=r"not measured at eps 4/255; valid eps .*\['0.5', '1', '2'\]"):
        table.values("pgd@4")
    with pytest.raises(ConfigError, match=r"unknown attack 'cw'.*\['fgsm', 'pgd'\]"):
        table.values("cw@1")
    with pytest.raises(ConfigError, match=r"aa_square@Linf_accuracy\.json does not exist"):
        table.values("aa_square@1")


@pytest.mark.parametrize("case, error, match", [
    ("no root", DatasetNotFoundError, "nb201-missing does not exist"),
    ("no meta", DatasetNotFoundError, r"data/meta\.json does not exist: expected \{\"ids\""),
    ("bad json", ConfigError, r"meta\.json is not valid JSON"),
    ("no ids", ConfigError, r"meta\.json: expected .*'ids' is missing"),
    ("bad entry", ConfigError, r"meta\.json: ids\['3'\] must be"),
    ("bad isomorph", ConfigError, r"isomorph'\] = '999' is not a uid"),
    ("rep not self", ConfigError, "a representative must name itself"),
    ("no clean", DatasetNotFoundError, r"cifar10/clean_accuracy\.json does not exist"),
    ("no dataset", DatasetNotFoundError, r"cifar100 does not exist.*found: \['cifar10'\]"),
    ("short list", ConfigError, r"pgd@Linf_accuracy\.json: uid '\d+' has \[0\.5\]; expected a list of 3"),
    ("missing rep", ConfigError, r"fgsm@Linf_accuracy\.json: no accuracy for 1 representative uid"),
    ("bad key path", ConfigError, r"clean_accuracy\.json: expected .* \['cifar10'\]\['clean'\]\['accuracy'\]"),
])
def test_loader_errors_name_the_file(tmp_path: Path, case: str, error: type, match: str):
    root = tmp_path / "nb201"
    meta = _write_table(root, drop="data/meta.json" if case == "no meta" else
                        "cifar10/clean_accuracy.json" if case == "no clean" else None)
    dataset = "cifar10"
    meta_path, ids = root / "data/meta.json", meta["ids"]
    if case == "no root":
        root = tmp_path / "nb201-missing"
    elif case == "bad json":
        meta_path.write_text("{not json")
    elif case == "no ids":
        meta_path.write_text(json.dumps({"epsilons": TINY_EPS}))
    elif case == "bad entry":
        ids["3"] = {"string": ALL_CONV3}
        meta_path.write_text(json.dumps(meta))
    elif case == "bad isomorph":
        ids["3"]["isomorph"] = "999"
        meta_path.write_text(json.dumps(meta))
    elif case == "rep not self":
        ids["7"]["isomorph"] = "3"  # uid 19 names 7, which names 3
        meta_path.write_text(json.dumps(meta))
    elif case == "no dataset":
        dataset = "cifar100"
    elif case in ("short list", "missing rep"):
        key = "pgd@Linf" if case == "short list" else "fgsm@Linf"
        path = root / f"cifar10/{key}_accuracy.json"
        data = json.loads(path.read_text())
        acc = data["cifar10"][key]["accuracy"]
        if case == "short list":
            acc["7"] = [0.5]
        else:
            del acc["7"]
        path.write_text(json.dumps(data))
    elif case == "bad key path":
        (root / "cifar10/clean_accuracy.json").write_text(json.dumps({"cifar10": {"accuracy": {}}}))
    with pytest.raises(error, match=match):
        load_robustness_table(root, dataset)


# --------------------------------------------------------------------------- networks


def test_cell_computes_its_graph():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5)
    identity = NB201Cell(NB201Arch.from_string("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"), 3)
    assert torch.equal(identity(x), x)
    # node 2 = x (skip), node 3 = x + node 2 = 2x
    double = NB201Cell(NB201Arch.from_string("|none~0|+|skip_connect~0|none~1|+|skip_connect~0|none~1|"
                                             "skip_connect~2|"), 3)
    assert torch.allclose(double(x), 2 * x)
    pool = NB201Cell(NB201Arch.from_string("|avg_pool_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|"), 3)
    assert torch.allclose(pool(x), torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
    zero = NB201Cell(NB201Arch.from_string(ALL_NONE), 3)
    assert len(zero.edges) == 0 and torch.equal(zero(x), torch.zeros_like(x))


def test_network_size_and_forward():
    # NAS-Bench-201's CIFAR-10 networks (C=16, N=5): 1.53M parameters with nor_conv_3x3 everywhere,
    # 0.073M with no cell operation (hand-counted; NNI's hub NasBench201 frozen to the same cell agrees).
    assert sum(p.numel() for p in NB201Network(ALL_CONV3).parameters()) == 1_531_546
    assert sum(p.numel() for p in NB201Network(ALL_NONE).parameters()) == 73_306
    torch.manual_seed(0)
    net = NB201Network(ISO_PAIRS[4][0], init_channels=4, cells_per_stage=1, num_classes=10, in_channels=3,
                       input_size=8, mean=INFO.mean, std=INFO.std)
    assert len(net.cells) == 5  # 3 stages of 1 cell and 2 residual blocks
    out = net(torch.rand(2, 3, 8, 8))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    odd = NB201Network(ALL_CONV3, init_channels=2, cells_per_stage=1, input_size=7, in_channels=1)
    assert odd(torch.rand(1, 1, 7, 7)).shape == (1, 10)
    with pytest.raises(ConfigError, match="input_size must be an int >= 4"):
        NB201Network(ALL_CONV3, input_size=2)
    built = build_nb201_space({"name": "nb201", "cells_per_stage": 1}, INFO, 4, arch=ALL_CONV3)
    assert isinstance(built, NB201Network) and built.arch == NB201Arch.from_string(ALL_CONV3)
    assert built(torch.rand(1, 3, 8, 8)).shape == (1, 10)
    assert build_nb201_space({"name": "nb201"}, INFO, 4, arch=NB201Arch.from_string(ALL_CONV3).to_sample()).arch \
        == built.arch
    with pytest.raises(ConfigError, match="has no supernet"):
        build_nb201_space({"name": "nb201"}, INFO, 4)
    with pytest.raises(ConfigError, match="'cells'"):
        build_nb201_space({"name": "nb201", "cells": 5}, INFO, 4, arch=ALL_CONV3)


def test_registered_as_a_space():
    from nni_robust.spaces.registry import get_space, kind_of_arch

    kind = get_space("nb201")
    arch = NB201Arch.from_string(ALL_CONV3)
    assert kind_of_arch(arch) is kind and kind.arch_type is NB201Arch
    assert kind.parse_arch(arch.to_json()) == arch and kind.parse_arch(ALL_CONV3) == arch
    assert kind.from_sample(arch.to_sample(), {"name": "nb201"}) == arch
    net = kind.build({"name": "nb201", "cells_per_stage": 1}, INFO, 4, arch)
    assert isinstance(net, NB201Network) and net.arch == arch
    assert kind.model_space == "nni_robust.spaces.nb201.NB201Space"


def test_nni_space_matches_the_hub_and_freezes():
    from nni.nas.hub.pytorch import NasBench201
    from nni.nas.space import model_context

    from nni_robust.spaces.nb201 import NB201Space

    space = NB201Space(init_channels=4, cells_per_stage=1, input_size=8)
    ours = space.simplify()
    hub = NasBench201(stem_out_channels=4, num_modules_per_stack=1).simplify()
    assert list(ours) == list(hub) == list(edge_labels())
    assert all(list(ours[k].values) == list(hub[k].values) == list(NNI_OPS) for k in ours)
    assert space.arch == NB201Arch.from_string(ALL_NONE)  # the default sample
    arch = NB201Arch.from_string(ISO_PAIRS[4][1])
    frozen = space.freeze(arch.to_sample())
    assert frozen.arch == arch and frozen(torch.rand(2, 3, 8, 8)).shape == (2, 10)
    with model_context(arch.to_sample()):
        assert NB201Space(init_channels=4, cells_per_stage=1, input_size=8).arch == arch
    assert len(NB201_OPS) == len(NNI_OPS) == 5


# --------------------------------------------------------------------------- the real files


def test_real_cifar10_table():
    root = _real_root()
    if not (root / "data/meta.json").is_file():
        pytest.skip(f"the NAS-Bench-201 robustness data is not at {root} (set NNI_ROBUST_NB201 to its folder)")
    table = load_nb201_table(root)
    assert len(table) == 15625 and table.num_classes == 6466
    assert set(table.strings) == set(all_strings())
    assert table.uids.tolist() == list(range(15625))
    value, uid, string = table.optimum("pgd@1.0")
    assert value == pytest.approx(0.588, abs=1e-9)
    assert table.lookup(string, "pgd@1") == value and table.uid(string) == uid
    assert table.optimum("clean")[0] == pytest.approx(0.946)
    assert table.quantile("pgd@1", 0.5) == pytest.approx(0.347)
    assert table.top_threshold("pgd@1") == pytest.approx(0.546, abs=1e-3)
    assert table.lookup(ALL_NONE, "clean") == pytest.approx(0.1)
    for a, b in ISO_PAIRS:
        assert table.uid(a) == table.uid(b)
    assert table.uid(NOT_ISO[0]) != table.uid(NOT_ISO[1])
    values = table.lookup(all_strings(), "pgd@1")
    assert values.shape == (15625,) and values.max() == pytest.approx(0.588)
    # the canonical form groups the 15,625 strings exactly as meta.json's isomorph field
    ag = table.agreement(canonical_string)
    assert (ag.strings, ag.table_classes, ag.key_classes) == (15625, 6466, 6466)
    assert ag.exact and ag.strings_disagreeing == 0
