"""Model archives are unpacked safely on every Python the package supports: with tarfile's `data`
filter where it exists (3.11.4+), by hand where it does not (Debian 12's python3 is 3.11.2). Each bad
archive is refused before anything is written."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import ROOT

from gateway.multimodel import sources

SOURCES = ROOT / "gateway" / "multimodel" / "sources.py"
DEBIAN_PYTHON = Path("/usr/bin/python3")


def archive(path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o4755  # a setuid bit: not restored
    return info


def archives(tmp: Path) -> dict[str, Path]:
    return {
        "good": archive(
            tmp / "good.tar.gz",
            (member("model.pth"), b"weights"),
            (member("code/inference.py"), b"def model_fn(d): ..."),
            (member("latest", tarfile.SYMTYPE, "model.pth"), b""),
        ),
        "absolute": archive(tmp / "absolute.tar.gz", (member("/tmp/mce-escaped"), b"x")),
        "dotdot": archive(tmp / "dotdot.tar.gz", (member("code/../../escaped"), b"x")),
        "symlink": archive(tmp / "symlink.tar.gz", (member("out", tarfile.SYMTYPE, "../../etc"), b"")),
        "hardlink": archive(tmp / "hardlink.tar.gz", (member("pw", tarfile.LNKTYPE, "/etc/passwd"), b"")),
        "device": archive(tmp / "device.tar.gz", (member("null", tarfile.CHRTYPE), b"")),
    }


# run by a Python given the path of sources.py: unpack each archive, print what happened (JSON)
PROBE = """
import importlib.util, json, sys, tarfile
from pathlib import Path
spec = importlib.util.spec_from_file_location("sources", sys.argv[1])
sources = importlib.util.module_from_spec(spec); spec.loader.exec_module(sources)
results = {"has_filter": hasattr(tarfile, "data_filter")}
for name, path in json.loads(sys.argv[2]).items():
    target = Path(sys.argv[3]) / name
    try:
        sources.unpack(Path(path), target)
        results[name] = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
    except sources.ArtifactBroken as exc:
        results[name] = "refused: " + str(exc)
print(json.dumps(results))
"""


def unpack_with(python: str, tmp: Path) -> dict[str, object]:
    paths = {name: str(path) for name, path in archives(tmp).items()}
    out = tmp / "out"
    run = subprocess.run(
        [python, "-c", PROBE, str(SOURCES), json.dumps(paths), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    results: dict[str, object] = json.loads(run.stdout)
    return results


def check(results: dict[str, object], tmp: Path) -> None:
    assert results["good"] == ["code", "code/inference.py", "latest", "model.pth"]
    assert results["absolute"] == ["tmp", "tmp/mce-escaped"]  # the leading slash stripped, as the filter does
    for bad in ("dotdot", "symlink", "hardlink", "device"):
        assert str(results[bad]).startswith("refused: "), (bad, results[bad])
        assert not (tmp / "out" / bad).exists()  # nothing half-made stays
    assert not Path("/tmp/mce-escaped").exists() and not (tmp.parent / "escaped").exists()


def test_this_python_unpacks_with_the_data_filter(tmp_path: Path) -> None:
    results = unpack_with(sys.executable, tmp_path)
    assert results["has_filter"] is True
    check(results, tmp_path)


@pytest.mark.skipif(not DEBIAN_PYTHON.exists(), reason="no Debian python3 on this machine")
def test_debian_12s_python_without_the_filter_refuses_the_same(tmp_path: Path) -> None:
    results = unpack_with(str(DEBIAN_PYTHON), tmp_path)
    assert results["has_filter"] is False, "this Python has the data filter: the by-hand path is not tested"
    check(results, tmp_path)


def test_the_by_hand_path_keeps_no_setuid_bit(tmp_path: Path) -> None:
    good = archives(tmp_path)["good"]
    with tarfile.open(good) as tar:
        sources.extract_by_hand(tar, tmp_path / "by-hand")
    assert (tmp_path / "by-hand" / "model.pth").stat().st_mode & 0o7000 == 0
