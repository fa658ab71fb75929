"""End to end through NNI's remote training service (``platform: remote``), on this machine.

The test starts its own OpenSSH server (``sshd -D`` as a child process, only on
127.0.0.1, a free port, a temporary host key, a temporary user key, its own
``sshd_config``; Debian's ``openssh-server``), points a ``platform: remote``
experiment at it, and runs the quick MSRobNet search (budgets shrunk, every
stage kept: supernets -> random topologies -> family selection -> evolution ->
export -> final training) through it. The "remote machine" gets a home of its
own (``SetEnv HOME=...`` in the sshd config), so NNI's trial keeper, the
uploaded code and every trial's output folder live there, as on another host,
while the work dir, the supernet folder and the data root are one shared
folder (the NFS of a real cluster) given as absolute paths. NNI's remote
worker runs ``pip install nni --upgrade`` at start; ``PIP_NO_INDEX=1`` in the
session environment keeps that offline (it finds nni installed).

The local run it must agree with in kind (the same trial tasks, the same
metric keys up to the widths, an exported architecture of the same space
that the final trial trained, the same final report keys, the same seeded
first random topologies) is the session's run of
``experiments/msrobnet-quick.yml`` as it is, the one
``tests/test_e2e_nnictl.py`` checks: in the full suite that module has run
it already (the ``nnictl`` fixture runs a config once per session), so this
module adds one small experiment; run alone, it starts that run alongside.
Skipped, with the reason printed, only when ``sshd`` is not installed
(``apt-get install -y openssh-server``, as ``.ci/run`` does) or does not
start. Run with ``-s`` to see both runs' trial lists.
"""

from __future__ import annotations

import collections
import concurrent.futures
import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nni_robust.spaces.dense_rob import DenseRobArch, Layout
from nni_robust.trial.experiment import free_port

from conftest import Nnictl

pytestmark = pytest.mark.slow

# msrobnet-quick at the smallest budget that still runs every stage
SHRINK = {
    "strategy_args.widths": [4, 6, 8],          # 3 widths: the least the leave-one-out family selection takes
    "strategy_args.num_random": 3,             # the least the family selection takes (>= 3 topologies)
    "strategy_args.population": 2,
    "strategy_args.tournament": 1,
    "strategy_args.steps": 1,
    "settings.val_fraction": 0.5,                # 719 supernet training images
    "settings.supernet.epochs": 1,
    "settings.supernet.steps": 2,
    "settings.supernet.batch_size": 256,
    "settings.evaluation.calib_images": 64,
    "settings.evaluation.eval_images": 72,
    "settings.final.train": {"epochs": 1, "milestones": [1], "batch_size": 256, "steps": 2, "channels_last": True},
    "settings.final.eval_images": 50,
    "settings.final.eval_batch_size": 50,
}
TIMEOUT = 900
ENV_ID = "remote-worker1"  # NNI's id of the first machine of machineList


# --------------------------------------------------------------------------- the SSH server


