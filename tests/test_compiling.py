"""torch.compile of fixed networks (nni_robust.compiling) and the trainer's ``compile`` setting."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import nni_robust.training as training
from nni_robust.attacks import build_attack
from nni_robust.compiling import compile_network
from nni_robust.data import DATASETS, TensorLoader
from nni_robust.errors import ConfigError
from nni_robust.evaluation import evaluate
from nni_robust.spaces._common import PathDropout
from nni_robust.spaces.darts import DartsArch, DartsLayout, DartsNetwork, drop_path
from nni_robust.spaces.dense_rob import DenseRobArch, Layout
from nni_robust.strategies.networks import build_network
from nni_robust.training import AdversarialTrainer, TrainConfig

SPACE = {"layout": "cellwise-4"}


def _final_network(seed: int = 0) -> nn.Module:
    """A digits final network of the dense_rob space (one architecture, C = 4, BatchNorm in every op)."""
    torch.manual_seed(seed)
    arch = DenseRobArch.random(Layout.from_name("cellwise-4"), random.Random(3))
    return build_network(arch, width=4, info=DATASETS["digits"], space=SPACE)


def _data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _passes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, train: bool):
    """Logits, the input gradient and the parameter gradients of one cross-entropy backward."""
    model.train(train)
    for p in model.parameters():
        p.grad = None
    x = x.clone().requires_grad_(True)
    logits = model(x)
    nn.functional.cross_entropy(logits, y).backward()
    return logits.detach(), x.grad.detach(), [p.grad.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("train", [True, False], ids=["train-mode", "eval-mode"])
def test_inductor_compiled_network_matches_eager_outputs_and_gradients(train):
    eager = _final_network()
    compiled_src = _final_network()
    compiled_src.load_state_dict(eager.state_dict())
    compiled = compile_network(compiled_src)  # TorchInductor: generated kernels
    x, y = _data(32)
    ref = _passes(eager, x, y, train)
    got = _passes(compiled, x, y, train)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-3, atol=1e-7)  # the attack's gradient
    assert len(got[2]) == len(ref[2]) > 0
    for g, r in zip(got[2], ref[2]):
        torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-6)
    if train:  # BatchNorm running statistics updated alike (the compiled module shares the buffers)
        for (name, a), b in zip(eager.named_buffers(), compiled_src.buffers()):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=name)
    else:  # the same clean and FGSM accuracies (the evaluation's passes; same batch size: no recompilation)
        loader = TensorLoader(*_data(32, seed=2), batch_size=32, shuffle=False)
        fgsm = build_attack("fgsm", eps=8 / 255, random_start=False)
        ref_acc = evaluate(eager, loader, {"clean": None, "fgsm": fgsm})
        assert evaluate(compiled, loader, {"clean": None, "fgsm": fgsm}) == ref_acc


@pytest.mark.parametrize("kwargs, needle", [
    ({"backend": "tvm-nope"}, "backend must be one of"),
    ({"mode": "fastest"}, "mode must be one of"),
    ({"backend": "eager", "mode": "max-autotune"}, "needs backend 'inductor'"),
])
def test_bad_compile_settings_are_named(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        compile_network(nn.Linear(2, 2), **kwargs)


def test_config_compile_must_be_a_bool():
    with pytest.raises(ConfigError, match=r"TrainConfig.compile must be true or false, but got 'yes'"):
        TrainConfig(compile="yes")


def test_compile_is_refused_for_a_supernet_sampling_per_step():
    with pytest.raises(ConfigError, match="compile=True needs a network with a fixed architecture"):
        AdversarialTrainer(_final_network(), TrainConfig(epochs=1, compile=True), device="cpu",
                           before_step=lambda net, step: None)


def test_trainer_with_compile_trains_like_eager_and_checkpoints_the_plain_network(tmp_path, monkeypatch):
    """The trainer's wiring: every pass (attack, training step, validation) through the compiled module.

    AOTAutograd with eager kernels (``aot_eager``) traces forward and backward as inductor does, without
    its code generation (the generated kernels are checked above), so this runs in seconds.
    """
    calls = []

    def traced(model, **kw):
        calls.append(type(model).__name__)
        return compile_network(model, backend="aot_eager")

    monkeypatch.setattr(training, "compile_network", traced)
    x, y = _data(96, seed=4)
    histories, states = {}, {}
    for compiled in (False, True):
        cfg = TrainConfig(epochs=1, batch_size=32, lr=0.05, attack="pgd", steps=2, eps=8 / 255, step=4 / 255,
                          compile=compiled, seed=0)
        trainer = AdversarialTrainer(_final_network(seed=5), cfg, device="cpu",
                                     checkpoint_path=tmp_path / f"ckpt{compiled}.pt", log_every=0)
        loader = TensorLoader(x, y, batch_size=32, shuffle=True, seed=0, drop_last=True)
        val = TensorLoader(x[:64], y[:64], batch_size=64, shuffle=False)
        histories[compiled] = trainer.fit(loader, val_loader=val)
        states[compiled] = trainer.model.state_dict()
    assert len(calls) == 1, calls  # the compiled run only; one compiled module serves every pass
    for a, b in zip(histories[False], histories[True]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_clean"] == pytest.approx(a["val_clean"], abs=1 / 64 + 1e-9)
    assert not any(k.startswith("_orig_mod") for k in states[True])
    for k, v in states[False].items():
        torch.testing.assert_close(states[True][k], v, rtol=1e-3, atol=1e-5, msg=k)
    ckpt = torch.load(tmp_path / "ckptTrue.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in ckpt["model"])


def test_auxiliary_head_forward_goes_through_the_compiled_wrapper(monkeypatch):
    calls = []

    def traced(model, **kw):
        calls.append(type(model).__name__)
        return compile_network(model, backend="aot_eager")

    monkeypatch.setattr(training, "compile_network", traced)

    class Aux(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
            self.aux = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

        def forward(self, x):
            return self.body(x)

        def forward_with_aux(self, x):
            return self.body(x), self.aux(x)

    cfg = TrainConfig(epochs=1, batch_size=32, attack="fgsm", auxiliary_weight=0.4, compile=True, seed=0)
    trainer = AdversarialTrainer(Aux(), cfg, device="cpu", log_every=0)
    x, y = _data(64)
    hist = trainer.fit(TensorLoader(x, y, batch_size=32, shuffle=False))
    assert calls == ["Aux", "_AuxForward"]
    assert hist[0]["train_loss"] > 0


class _Dropper(PathDropout, nn.Module):
    """Path dropout alone, read as a network's cells read it."""

    def __init__(self):
        super().__init__()
        self.drop_path_prob = 0.0

    def forward(self, x):
        p = self._drop_prob_arg()
        return drop_path(x, p) if isinstance(p, torch.Tensor) or p > 0 else x


