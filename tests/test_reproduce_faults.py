"""The reproduce command under faults: SIGKILL, SIGINT/SIGTERM, two runs at once, leftover
temporary files, paths that travel, an unwritable out-root.

The runner runs as a subprocess (``python -m stabnb reproduce``) in its own session with
SIGINT ignored, as under ``setsid``/``nohup``; ``tests/fixtures/sleeps.ipynb`` sleeps
``sleep_s`` seconds to have something to stop. Leftover processes are found in ``/proc``:
the workers name the out-root on their command line, the kernels in their environment
(``STABNB_WORK_DIR``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from stabnb.__main__ import main
from stabnb.io import TEMP_NAME, exclusive, remove_stale_temps, temp_sibling
from stabnb.reproduce.records import portable

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="signals and /proc: Linux")

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def nbs(tmp_path: Path, monkeypatch) -> Path:
    """A private copy of the fixture notebooks, and a private data cache (cleaned by the runs)."""
    monkeypatch.setenv("STABNB_CACHE", str(tmp_path / "cache"))
    return Path(shutil.copytree(FIXTURES, tmp_path / "nbs"))


def set_sleep(path: Path, seconds: float) -> None:
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = "\n".join(f"sleep_s = {seconds!r}" if line.startswith("sleep_s") else line
                            for line in cell.source.splitlines())
    nbformat.write(nb, path)


def argv(nbs: Path, out: Path, *extra: str) -> list[str]:
    return ["reproduce", str(nbs / "sleeps.ipynb"), str(nbs / "verdicts.ipynb"), "--profile",
            "smoke", "--device", "cpu", "--jobs", "2", "--out-root", str(out), *extra]


def start(nbs: Path, out: Path) -> subprocess.Popen:
    """The runner in a new session with SIGINT ignored (inherited through exec)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT),
                                                                   os.environ.get("PYTHONPATH"))))}
    return subprocess.Popen([sys.executable, "-m", "stabnb", *argv(nbs, out)], env=env,
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))


def wait_until(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition.__doc__}")
        time.sleep(0.2)


def sleeping(out: Path) -> bool:
    """the sleep cell to be running"""
    for partial in (out / "runs/smoke").glob(".sleeps.*.tmp.ipynb"):
        try:
            nb = json.loads(partial.read_text())
        except (OSError, ValueError):
            continue
        if any("time.sleep" in "".join(c["source"])
               and c["metadata"].get("papermill", {}).get("status") == "running"
               for c in nb["cells"]):
            return True
    return False


def processes_of(out: Path) -> list[int]:
    """Live processes naming ``out`` on their command line or in their environment."""
    mark = str(out).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (proc / "stat").read_text().split(")")[-1].split()[0] == "Z":
                continue
            if mark in (proc / "cmdline").read_bytes() or mark in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:  # gone, or not ours
            continue
    return found


def temp_files(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if TEMP_NAME.fullmatch(p.name)]


def strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def test_sigkill_kills_workers_and_kernels_and_the_rerun_cleans_up_and_matches(
        nbs: Path, tmp_path: Path, capsys) -> None:
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert main(argv(nbs, reference)) == 0
    expected = json.loads((reference / "results/smoke/claims.json").read_text())["claims"]

    set_sleep(nbs / "sleeps.ipynb", 60.0)
    runner = start(nbs, out)
    wait_until(lambda: sleeping(out))
    # A temporary file of a killed writer in the data cache, and files that only look like one.
    cache = tmp_path / "cache"
    fd, stale = temp_sibling(cache / "mnist.pt")
    os.close(fd)
    (cache / ".notes.tmp").write_text("not ours: no random part")
    runner.kill()
    runner.wait()
    wait_until(lambda: not processes_of(out), timeout=10)  # workers and kernels died with it
    assert temp_files(out)  # the killed notebook's partial output

    set_sleep(nbs / "sleeps.ipynb", 0.0)
    assert main(argv(nbs, out)) == 0
    assert temp_files(out, cache) == [] and (cache / ".notes.tmp").exists()
    assert not Path(stale).exists()
    data = json.loads((out / "results/smoke/claims.json").read_text())
    assert data["claims"] == expected
    assert {nb["path"]: nb["status"] for nb in data["notebooks"]} == {
        "sleeps.ipynb": "ok", "verdicts.ipynb": "ok"}

    # Outputs that travel: no recorded path names this machine's folders.
    manifest = json.loads((out / "results/smoke/manifest.json").read_text())
    for text in strings(data) + strings(manifest):
        assert not os.path.isabs(text) and str(tmp_path) not in text, text
    assert data["notebooks"][0]["executed"] == "runs/smoke/sleeps.ipynb"
    assert data["notebooks"][0]["result"] == "results/smoke/sleeps.json"
    assert str(tmp_path) not in (out / "results/smoke/REPORT.md").read_text()


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_to_the_group_stops_the_run_cleanly(signum: int, code: int, nbs: Path,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "out"
    set_sleep(nbs / "sleeps.ipynb", 60.0)
    runner = start(nbs, out)
    wait_until(lambda: sleeping(out))
    stopped = time.monotonic()
    os.killpg(runner.pid, signum)
    log = runner.communicate(timeout=60)[0]
    assert runner.returncode == code, log
    assert time.monotonic() - stopped < 30  # not the 60 s sleep
    assert f"{signal.Signals(signum).name}: stopping the running notebooks" in log
    data = json.loads((out / "results/smoke/claims.json").read_text())
    status = {nb["path"]: nb["status"] for nb in data["notebooks"]}
    assert status["sleeps.ipynb"] == "interrupted"
    manifest = json.loads((out / "results/smoke/manifest.json").read_text())
    assert {key: record["status"] for key, record in manifest["notebooks"].items()} == {
        key: value for key, value in status.items() if key in manifest["notebooks"]}
    assert "This run was interrupted" in (out / "results/smoke/REPORT.md").read_text()
    wait_until(lambda: not processes_of(out), timeout=10)
    assert temp_files(out) == []


def test_second_run_on_an_out_root_is_refused_or_waits(nbs: Path, tmp_path: Path,
                                                       capsys) -> None:
    out = tmp_path / "out"
    set_sleep(nbs / "sleeps.ipynb", 3.0)
    first = start(nbs, out)
    wait_until(lambda: (out / ".stabnb.lock.json").exists())

    assert main(argv(nbs, out)) == 2
    err = capsys.readouterr().err
    assert f"stabnb: error: {out} is in use by another stabnb run (pid {first.pid} on " in err
    assert "pass --wait (wait=True) to start when it does." in err
    assert first.poll() is None

    assert main(argv(nbs, out, "--wait")) == 0
    assert first.communicate(timeout=60)[1] is None and first.returncode == 0
    # The second run started once the first had finished: it found both notebooks done.
    lines = capsys.readouterr().out
    assert "unchanged    sleeps.ipynb" in lines and "unchanged    verdicts.ipynb" in lines
    claims = json.loads((out / "results/smoke/claims.json").read_text())["claims"]
    assert [c["name"] for c in claims] == ["slept", "bounded", "large"]


def test_lock_names_its_holder_and_is_free_again_after(tmp_path: Path) -> None:
    with exclusive(tmp_path) as holder:
        assert json.loads((tmp_path / ".stabnb.lock.json").read_text()) == holder
        assert holder["pid"] == os.getpid()
    assert not (tmp_path / ".stabnb.lock.json").exists()
    with exclusive(tmp_path):
        pass


def test_stale_temps_removed_only_if_ours_and_older(tmp_path: Path) -> None:
    now = time.time()
    old, new = temp_sibling(tmp_path / "a/b.pt")[1], temp_sibling(tmp_path / "a/c.json")[1]
    notebook = temp_sibling(tmp_path / "runs/x.ipynb", ".ipynb")[1]
    other = tmp_path / "a/.editor.swp.tmp"
    other.write_text("")
    for path in (old, notebook, other):
        os.utime(path, (now - 60, now - 60))
    assert sorted(remove_stale_temps([tmp_path, tmp_path / "a"], before=now - 1)) == sorted(
        [Path(old), Path(notebook)])
    assert Path(new).exists() and other.exists()


def test_unwritable_out_root_exits_2_with_the_message(nbs: Path, tmp_path: Path,
                                                      capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(argv(nbs, blocker / "out")) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"stabnb: error: cannot write to {blocker / 'out'}: Not a directory; "
                            "choose a writable folder (check its permissions or the setting "
                            "that points there).\n")
    assert "Traceback" not in captured.out + captured.err


def test_recorded_messages_name_no_folder_of_this_machine(tmp_path: Path) -> None:
    assert portable(f"cannot read {tmp_path}/results/x.json", tmp_path) == (
        "cannot read <out-root>/results/x.json")
    assert portable(f"in {ROOT}/stabnb/io.py", tmp_path / "elsewhere") == (
        "in <project>/stabnb/io.py")
