"""nni_robust.training, .checkpoint and .tb: adversarial training, exact resume, logging."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from nni_robust.checkpoint import (capture_rng_state, load_checkpoint, restore_rng_state,
                                   save_checkpoint)
from nni_robust.data import TensorLoader, load_dataset, make_loaders
from nni_robust.errors import CheckpointError, ConfigError, NniRobustError
from nni_robust.tb import output_dir, summary_writer, tensorboard_dir
from nni_robust.training import FINAL_TRAINING, AdversarialTrainer, TrainConfig, lr_at_epoch


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", split="final")


def _small_loader(digits, n=96, batch_size=32, seed=0, augment=True):
    x, y = digits.train
    return TensorLoader(x, y, batch_size=batch_size, augment=augment, flip=False, seed=seed,
                        max_images=n)


# --------------------------------------------------------------------------- config


def test_defaults_are_msrobnet_supernet_settings():
    c = TrainConfig()
    assert (c.epochs, c.batch_size, c.lr, c.momentum, c.weight_decay) == (400, 64, 0.05, 0.9, 1e-4)
    assert (c.schedule, c.grad_clip, c.label_smoothing, c.attack) == ("cosine", 5.0, 0.0, "pgd")
    assert (c.eps, c.step, c.steps, c.random_start, c.attack_mode) == (8 / 255, 2 / 255, 7, True, "train")
    assert TrainConfig.supernet() == c


def test_final_training_settings_appendix_b2():
    c = TrainConfig.final("cifar10")
    assert (c.epochs, c.batch_size, c.weight_decay, c.label_smoothing) == (110, 48, 5e-4, 0.2)
    assert (c.schedule, c.milestones, c.gamma, c.grad_clip) == ("multistep", (100, 105), 0.1, 5.0)
    s = TrainConfig.final("svhn", epochs=60)
    assert s.milestones == (20, 40, 45) and s.epochs == 60
    assert FINAL_TRAINING["epochs"] == 110


@pytest.mark.parametrize("changes, needles", [
    ({"lr": -1}, ["lr", "-1"]),
    ({"epochs": 0}, ["epochs", "0"]),
    ({"schedule": "step"}, ["schedule", "'step'", "cosine"]),
    ({"attack": "cw"}, ["attack", "'cw'", "pgd"]),
    ({"attack_mode": "test"}, ["attack_mode", "'test'"]),
    ({"label_smoothing": 1.0}, ["label_smoothing", "1.0"]),
    ({"milestones": [5, 3]}, ["milestones", "increasing"]),
    ({"milestones": [500]}, ["milestones", "500"]),
    ({"schedule": "multistep"}, ["milestones"]),
    ({"warmup_epochs": 400}, ["warmup_epochs", "400"]),
    ({"nesterov": True, "momentum": 0.0}, ["nesterov", "momentum"]),
    ({"steps": 2.5}, ["steps", "2.5"]),
    ({"seed": "abc"}, ["seed", "abc"]),
    ({"autocast": "yes"}, ["autocast", "yes"]),
])
def test_invalid_config_names_key_and_value(changes, needles):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**changes)
    for needle in needles:
        assert needle in str(err.value)


def test_from_dict_round_trip_and_unknown_key():
    c = TrainConfig.from_dict({"epochs": 10, "schedule": "multistep", "milestones": [4, 8]})
    assert c.milestones == (4, 8)
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="learning_rate.*Valid keys"):
        TrainConfig.from_dict({"learning_rate": 0.1})


# --------------------------------------------------------------------------- schedules


def test_cosine_schedule_reaches_zero():
    c = TrainConfig(epochs=20)
    lrs = [lr_at_epoch(c, e) for e in range(21)]
    assert lrs[0] == pytest.approx(0.05)
    assert lrs[10] == pytest.approx(0.025)
    assert lrs[20] == pytest.approx(0.0, abs=1e-12)
    assert lrs[19] < 0.001
    assert all(b < a for a, b in zip(lrs, lrs[1:]))


def test_multistep_and_warmup_schedules():
    c = TrainConfig.final()
    assert lr_at_epoch(c, 99) == pytest.approx(0.05)
    assert lr_at_epoch(c, 100) == pytest.approx(0.005)
    assert lr_at_epoch(c, 104) == pytest.approx(0.005)
    assert lr_at_epoch(c, 105) == pytest.approx(0.0005)
    w = TrainConfig(epochs=70, warmup_epochs=10, schedule="multistep", milestones=[45, 60])
    assert [lr_at_epoch(w, e) for e in (0, 4, 9, 10, 44, 45, 60)] == pytest.approx(
        [0.005, 0.025, 0.05, 0.05, 0.05, 0.005, 0.0005])
    wc = TrainConfig(epochs=12, warmup_epochs=2, min_lr=0.001)
    assert lr_at_epoch(wc, 2) == pytest.approx(0.05) and lr_at_epoch(wc, 12) == pytest.approx(0.001)
    assert lr_at_epoch(TrainConfig(schedule="constant"), 399) == 0.05


def test_trainer_applies_the_schedule(digits, tiny_cnn):
    cfg = TrainConfig(epochs=3, batch_size=32, attack="none", schedule="multistep", milestones=[1, 2],
                      gamma=0.5)
    trainer = AdversarialTrainer(tiny_cnn(width=4), cfg, device="cpu", log_every=0)
    history = trainer.fit(_small_loader(digits, n=32))
    assert [h["lr"] for h in history] == pytest.approx([0.05, 0.025, 0.0125])
    assert [h["epoch"] for h in history] == [1, 2, 3]


# --------------------------------------------------------------------------- training


def test_pgd_training_learns_digits(digits, tiny_cnn):
    from nni_robust.attacks import build_attack
    from nni_robust.evaluation import evaluate

    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.2, schedule="constant", steps=2, step=4 / 255,
                      weight_decay=5e-4)
    train, val = make_loaders(digits, batch_size=64, augment=False, max_train=512, max_val=192)
    model = tiny_cnn(width=12)
    before = evaluate(model, val, {"clean": None})["clean"]
    history = AdversarialTrainer(model, cfg, device="cpu", log_every=0).fit(train)
    assert len(history) == 3
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert 0 <= history[-1]["train_acc"] <= 1 and history[-1]["images_per_s"] > 0
    pgd = build_attack("pgd", eps=8 / 255, step=4 / 255, steps=2)
    after = evaluate(model, val, {"clean": None, "pgd": pgd})
    assert before < 0.3 and after["clean"] > 0.5  # chance is 0.1
    assert 0.1 < after["pgd"] <= after["clean"]


def _resume_setup(tmp_path, digits, tiny_cnn, **kw):
    cfg = TrainConfig(epochs=4, batch_size=16, steps=2, step=4 / 255, label_smoothing=0.1, **kw)
    draws = []

    def before_step(model, step):  # a supernet would sample its architecture here
        draws.append(random.random())
        model.head.weight.data.mul_(1.0 + 1e-3 * draws[-1])

    return cfg, draws, before_step


def test_resume_is_bit_identical(tmp_path, digits, tiny_cnn):
    val = TensorLoader(*digits.val, batch_size=64, shuffle=False, max_images=64)
    cfg, draws_a, hook_a = _resume_setup(tmp_path, digits, tiny_cnn)
    straight = AdversarialTrainer(tiny_cnn(width=4, seed=1), cfg, device="cpu", before_step=hook_a,
                                  log_every=0)
    hist_a = straight.fit(_small_loader(digits, n=48, batch_size=16), val)

    _, draws_b, hook_b = _resume_setup(tmp_path, digits, tiny_cnn)
    ckpt = tmp_path / "run" / "trainer.pt"
    first = AdversarialTrainer(tiny_cnn(width=4, seed=1), cfg, device="cpu", checkpoint_path=ckpt,
                               before_step=hook_b, log_every=0,
                               on_epoch_end=lambda epoch, metrics: epoch == 2)
    assert len(first.fit(_small_loader(digits, n=48, batch_size=16), val)) == 2
    assert ckpt.is_file() and load_checkpoint(ckpt)["epoch"] == 2

    torch.manual_seed(999)  # disturb every global generator: the checkpoint must restore them
    random.seed(999)
    np.random.seed(999)
    second = AdversarialTrainer(tiny_cnn(width=4, seed=7), cfg, device="cpu", checkpoint_path=ckpt,
                                before_step=hook_b, log_every=0)
    assert second.epoch == 2
    hist_b = second.fit(_small_loader(digits, n=48, batch_size=16, seed=0), val)

    assert draws_a == draws_b
    sa, sb = straight.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    for ha, hb in zip(hist_a, hist_b):
        assert {k: v for k, v in ha.items() if "time" not in k and "per_s" not in k} == \
               {k: v for k, v in hb.items() if "time" not in k and "per_s" not in k}
    # a finished run resumes as finished
    done = AdversarialTrainer(tiny_cnn(width=4), cfg, device="cpu", checkpoint_path=ckpt)
    assert done.epoch == 4 and len(done.fit(_small_loader(digits, n=48, batch_size=16))) == 4


def test_bf16_autocast_channels_last_and_options_run(digits, tiny_cnn):
    cfg = TrainConfig(epochs=2, batch_size=16, autocast=True, channels_last=True, nesterov=True,
                      grad_clip=None, warmup_epochs=1, attack="fgsm", step=10 / 255,
                      random_start=True, seed=None)
    trainer = AdversarialTrainer(tiny_cnn(width=4), cfg, device="cpu", log_every=0)
    assert isinstance(trainer.config.seed, int)  # drawn and recorded
    history = trainer.fit(_small_loader(digits, n=32, batch_size=16))
    assert all(math.isfinite(h["train_loss"]) for h in history)
    assert [h["lr"] for h in history] == pytest.approx([0.05, 0.05])
    assert trainer.model.features[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_checkpoint_of_another_run_is_refused(tmp_path, digits, tiny_cnn):
    ckpt = tmp_path / "c.pt"
    cfg = TrainConfig(epochs=1, batch_size=16, attack="none")
    AdversarialTrainer(tiny_cnn(width=4), cfg, device="cpu", checkpoint_path=ckpt).fit(
        _small_loader(digits, n=16, batch_size=16))
    with pytest.raises(CheckpointError, match="lr: 0.05 there, 0.1 here"):
        AdversarialTrainer(tiny_cnn(width=4), cfg.replace(lr=0.1), device="cpu", checkpoint_path=ckpt)
    with pytest.raises(CheckpointError, match="does not fit"):
        AdversarialTrainer(tiny_cnn(width=8), cfg, device="cpu", checkpoint_path=ckpt)


def test_attack_mode_controls_batchnorm_updates(digits, tiny_cnn):
    """In train mode the attack's forward passes update BN statistics (Madry / authors' code)."""
    counts = {}
    for mode in ("train", "eval"):
        model = tiny_cnn(width=4)
        cfg = TrainConfig(epochs=1, batch_size=16, steps=3, attack_mode=mode)
        AdversarialTrainer(model, cfg, device="cpu", log_every=0).fit(
            _small_loader(digits, n=32, batch_size=16))
        counts[mode] = int(model.features[1].num_batches_tracked)
    assert counts == {"train": 2 * (3 + 1), "eval": 2}


def test_divergence_is_an_error(digits, tiny_cnn, tmp_path):
    model = tiny_cnn(width=4)
    model.head.bias.data.fill_(float("nan"))
    cfg = TrainConfig(epochs=2, batch_size=16, attack="none")
    trainer = AdversarialTrainer(model, cfg, device="cpu", checkpoint_path=tmp_path / "c.pt")
    with pytest.raises(NniRobustError, match="diverged"):
        trainer.fit(_small_loader(digits, n=16, batch_size=16))
    assert not (tmp_path / "c.pt").exists()


def test_tensorboard_scalars_written(tmp_path, digits, tiny_cnn):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = TrainConfig(epochs=2, batch_size=16, attack="fgsm", step=8 / 255)
    with summary_writer(tmp_path / "tb") as writer:
        AdversarialTrainer(tiny_cnn(width=4), cfg, device="cpu", writer=writer, log_every=1).fit(
            _small_loader(digits, n=32, batch_size=16),
            TensorLoader(*digits.val, batch_size=32, shuffle=False, max_images=32))
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/acc", "train/lr", "val/clean", "step/loss"} <= tags
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    assert len(acc.Scalars("step/loss")) == 4


# --------------------------------------------------------------------------- checkpoint & tb


def test_rng_state_round_trip():
    state = capture_rng_state()
    a = (random.random(), float(np.random.rand()), float(torch.rand(())))
    restore_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == a
    with pytest.raises(CheckpointError, match="python"):
        restore_rng_state({"torch": torch.get_rng_state()})


def test_save_checkpoint_is_atomic(tmp_path):
    path = tmp_path / "sub" / "ck.pt"
    save_checkpoint(path, epoch=3, weights=torch.arange(4))
    with pytest.raises(CheckpointError, match="ck.pt"):
        save_checkpoint(path, epoch=4, bad=lambda: None)  # cannot be pickled
    data = load_checkpoint(path)
    assert data["epoch"] == 3 and torch.equal(data["weights"], torch.arange(4))
    assert sorted(p.name for p in path.parent.iterdir()) == ["ck.pt", "ck.pt.sha256"]  # no temporary files left


def test_load_checkpoint_errors_name_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_checkpoint(bad)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list"):
        load_checkpoint(tmp_path / "list.pt")


def test_output_dirs_follow_nni(monkeypatch, tmp_path):
    monkeypatch.setenv("NNI_OUTPUT_DIR", str(tmp_path / "trial"))
    assert output_dir("elsewhere") == tmp_path / "trial"
    assert tensorboard_dir("elsewhere") == tmp_path / "trial" / "tensorboard"
    assert tensorboard_dir().is_dir()
    monkeypatch.delenv("NNI_OUTPUT_DIR")
    assert output_dir(tmp_path / "mine") == tmp_path / "mine"
    assert tensorboard_dir(tmp_path / "tbx") == tmp_path / "tbx"
    monkeypatch.chdir(tmp_path)
    default = output_dir()
    assert default.parent.name == "runs" and default.is_dir()
    assert tensorboard_dir() == default / "tensorboard"


# --------------------------------------------------------------------------- DARTS-style final training


def test_cutout_zeroes_one_clipped_square_per_image():
    from nni_robust.data import cutout

    torch.manual_seed(0)
    x = torch.rand(256, 3, 16, 16) + 0.1  # no zeros before
    y = cutout(x, 4)
    holes = (y == 0).all(dim=1)  # (B, H, W): a hole is zero in every channel
    assert torch.equal((y == 0).any(dim=1), holes)
    sizes = holes.sum(dim=(1, 2))
    assert int(sizes.max()) == 16 and int(sizes.min()) >= 4  # 4x4, clipped at the borders
    rows, cols = holes.any(dim=2), holes.any(dim=1)
    assert torch.equal(sizes, rows.sum(1) * cols.sum(1))  # each hole is one rectangle
    assert torch.equal(y[~holes.unsqueeze(1).expand_as(y)], x[~holes.unsqueeze(1).expand_as(x)])
    assert (sizes == 16).float().mean() > 0.3  # interior centres give full squares
    assert cutout(x, 0) is x


class _AuxCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.head = torch.nn.Linear(4, 10)
        self.aux = torch.nn.Linear(4, 10)
        self.drop_path_prob = 0.0
        self.seen_drop = []
        self.aux_calls = 0

    def forward(self, x):
        return self.head(self.body(x))

    def forward_with_aux(self, x):
        self.aux_calls += 1
        self.seen_drop.append(self.drop_path_prob)
        h = self.body(x)
        return self.head(h), self.aux(h)


def test_auxiliary_loss_and_drop_path_schedule(digits):
    torch.manual_seed(0)
    model = _AuxCNN()
    cfg = TrainConfig(epochs=4, batch_size=16, attack="fgsm", step=8 / 255, auxiliary_weight=0.4,
                      drop_path_prob=0.3, cutout=4)
    AdversarialTrainer(model, cfg, device="cpu", log_every=0).fit(_small_loader(digits, n=32, batch_size=16))
    assert model.aux_calls == 8  # the training forward uses the auxiliary head; the attack does not
    assert model.seen_drop == pytest.approx([0.0, 0.0, 0.075, 0.075, 0.15, 0.15, 0.225, 0.225])
    assert model.aux.weight.grad is not None and model.aux.weight.grad.abs().sum() > 0

    # without the weight, the auxiliary head is not used (and gets no gradient)
    plain = _AuxCNN()
    AdversarialTrainer(plain, cfg.replace(auxiliary_weight=0.0), device="cpu", log_every=0).fit(
        _small_loader(digits, n=32, batch_size=16))
    assert plain.aux_calls == 0 and plain.aux.weight.grad is None


def test_auxiliary_and_drop_path_need_model_support(tiny_cnn):
    with pytest.raises(ConfigError, match="forward_with_aux"):
        AdversarialTrainer(tiny_cnn(width=4), TrainConfig(auxiliary_weight=0.4), device="cpu")
    with pytest.raises(ConfigError, match="drop_path_prob attribute"):
        AdversarialTrainer(tiny_cnn(width=4), TrainConfig(drop_path_prob=0.2), device="cpu")
    with pytest.raises(ConfigError, match="drop_path_prob"):
        TrainConfig(drop_path_prob=1.0)
    with pytest.raises(ConfigError, match="cutout"):
        TrainConfig(cutout=-1)


def test_checkpoint_from_before_a_new_setting_still_resumes(tmp_path, digits, tiny_cnn):
    ckpt = tmp_path / "c.pt"
    cfg = TrainConfig(epochs=2, batch_size=16, attack="none")
    trainer = AdversarialTrainer(tiny_cnn(width=4), cfg.replace(epochs=1), device="cpu", checkpoint_path=ckpt)
    trainer.fit(_small_loader(digits, n=16, batch_size=16))
    state = load_checkpoint(ckpt)
    for key in ("cutout", "auxiliary_weight", "drop_path_prob"):  # as written before these settings existed
        del state["config"][key]
    state["config"]["epochs"] = 2
    save_checkpoint(ckpt, **state)
    resumed = AdversarialTrainer(tiny_cnn(width=4), cfg, device="cpu", checkpoint_path=ckpt)
    assert resumed.epoch == 1
