"""One process per run folder: the lock is taken, refused while its owner lives, taken over when stale,
and released however the run ends."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fmdconv.cli import main
from fmdconv.train import LOCK_FILE, Recipe, RunFolderInUseError, RunLock, Trainer, train

TINY = Recipe(
    model="resnet18",
    conv="static",
    width=0.125,
    stem="imagenet",
    dataset="synthetic",
    image_size=16,
    subset=32,
    test_subset=16,
    epochs=1,
    batch_size=16,
    precise_bn_images=0,
)


def write_lock(folder: Path, pid: int, host: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname()}) + "\n")
    return path


def finished_pid() -> int:
    """The pid of a process that has exited (and been reaped): no process has it now."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_live_owner_refuses_a_second_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    lock = write_lock(out, os.getpid())  # this test's own process: alive
    owner = lock.read_text()
    with pytest.raises(RunFolderInUseError, match=rf"{out} is in use by another run \(process {os.getpid()}"):
        train(TINY, out, progress=False, tensorboard=False)
    flags = ["--dataset", "synthetic", "--width", "0.125", "--image-size", "16", "--subset", "32"]
    assert main(["train", *flags, "--out", str(out), "--no-progress", "--no-tensorboard"]) == 2
    assert f"process {os.getpid()}" in capsys.readouterr().err
    assert lock.read_text() == owner  # the owner's lock stays
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # and nothing else was written


def test_a_stale_lock_is_taken_over_held_while_running_and_released(tmp_path: Path) -> None:
    out = tmp_path / "run"
    write_lock(out, finished_pid())
    trainer = Trainer(TINY, out, progress=False, tensorboard=False)
    assert json.loads((out / LOCK_FILE).read_text()) == {"pid": os.getpid(), "host": socket.gethostname()}
    with pytest.raises(RunFolderInUseError, match="in use by another run"):
        RunLock(out).acquire()  # a second owner, even in this process
    trainer.run()
    assert not (out / LOCK_FILE).exists() and (out / "last.pt").exists()


def test_the_lock_is_released_when_a_run_fails_or_is_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        train(TINY.replace(precision="fp16"), tmp_path / "refused", device="cpu")
    assert not (tmp_path / "refused").exists()  # a run refused at its start leaves no folder behind

    def interrupted(self: Trainer, loader: object) -> Iterator[object]:
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(Trainer, "_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(TINY, tmp_path / "stopped", progress=False, tensorboard=False)
    assert not (tmp_path / "stopped" / LOCK_FILE).exists()


def test_a_lock_of_another_host_or_without_an_owner_is_refused(tmp_path: Path) -> None:
    write_lock(tmp_path, finished_pid(), host="elsewhere.invalid")
    with pytest.raises(RunFolderInUseError, match=r"on host elsewhere\.invalid .* cannot be checked"):
        RunLock(tmp_path).acquire()
    (tmp_path / LOCK_FILE).write_text("")
    with pytest.raises(RunFolderInUseError, match="names no owner"):
        RunLock(tmp_path).acquire()
    (tmp_path / LOCK_FILE).unlink()
    with RunLock(tmp_path) as lock:
        assert lock.held and (tmp_path / LOCK_FILE).exists()
    assert not (tmp_path / LOCK_FILE).exists()
