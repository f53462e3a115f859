"""pack/unpack (stabnb.reproduce.bundle) and the GPU machine's one command, .ci/gpu-paper,
run here on the CPU at the smoke profile on a fixture notebook."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from stabnb.__main__ import main
from stabnb.reproduce.bundle import MANIFEST, bundle_members, pack, unpack

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


def _outputs(root: Path, profile: str = "paper", payload: bytes = b"x") -> None:
    for relative in (f"results/{profile}/claims.json", f"figures/{profile}/a.png",
                     f"runs/{profile}/experiments/E3.ipynb", f"runs/work/{profile}/E3-ab-cd/results.csv",
                     f"runs/work/{profile}/E3-ab-cd/cells/a.json",
                     f"runs/work/{profile}/E3-ab-cd/cells/a.per_sample.json",
                     f"runs/work/{profile}/E3-ab-cd/checkpoints/c.pt", f"runs/{profile}/log.txt"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(payload + relative.encode())


def test_pack_then_unpack_gives_back_the_outputs_and_leaves_the_rest(tmp_path: Path) -> None:
    source, bundle, target = tmp_path / "run", tmp_path / "out", tmp_path / "checkout"
    _outputs(source)
    assert [p.as_posix() for p in bundle_members(source, "paper")] == [
        "figures/paper/a.png", "results/paper/claims.json", "runs/paper/experiments/E3.ipynb",
        "runs/work/paper/E3-ab-cd/cells/a.json", "runs/work/paper/E3-ab-cd/cells/a.per_sample.json",
        "runs/work/paper/E3-ab-cd/results.csv"]          # no checkpoints, no logs
    files = pack(source, bundle, "paper", extra={"commit": "abc"})
    assert [f.name for f in files] == ["bundle.tar.gz.000", MANIFEST]
    assert json.loads((bundle / MANIFEST).read_text())["commit"] == "abc"
    (target / "results" / "quick").mkdir(parents=True)
    (target / "results" / "quick" / "keep.json").write_text("{}")
    written = unpack(bundle, target)
    assert len(written) == 6
    for member in bundle_members(source, "paper"):
        assert (target / member).read_bytes() == (source / member).read_bytes()
    assert (target / "results" / "quick" / "keep.json").exists()


def test_a_large_bundle_is_cut_into_parts_and_refused_over_the_limit(tmp_path: Path) -> None:
    _outputs(tmp_path / "run", payload=os.urandom(50_000))
    files = pack(tmp_path / "run", tmp_path / "out", "paper", part_bytes=60_000)
    assert len(files) == 7                        # 6 × 50 kB of noise in 6 parts of 60 kB
    unpack(tmp_path / "out", tmp_path / "checkout")
    files = pack(tmp_path / "run", tmp_path / "out2", "paper", part_bytes=60_000, max_parts=5)
    manifest = json.loads((tmp_path / "out2" / MANIFEST).read_text())
    assert manifest["left_out"] == ["runs/work/paper/E3-ab-cd/cells/a.per_sample.json"]
    assert len(files) == 6
    with pytest.raises(ValueError, match="over the 2 allowed"):
        pack(tmp_path / "run", tmp_path / "out3", "paper", part_bytes=60_000, max_parts=2)


def test_nothing_to_pack_names_the_command_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="reproduce --profile paper"):
        pack(tmp_path, tmp_path / "out", "paper")


def test_a_damaged_or_missing_part_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    _outputs(tmp_path / "run")
    pack(tmp_path / "run", tmp_path / "out", "paper")
    part = tmp_path / "out" / "bundle.tar.gz.000"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match bundle.json"):
        unpack(tmp_path / "out", tmp_path / "checkout")
    part.unlink()
    with pytest.raises(FileNotFoundError, match="is missing"):
        unpack(tmp_path / "out", tmp_path / "checkout")
    assert not (tmp_path / "checkout").exists()


@pytest.mark.parametrize("name, kind", [("../evil.py", tarfile.REGTYPE),
                                        ("stabnb/__init__.py", tarfile.REGTYPE),
                                        ("results/paper/link", tarfile.SYMTYPE),
                                        ("results/quick/claims.json", tarfile.REGTYPE)])
def test_a_member_outside_the_profile_outputs_is_refused(tmp_path: Path, name: str,
                                                         kind: bytes) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, "/etc/passwd" if kind == tarfile.SYMTYPE else ""
        tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    data = buffer.getvalue()
    (tmp_path / "bundle.tar.gz.000").write_bytes(data)
    (tmp_path / MANIFEST).write_text(json.dumps({"profile": "paper", "members": [name], "parts": [
        {"name": "bundle.tar.gz.000", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}]}))
    with pytest.raises(ValueError, match="refusing the whole bundle|not of the paper profile"):
        unpack(tmp_path, tmp_path / "checkout")
    assert not (tmp_path / "checkout").exists()


def test_unpacking_parts_merges_their_run_manifests(tmp_path: Path) -> None:
    def part(name: str, records: dict) -> Path:
        run = tmp_path / name
        _outputs(run)
        (run / "results" / "paper" / "manifest.json").write_text(json.dumps(
            {"version": 1, "notebooks": records}))
        pack(run, tmp_path / f"{name}-out", "paper")
        return tmp_path / f"{name}-out"

    first = part("one", {"a.ipynb": {"status": "ok", "finished_at": "2026-12-01T00:00:00+00:00"},
                         "b.ipynb": {"status": "error", "finished_at": "2026-12-01T00:00:00+00:00"}})
    second = part("two", {"b.ipynb": {"status": "ok", "finished_at": "2026-12-02T00:00:00+00:00"}})
    target = tmp_path / "checkout"
    unpack(first, target)
    unpack(second, target)
    merged = json.loads((target / "results" / "paper" / "manifest.json").read_text())
    assert {k: v["status"] for k, v in merged["notebooks"].items()} == {"a.ipynb": "ok",
                                                                        "b.ipynb": "ok"}
    unpack(first, target)                                  # an older part does not win
    merged = json.loads((target / "results" / "paper" / "manifest.json").read_text())
    assert merged["notebooks"]["b.ipynb"]["status"] == "ok"
    wrong = part("three", {})
    run = tmp_path / "three"
    (run / "results" / "paper" / "manifest.json").write_text('{"version": 99, "notebooks": {}}')
    pack(run, wrong, "paper")
    (target / "results" / "paper" / "claims.json").unlink()
    with pytest.raises(ValueError, match="has version 99"):
        unpack(wrong, target)
    assert not (target / "results" / "paper" / "claims.json").exists()   # nothing written


def test_pack_and_unpack_commands(tmp_path: Path, capsys) -> None:
    _outputs(tmp_path / "run")
    assert main(["pack", str(tmp_path / "out"), "--root", str(tmp_path / "run"),
                 "--note", "wall_s", "12"]) == 0
    assert json.loads((tmp_path / "out" / MANIFEST).read_text())["wall_s"] == "12"
    assert main(["unpack", str(tmp_path / "out"), "--root", str(tmp_path / "checkout")]) == 0
    assert "6 files extracted" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["unpack", str(tmp_path / "nothing")])


def _wheel(folder: Path) -> None:
    """A minimal pure-Python wheel (the script installs whatever .gpu/wheels holds)."""
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "stabnb_probe-0.1-py3-none-any.whl", "w") as whl:
        whl.writestr("stabnb_probe/__init__.py", "")
        whl.writestr("stabnb_probe-0.1.dist-info/METADATA",
                     "Metadata-Version: 2.1\nName: stabnb-probe\nVersion: 0.1\n")
        whl.writestr("stabnb_probe-0.1.dist-info/WHEEL",
                     "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr("stabnb_probe-0.1.dist-info/RECORD", "")


def test_gpu_script_runs_plans_and_packs_on_the_cpu_at_smoke(tmp_path: Path) -> None:
    """The whole of .ci/gpu-paper at a reduced size: wheels installed, plan printed under the
    budget, the notebook run, its outputs packed into at most 8 files, and unpacked back."""
    _wheel(tmp_path / "wheels")
    out, record = tmp_path / "out", tmp_path / "root" / "results" / "quick" / "claims.json"
    record.parent.mkdir(parents=True)      # the notebook's recorded time: what the plan uses
    record.write_text(json.dumps({"provenance": {"device": "cpu"},
                                  "notebooks": [{"path": "verdicts.ipynb", "wall_s": 5.0}]}))
    env = {**os.environ, "PROFILE": "smoke", "DEVICE": "cpu", "PYTHON": sys.executable,
           "WHEELS": str(tmp_path / "wheels"), "OUT_ROOT": str(tmp_path / "root"),
           "DATA": os.environ.get("STABNB_OFFLINE_DATA", str(tmp_path / "nodata")),
           "STABNB_JOBS": "1", "BUDGET": "600"}
    done = subprocess.run([str(ROOT / ".ci" / "gpu-paper"), str(out),
                           str(FIXTURES / "verdicts.ipynb")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    log = (out / "log.txt").read_text()
    assert "Plan of the smoke profile on cpu" in log and "the plan fits" in log
    assert "reproduce exit code 0" in log
    assert len(list(out.iterdir())) <= 8
    assert all(f.stat().st_size <= 16 * 2**20 for f in out.iterdir())
    unpack(out, tmp_path / "checkout")
    assert (tmp_path / "checkout" / "results" / "smoke" / "claims.json").exists()
    assert (tmp_path / "checkout" / "results" / "smoke" / "plan.json").exists()


def test_gpu_script_without_wheels_says_how_to_make_them(tmp_path: Path) -> None:
    env = {**os.environ, "WHEELS": str(tmp_path / "none"), "PYTHON": sys.executable}
    done = subprocess.run([str(ROOT / ".ci" / "gpu-paper"), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "make gpu-bundle" in done.stderr