class LocalSshd:
    """An OpenSSH server on 127.0.0.1:``port`` for the current user, in ``folder``: its own config, host
    key and authorized key, the remote side's ``HOME`` in ``folder/remote_home``; started as a child
    process and stopped by its own pid."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.user = getpass.getuser()
        self.home = folder / "remote_home"
        self.key = folder / "user_key"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log = folder / "sshd.log"

    def start(self) -> None:
        """Start it; raises ``RuntimeError`` with the reason when it cannot."""
        sshd = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
                                             if os.path.exists(p)), None)
        keygen = shutil.which("ssh-keygen")
        if sshd is None or keygen is None:
            raise RuntimeError("sshd (OpenSSH server) is not installed; install it with "
                               "'apt-get update && apt-get install -y openssh-server' (as .ci/run does).")
        self.home.mkdir()
        host_key = self.folder / "host_key"
        for path in (host_key, self.key):
            subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "nni-robust-test", "-f", str(path)],
                           check=True, capture_output=True)
        (self.folder / "authorized_keys").write_text((self.folder / "user_key.pub").read_text())
        if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", mode=0o755)  # OpenSSH's privilege-separation folder (root only)
        config = self.folder / "sshd_config"
        config.write_text("\n".join([
            "ListenAddress 127.0.0.1",
            f"HostKey {host_key}",
            f"AuthorizedKeysFile {self.folder / 'authorized_keys'}",
            "PidFile none",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            f"AllowUsers {self.user}",
            "UsePAM no",
            "StrictModes no",  # the keys live in a temporary folder
            "UseDNS no",
            "X11Forwarding no",
            "PrintMotd no",
            "Subsystem sftp internal-sftp",  # NNI uploads the code and writes its trial keeper's config by SFTP
            # the remote side's environment: a home of its own (NNI puts ~/nni-experiments there) and
            # an offline pip for NNI's 'pip install nni --upgrade'
            f"SetEnv HOME={self.home} PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
            "LogLevel VERBOSE", ""]))
        for attempt in range(3):
            self.port = free_port()
            with open(self.log, "wb") as log:
                self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config), "-p", str(self.port)],
                                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if self._wait_ready(timeout=15.0):
                return
            self.stop()
        raise RuntimeError(f"sshd did not start: {self.log.read_text(errors='replace')[-2000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as s:
                    if s.recv(64).startswith(b"SSH-2.0"):
                        return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        """Stop the server and its session processes, each by its own pid."""
        if self.proc is None or self.proc.poll() is not None:
            return
        import psutil

        try:
            sessions = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            sessions = []
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for child in sessions:
            try:
                child.terminate()
            except psutil.NoSuchProcess:
                pass

    def logged_in(self) -> bool:
        """Someone (NNI's manager) has logged in."""
        return "Accepted publickey" in self.log.read_text(errors="replace")

    def machine(self) -> dict:
        """The ``machineList`` entry of this server (NNI 3.0's remote config keys)."""
        return {"host": "127.0.0.1", "port": self.port, "user": self.user, "sshKeyFile": str(self.key),
                "pythonPath": str(Path(sys.executable).parent)}  # the venv with nni and nni_robust


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = LocalSshd(tmp_path_factory.mktemp("sshd"))
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        reason = f"remote training service test skipped: {exc}"
        print(reason)
        pytest.skip(reason)
    yield server
    server.stop()
    assert server.proc is not None and server.proc.poll() is not None, "sshd still running"


# --------------------------------------------------------------------------- the two runs


@pytest.fixture(scope="module")
def runs(nnictl, sshd, tmp_path_factory):
    """(local run, remote run, shared folder, pid of NNI's trial keeper on the remote side): the remote run is
    the shrunk quick search, the local run the session's msrobnet-quick run (when it is not cached yet, it
    starts once NNI has logged in to the SSH server, i.e. after the remote one's config check, which changes
    the working directory, and the two run at the same time)."""
    shared = tmp_path_factory.mktemp("shared")  # what every machine mounts at the same path
    (shared / "data").mkdir()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(nnictl.run, "msrobnet-quick", timeout=TIMEOUT, tuner_args={
            **SHRINK, "work_dir": str(shared / "work"), "strategy_args.supernet_dir": str(shared / "supernets"),
            "settings.data_root": str(shared / "data")},
            overrides={"trainingService": {"platform": "remote", "machineList": [sshd.machine()]}})
        deadline = time.monotonic() + 300
        while not pending.done() and not sshd.logged_in() and time.monotonic() < deadline:
            time.sleep(1.0)
        local = nnictl.run("msrobnet-quick")  # exactly as tests/test_e2e_nnictl.py asks for it (one cached run)
        remote = pending.result()
    _print_trials("remote", remote)
    _print_trials("local", local)
    return local, remote, shared, _trial_keeper_pid(sshd, remote)


def _print_trials(name: str, run: dict) -> None:
    print(f"\n{name} run {run['id']}: {run['status']}, {len(run['trials'])} trials, {run['seconds']:.0f} s")
    for t in sorted(run["trials"], key=lambda t: t["parameters"]["model_id"]):
        final = t["final"] or {}
        print(f"  {t['trialJobId']}  {t['status']:<9}  model {t['parameters']['model_id']:>2}  "
              f"{t['parameters']['task']:<8}  default {final.get('default', float('nan')):.4f}")


def _remote_trial_dir(sshd: LocalSshd, run: dict, trial: dict) -> Path:
    return sshd.home / "nni-experiments" / run["id"] / "environments" / ENV_ID / "trials" / trial["trialJobId"]


def _trial_keeper_pid(sshd: LocalSshd, run: dict) -> int | None:
    pid_files = sorted((sshd.home / "nni-experiments" / run["id"] / "environments" / ENV_ID).glob(
        "trial_keeper*/trial_keeper.pid"))
    return int(pid_files[-1].read_text()) if pid_files else None


def _keys(trials: list[dict]) -> dict[str, tuple[set, set]]:
    """task -> (final metric keys, intermediate metric keys) that every trial of the task reported, with the
    widths in the keys (``reward_c8``) written ``reward_c*`` and without an evaluation's ``est_<family>``
    (reported for the families whose fit succeeded: that depends on the rewards), ``fit_rmse`` and ``fit_p<i>``
    (reported when the chosen family's fit succeeded, one per parameter of that family: the two runs have
    different widths, so they may choose different families and fail different fits)."""
    def kinds(keys) -> set[str]:
        return {re.sub(r"_c\d+$", "_c*", k) for k in keys if not k.startswith(("est_", "fit_p", "fit_rmse"))}

    out: dict[str, tuple[set, set]] = {}
    for t in trials:
        keys = (kinds(t["final"]), kinds(k for m in t["intermediate"] for k in m))
        old = out.setdefault(t["parameters"]["task"], keys)
        out[t["parameters"]["task"]] = (old[0] & keys[0], old[1] & keys[1])
    return out


# --------------------------------------------------------------------------- tests


def test_every_trial_succeeded_through_the_remote_service(runs, sshd):
    local, remote, _, _ = runs
    assert remote["status"] == "DONE", remote
    assert remote["failed_trials"] == [] and remote["trials"]
    assert all(t["status"] == "SUCCEEDED" for t in remote["trials"])
    # every trial ran on the "remote machine": its output folder is in the remote home, none on the local service
    for t in remote["trials"]:
        folder = _remote_trial_dir(sshd, remote, t)
        assert (folder / "trial.stdout").exists(), folder
    assert not (Path(remote["experiment_dir"]) / "environments" / "local-env").exists()
    log = (Path(remote["experiment_dir"]) / "log" / "nnimanager.log").read_text()
    assert "Remote training service started" in log
    assert sum(f"Created trial {t['trialJobId']} on worker" in log for t in remote["trials"]) == len(remote["trials"])
    # the uploaded code folder and the trial keeper lived in the remote home too
    assert list((sshd.home / "nni-experiments" / remote["id"] / "environments" / ENV_ID / "upload").glob("*.tgz"))


def test_same_tasks_and_metrics_as_the_local_run(runs):
    local, remote, _, _ = runs
    assert local["status"] == "DONE" and local["failed_trials"] == []
    tasks = collections.Counter(t["parameters"]["task"] for t in remote["trials"])
    assert set(tasks) == {t["parameters"]["task"] for t in local["trials"]} == {"supernet", "evaluate", "final"}
    widths = SHRINK["strategy_args.widths"]
    assert tasks["supernet"] == len(widths) and tasks["final"] == 1
    assert SHRINK["strategy_args.num_random"] <= tasks["evaluate"] <= \
        SHRINK["strategy_args.num_random"] + SHRINK["strategy_args.steps"]
    keys = _keys(remote["trials"])
    assert keys == _keys(local["trials"])
    assert {"probe_acc_clean", "probe_acc_adv", "train_loss"} <= keys["supernet"][1]
    assert {"default", "fit_ok", "reward_c*", "acc_clean_c*", "acc_adv_c*", "mflops_c*"} <= keys["evaluate"][0]
    for t in Nnictl.by_task(remote, "evaluate"):  # one of each per width
        assert {f"{k}_c{w}" for k in ("reward", "acc_clean", "acc_adv", "mflops") for w in widths} <= set(t["final"])
    assert {"default", "acc_clean", "acc_fgsm", "acc_pgd20", "mflops", "params_M"} <= keys["final"][0]
    assert {"train_loss", "train_acc", "lr"} <= keys["final"][1]
    # the tuner's seeded random topologies: the remote run's are the local run's first ones (same seed)
    first = SHRINK["strategy_args.num_random"]
    samples = [[json.dumps(t["parameters"]["sample"], sort_keys=True) for t in
                sorted(Nnictl.by_task(run, "evaluate"), key=lambda t: t["parameters"]["model_id"])][:first]
               for run in (local, remote)]
    assert samples[0] == samples[1]


def test_shared_folders_hold_the_supernets_and_the_export(runs, sshd):
    local, remote, shared, _ = runs
    # the supernet trials wrote into the shared folder, the evaluation trials read from it
    for w in SHRINK["strategy_args.widths"]:
        assert (shared / "supernets" / f"c{w}" / "supernet.pt").is_file()
    evaluate = Nnictl.by_task(remote, "evaluate")
    assert all(t["parameters"]["args"]["supernet_dir"] == str(shared / "supernets") for t in evaluate)
    # the export is in the shared work dir and is what the final trial trained
    assert Path(remote["work_dir"]) == shared / "work"
    best = json.loads((shared / "work" / "best_architecture.json").read_text())
    local_best = json.loads((Path(local["work_dir"]) / "best_architecture.json").read_text())
    assert set(best) == set(local_best)
    layout = Layout.from_name(remote["yaml"]["settings"]["space"]["layout"])
    arch = DenseRobArch.from_sample(best["sample"], layout)
    (final,) = Nnictl.by_task(remote, "final")
    assert DenseRobArch.from_sample(final["parameters"]["args"]["sample"], layout) == arch
    # the per-trial output stayed on the machine that ran the trial (not in the shared folder)
    report = json.loads((_remote_trial_dir(sshd, remote, final) / "final_report.json").read_text())
    (local_final,) = Nnictl.by_task(local, "final")
    local_report = json.loads((Nnictl.trial_dir(local, local_final) / "final_report.json").read_text())
    assert set(report) == set(local_report)
    assert set(report["accuracy"]) == set(local_report["accuracy"]) == {"clean", "fgsm", "pgd7", "pgd20", "pgd100"}
    assert DenseRobArch.from_json(report["arch"]) == arch
    assert report["accuracy"]["pgd20"] <= report["accuracy"]["clean"]
    assert list((_remote_trial_dir(sshd, remote, final) / "tensorboard").glob("final-*/events.out.tfevents.*"))
    assert not (shared / "work" / "trials").exists()


def test_experiment_and_trial_keeper_stopped(runs):
    import psutil

    _, remote, _, trial_keeper = runs
    # run_experiment stopped the experiment by its id: its web server is gone ...
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", remote["port"]), timeout=2.0).close()
    # ... and so is the trial keeper NNI started on the remote side
    assert trial_keeper is not None
    deadline = time.monotonic() + 30
    while psutil.pid_exists(trial_keeper) and time.monotonic() < deadline:
        time.sleep(0.5)
    alive = psutil.pid_exists(trial_keeper) and psutil.Process(trial_keeper).status() != psutil.STATUS_ZOMBIE
    if alive:  # leave nothing behind, then fail
        psutil.Process(trial_keeper).terminate()
    assert not alive, f"NNI's trial keeper (pid {trial_keeper}) survived the experiment's stop"
