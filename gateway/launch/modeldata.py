"""`ModelDataUrl` made local: the folder a natively launched container reads its model from.

SageMaker downloads the artifact and extracts it into /opt/ml/model before the container starts (spec §5).
Locally a folder is used where it is (nothing copied), and a `.tar.gz` (a path or a `file://` URL) is
extracted into the container's run folder, once per change of the archive.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gateway.endpoint import Endpoint
from gateway.errors import DocumentIssue
from gateway.multimodel.sources import ArtifactBroken, unpack


class ModelDataError(Exception):
    """The model data cannot be made local; the message says what to do."""


def missing_model_data(endpoint: Endpoint, base: Path) -> list[DocumentIssue]:
    """Each local `ModelDataUrl` (a path or file:// URL; relative ones from `base`) that does not exist."""
    issues = []
    where = "Containers" if endpoint.Containers is not None else "PrimaryContainer"
    for index, container in enumerate(endpoint.containers):
        url = container.ModelDataUrl
        if url is None:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("", "file"):
            continue  # s3:// is checked when it is read
        path = Path(unquote(parts.path)) if parts.scheme == "file" else Path(url)
        path = path if path.is_absolute() else base / path
        if not path.exists():
            field = f"{where}[{index}].ModelDataUrl" if where == "Containers" else f"{where}.ModelDataUrl"
            issues.append(DocumentIssue(field, f"{path} does not exist (is the model built?)"))
    return issues


def model_directory(url: str, base: Path, run_dir: Path) -> Path:
    """The local folder for `url` (relative paths are from `base`, the endpoint document's folder)."""
    parts = urlsplit(url)
    if parts.scheme in ("s3", "https", "http"):
        raise ModelDataError(
            f"ModelDataUrl {url}: mce-gateway does not download model data; download it and set ModelDataUrl "
            "to the local .tar.gz or folder"
        )
    if parts.scheme == "file":
        path = Path(unquote(parts.path))
    elif parts.scheme == "":
        path = Path(url)
    else:
        raise ModelDataError(f"ModelDataUrl {url}: use a local path, a .tar.gz or a file:// URL")
    path = path if path.is_absolute() else (base / path)
    if path.is_dir():
        return path.resolve()
    if not path.exists():
        raise ModelDataError(f"ModelDataUrl {url}: {path} does not exist (is the model built?)")
    if not path.name.endswith((".tar.gz", ".tgz", ".tar")):
        raise ModelDataError(f"ModelDataUrl {url}: a file must be a .tar.gz archive")
    return _extract(path, run_dir / "model")


def _extract(archive: Path, target: Path) -> Path:
    stat = archive.stat()
    stamp = json.dumps({"archive": str(archive.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns})
    marker = target / ".mce-extracted"
    if marker.exists() and marker.read_text() == stamp:
        return target
    try:
        unpack(archive, target)
    except ArtifactBroken as exc:
        raise ModelDataError(f"ModelDataUrl {archive}: cannot extract it: {exc}") from exc
    marker.write_text(stamp)
    return target