def test_path_dropout_probability_changes_without_recompiling():
    """The trainer sets ``drop_path_prob`` every epoch: the compiled network follows the new value without a
    recompilation per value (a float attribute became a guarded constant: 8 recompilations, then eager)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    dropper = _Dropper()
    compiled = compile_network(dropper, backend="aot_eager")
    x = torch.ones(4000, 2)
    torch.manual_seed(0)
    assert torch.equal(compiled(x), x)
    for p in (0.1, 0.3, 0.5, 0.7, 0.9):
        dropper.drop_path_prob = p
        out = compiled(x)
        dropped = (out[:, 0] == 0).float().mean().item()
        assert dropped == pytest.approx(p, abs=0.04), p  # the probability the graph reads is the current one
        kept = out[out[:, 0] != 0]
        torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - p)))
    assert counters["stats"]["unique_graphs"] == 2  # path dropout off, and on: not one per probability
    assert "_drop_path_rate" not in dropper.state_dict()  # checkpoints as before

    # a whole DARTS network, one probability per epoch as the trainer sets them, forward and backward
    torch._dynamo.reset()
    counters.clear()
    lay = DartsLayout.darts(5)
    torch.manual_seed(0)
    net = DartsNetwork(DartsArch.random(lay.cell_types, 2), layout=lay, init_channels=4, num_classes=10,
                       in_channels=1, input_size=8)
    compiled = compile_network(net, backend="aot_eager")
    x, y = _data(16)
    for epoch in range(10):  # more values than torch._dynamo's recompile limit (8)
        net.drop_path_prob = 0.3 * epoch / 10
        nn.functional.cross_entropy(compiled(x), y).backward()
    assert counters["stats"]["unique_graphs"] == 2
