"""A run's outputs as a few bounded files, and back: how results leave a GPU machine.

    python -m stabnb pack OUT --profile paper        # on the GPU machine, after the run
    python -m stabnb unpack OUT                      # here, from the checkout's root

:func:`pack` writes one gzip-compressed tar of ``results/<profile>/``, ``figures/<profile>/``,
the executed notebooks (``runs/<profile>/**.ipynb``) and each study's config, table and finished
cells (``runs/work/<profile>/*/``; checkpoints stay behind), cut into parts of at most ``part_bytes`` (``bundle.tar.gz.000``, ...), and ``bundle.json``: each part's
size and SHA-256, the member list and what the caller adds (the commit, the wall time).
:func:`unpack` checks every part against ``bundle.json`` before it extracts anything, and
extracts only regular files and folders under those three output folders (tarfile's ``data``
filter: no links, no absolute paths, no ``..``), each written atomically. The run's manifest
(``results/<profile>/manifest.json``) is merged into the one there, not replaced: a run made in
parts (``reproduce --next-part``) keeps every part's record, the newest per notebook. Nothing in
a bundle is ever executed or unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from ..io import atomic_open, read_json, write_json
from .manifest import MANIFEST_VERSION, read_manifest

__all__ = ["MANIFEST", "PART_BYTES", "MAX_PARTS", "bundle_members", "pack", "unpack"]

MANIFEST = "bundle.json"
PART_BYTES = 16 * 2**20
"""The largest part (the GPU machine returns files of at most 16 MiB)."""
MAX_PARTS = 6
"""Parts at most: with ``bundle.json`` and a log, 8 files (what the GPU machine returns)."""
OUTPUTS = ("results", "figures", "runs")


def bundle_members(root: str | os.PathLike, profile: str, *,
                   per_sample: bool = True) -> list[Path]:
    """The files a bundle of ``profile`` holds, relative to ``root``, sorted: the results, the
    figures, the executed notebooks and each study's config, table and finished cells (so a
    study cut off by the end of a lease resumes from them in the next), with each cell's
    per-sample table unless ``per_sample`` is false. Checkpoints stay behind."""
    base = Path(root)
    study = f"runs/work/{profile}/*"
    patterns = (f"results/{profile}/**/*", f"figures/{profile}/**/*",
                f"runs/{profile}/**/*.ipynb", f"{study}/results.csv", f"{study}/config.json",
                f"{study}/cells/*.json")
    found = {p.relative_to(base) for pattern in patterns for p in base.glob(pattern) if p.is_file()}
    return sorted(p for p in found if not p.name.startswith(".") and ".tmp" not in p.name
                  and (per_sample or not p.name.endswith(".per_sample.json")))


def _tar(base: Path, members: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for member in members:
            info = tar.gettarinfo(base / member, arcname=member.as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(base / member, "rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack(root: str | os.PathLike, out_dir: str | os.PathLike, profile: str, *,
         part_bytes: int = PART_BYTES, max_parts: int = MAX_PARTS,
         extra: dict[str, Any] | None = None) -> list[Path]:
    """Pack ``root``'s outputs of ``profile`` into ``out_dir``; return the files written.

    When everything does not fit in ``max_parts`` parts, the cells' per-sample tables are left
    out (``bundle.json`` says so): a run's results must not be lost to its own detail.

    Raises:
        FileNotFoundError: ``root`` holds no ``results/<profile>/`` (nothing was run).
        ValueError: the bundle needs more than ``max_parts`` parts even without them.
    """
    base, out = Path(root), Path(out_dir)
    if not (base / "results" / profile).is_dir():
        raise FileNotFoundError(f"{base / 'results' / profile} does not exist: nothing of the "
                                f"{profile} profile was run here; run `python -m stabnb "
                                f"reproduce --profile {profile}` first.")
    members = bundle_members(base, profile)
    data, left_out = _tar(base, members), []
    if len(data) > max_parts * part_bytes:
        kept = bundle_members(base, profile, per_sample=False)
        left_out = [m.as_posix() for m in members if m not in kept]
        members, data = kept, _tar(base, kept)
    parts = [data[i:i + part_bytes] for i in range(0, len(data), part_bytes)] or [b""]
    if len(parts) > max_parts:
        raise ValueError(f"the {profile} bundle is {len(data) / 2**20:.1f} MiB compressed: "
                         f"{len(parts)} parts of {part_bytes / 2**20:.0f} MiB, over the "
                         f"{max_parts} allowed; leave large figures or notebooks out.")
    written = []
    for index, part in enumerate(parts):
        path = out / f"bundle.tar.gz.{index:03d}"
        with atomic_open(path, "wb") as handle:
            handle.write(part)
        written.append(path)
    write_json(out / MANIFEST, {
        "profile": profile, "members": [m.as_posix() for m in members], "left_out": left_out,
        "parts": [{"name": p.name, "bytes": len(d), "sha256": _sha256(d)}
                  for p, d in zip(written, parts)], **(extra or {})})
    return [*written, out / MANIFEST]


def _checked_parts(folder: Path) -> tuple[dict[str, Any], bytes]:
    manifest = read_json(folder / MANIFEST, fix="pack the run again")
    chunks = []
    for part in manifest["parts"]:
        path = folder / part["name"]
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; copy every bundle.tar.gz.* part "
                                    f"listed in {folder / MANIFEST}.")
        data = path.read_bytes()
        if len(data) != part["bytes"] or _sha256(data) != part["sha256"]:
            raise ValueError(f"{path} does not match {MANIFEST} (size or SHA-256): a broken "
                             "copy; fetch it again.")
        chunks.append(data)
    return manifest, b"".join(chunks)


def _safe_members(tar: tarfile.TarFile, profile: str) -> Iterator[tarfile.TarInfo]:
    for member in tar.getmembers():
        parts = PurePosixPath(member.name).parts
        if not member.isfile() or len(parts) < 3 or parts[0] not in OUTPUTS or ".." in parts:
            raise ValueError(f"bundle member {member.name!r} is not a file under "
                             f"{', '.join(OUTPUTS)}; refusing the whole bundle.")
        if parts[1] != profile and parts[:3] != ("runs", "work", profile):
            raise ValueError(f"bundle member {member.name!r} is not of the {profile} profile.")
        yield member


def unpack(bundle_dir: str | os.PathLike, root: str | os.PathLike = ".") -> list[Path]:
    """Check and extract a bundle made by :func:`pack` into ``root``; return the files written.

    Existing files of the same names are replaced (atomically), except the run manifest,
    merged into the one there; other files are left alone.

    Raises:
        FileNotFoundError: ``bundle.json`` or a part is missing.
        ValueError: a part fails its check, a member lies outside the output folders, or the
            bundled manifest has another version (nothing is written then).
    """
    manifest, data = _checked_parts(Path(bundle_dir))
    base = Path(root)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        files = {}
        for member in _safe_members(tar, manifest["profile"]):
            tarfile.data_filter(member, str(base))      # raises on anything unsafe
            source = tar.extractfile(member)
            assert source is not None                   # a regular file (checked above)
            files[member.name] = source.read()
    runs = {name: _run_records(content) for name, content in files.items()
            if PurePosixPath(name).name == "manifest.json"}
    for name, content in files.items():
        if name in runs:
            _merge_manifest(base / name, runs[name])
        else:
            with atomic_open(base / name, "wb") as handle:
                handle.write(content)
    return [base / name for name in files]


def _run_records(content: bytes) -> dict[str, Any]:
    """A bundled run manifest, checked to be one this checkout reads."""
    arriving = json.loads(content.decode())
    if arriving.get("version") != MANIFEST_VERSION:
        raise ValueError(f"the bundle's manifest has version {arriving.get('version')!r}, this "
                         f"checkout reads {MANIFEST_VERSION}; unpack it with the commit that "
                         "made it (bundle.json names it).")
    return arriving


def _merge_manifest(target: Path, arriving: dict[str, Any]) -> None:
    """Write ``target`` with the records of both manifests, the newer one per notebook."""
    merged = read_manifest(target)
    for key, record in arriving["notebooks"].items():
        held = merged["notebooks"].get(key)
        if held is None or (record.get("finished_at") or "") >= (held.get("finished_at") or ""):
            merged["notebooks"][key] = record
    write_json(target, merged)
