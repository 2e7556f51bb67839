"""`ModelDataUrl` made local: the folder a natively launched container reads its model from.

SageMaker downloads the artifact and extracts it into /opt/ml/model before the container starts (spec §5).
Locally a folder is used where it is (nothing copied), and a `.tar.gz` (a path or a `file://` URL) is
extracted into the container's run folder, once per change of the archive. An `s3://` artifact is
downloaded with botocore (its usual credential chain, region and `AWS_ENDPOINT_URL_S3`, so a local S3
server serves it) and an `https://` one with the standard library, then extracted the same way. This
blocks: callers off the event loop run it in a thread.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gateway.endpoint import Endpoint
from gateway.errors import DocumentIssue
from gateway.multimodel.sources import ArtifactBroken, ArtifactMissing, S3Source, unpack


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
        return _extract(_download(url, run_dir / "model.tar.gz", "ModelDataUrl"), run_dir / "model")
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


DOWNLOAD_TIMEOUT = 60.0  # seconds without a byte before an https:// download fails


def code_directory(url: str, run_dir: Path, entry: str) -> Path:
    """`SAGEMAKER_SUBMIT_DIRECTORY` given as an `s3://` or `https://` `.tar.gz` (the SageMaker SDK's
    sourcedir.tar.gz, or a model.tar.gz holding `code/`), extracted into `run_dir/code`: the folder that
    holds the entry script `entry` (the archive's root, else its `code/`)."""
    field = "SAGEMAKER_SUBMIT_DIRECTORY"
    target = _extract(_download(url, run_dir / "sourcedir.tar.gz", field), run_dir / "code", field)
    if not (target / entry).is_file() and (target / "code" / entry).is_file():
        return target / "code"
    if not (target / entry).is_file():
        raise ModelDataError(f"{field} {url} holds no {entry} (SAGEMAKER_PROGRAM), at its root or in code/")
    return target


def _download(url: str, target: Path, field: str) -> Path:
    """The archive at `url`, as `target` (downloaded again each time: a local copy cannot know whether
    the remote one changed); `field` names where the URL came from, in errors."""
    parts = urlsplit(url)
    if not parts.path.endswith((".tar.gz", ".tgz", ".tar")):
        raise ModelDataError(f"{field} {url}: it must be one .tar.gz archive (SageMaker's rule)")
    target.parent.mkdir(parents=True, exist_ok=True)
    if parts.scheme == "s3":
        source = S3Source(f"s3://{parts.netloc}/{parts.path.lstrip('/').rpartition('/')[0]}")
        try:
            downloaded, _ = source.fetch(parts.path.rpartition("/")[2], target.parent)
        except ArtifactMissing as exc:  # "s3://bucket/key cannot be downloaded (why)"
            raise ModelDataError(f"{field} {exc}") from None
        downloaded.replace(target)
        return target
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as answer, target.open("wb") as out:
            shutil.copyfileobj(answer, out, 1024 * 1024)
    except (OSError, ValueError) as exc:
        raise ModelDataError(f"{field} {url}: cannot be downloaded ({exc})") from None
    return target


def _extract(archive: Path, target: Path, field: str = "ModelDataUrl") -> Path:
    stat = archive.stat()
    stamp = json.dumps({"archive": str(archive.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns})
    # beside the folder, not in it: a container that loads every file of /opt/ml/model must not see it
    marker = target.with_name(f"{target.name}.mce-extracted")
    if marker.exists() and marker.read_text() == stamp:
        return target
    try:
        unpack(archive, target)
    except ArtifactBroken as exc:
        raise ModelDataError(f"{field} {archive}: cannot extract it: {exc}") from exc
    marker.write_text(stamp)
    return target
