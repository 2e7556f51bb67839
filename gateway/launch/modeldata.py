"""`ModelDataUrl` made local: the folder a natively launched container reads its model from.

SageMaker downloads the artifact and extracts it into /opt/ml/model before the container starts (spec §5).
Locally a folder is used where it is (nothing copied), and a `.tar.gz` (a path or a `file://` URL) is
extracted into the container's run folder, once per change of the archive. An `s3://` artifact is
downloaded with botocore (its usual credential chain, region and `AWS_ENDPOINT_URL_S3`, so a local S3
server serves it) and an `https://` one with the standard library, then extracted the same way. This
blocks: callers off the event loop run it in a thread.

Bounds (`Limits`), as a production variant sets them: the download and the extraction together must end
within `ModelDataDownloadTimeoutInSeconds` (AWS documents no default: mce takes its maximum, 3600 s, so
what AWS accepts never times out here first), and an archive must not unpack to more than the variant's
`VolumeSizeInGB` (default 30: mce's choice, documented in the README); past either, the endpoint fails
with a reason naming the limit.

Progress: each step says what it is doing through `say` (a line of text; gateway.launch.deployment shows it
on mce's console and writes it to the endpoint's deployment.log): a download's bytes and rate, at most one
line a second and one when it ends, then the unpacking, with what it unpacked and how long it took.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gateway.endpoint import Endpoint
from gateway.errors import DocumentIssue
from gateway.multimodel.sources import ArtifactBroken, ArtifactMissing, ArtifactTooLarge, S3Source, unpack


class ModelDataError(Exception):
    """The model data cannot be made local; the message says what to do."""


Say = Callable[[str], None]  # where a step's progress goes, a line at a time
PROGRESS_EVERY = 1.0  # s between two progress lines of one download


def _quiet(line: str) -> None:
    pass


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


class Meter:
    """One download's progress, said at most every PROGRESS_EVERY seconds, and once when it ends."""

    def __init__(self, what: str, total: int | None, say: Say) -> None:
        self.what, self.total, self.say = what, total, say
        self.began = self.said = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.said >= PROGRESS_EVERY:
            self.said = now
            of = f" of {_mb(self.total)}" if self.total else " so far"
            self.say(f"downloading {self.what}: {_mb(done)}{of} ({_mb(int(done / (now - self.began)))}/s)")

    def finish(self, done: int) -> None:
        took = max(time.monotonic() - self.began, 1e-6)
        self.say(f"downloaded {self.what}: {_mb(done)} in {took:.1f} s ({_mb(int(done / took))}/s)")


DEFAULT_DOWNLOAD_TIMEOUT = 3600.0  # ModelDataDownloadTimeoutInSeconds' maximum (60 to 3600)
DEFAULT_VOLUME_GB = 30  # VolumeSizeInGB when the variant does not say (1 to 512)


@dataclass(frozen=True)
class Limits:
    """What one variant's model data may take: `timeout` seconds to download and extract, `volume_gb` GB
    unpacked (a production variant's ModelDataDownloadTimeoutInSeconds and VolumeSizeInGB)."""

    timeout: float = DEFAULT_DOWNLOAD_TIMEOUT
    volume_gb: int = DEFAULT_VOLUME_GB

    def start(self) -> Clock:
        return Clock(self, time.monotonic() + self.timeout)


@dataclass(frozen=True)
class Clock:
    """The limits of one download and extraction under way."""

    limits: Limits
    deadline: float  # time.monotonic()

    def left(self, field: str, url: str) -> float:
        """Seconds left; ModelDataError once there are none."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ModelDataError(
                f"{field} {url}: not downloaded and extracted within {self.limits.timeout:g} s "
                "(the variant's ModelDataDownloadTimeoutInSeconds)"
            )
        return left

    @property
    def max_bytes(self) -> int:
        return self.limits.volume_gb * 1000**3


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


def model_directory(
    url: str, base: Path, run_dir: Path, limits: Limits | None = None, say: Say = _quiet
) -> Path:
    """The local folder for `url` (relative paths are from `base`, the endpoint document's folder)."""
    clock = (limits or Limits()).start()
    parts = urlsplit(url)
    if parts.scheme in ("s3", "https", "http"):
        archive = _download(url, run_dir / "model.tar.gz", "ModelDataUrl", clock, say)
        return _extract(archive, run_dir / "model", clock, say=say)
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
    return _extract(path, run_dir / "model", clock, say=say)


DOWNLOAD_TIMEOUT = 60.0  # seconds without a byte before an https:// download fails
_CHUNK = 1024 * 1024


def code_directory(
    url: str, run_dir: Path, entry: str, limits: Limits | None = None, say: Say = _quiet
) -> Path:
    """`SAGEMAKER_SUBMIT_DIRECTORY` given as an `s3://` or `https://` `.tar.gz` (the SageMaker SDK's
    sourcedir.tar.gz, or a model.tar.gz holding `code/`), extracted into `run_dir/code`: the folder that
    holds the entry script `entry` (the archive's root, else its `code/`)."""
    field = "SAGEMAKER_SUBMIT_DIRECTORY"
    clock = (limits or Limits()).start()
    archive = _download(url, run_dir / "sourcedir.tar.gz", field, clock, say)
    target = _extract(archive, run_dir / "code", clock, field, say)
    if not (target / entry).is_file() and (target / "code" / entry).is_file():
        return target / "code"
    if not (target / entry).is_file():
        raise ModelDataError(f"{field} {url} holds no {entry} (SAGEMAKER_PROGRAM), at its root or in code/")
    return target


def _download(url: str, target: Path, field: str, clock: Clock, say: Say = _quiet) -> Path:
    """The archive at `url`, as `target` (downloaded again each time: a local copy cannot know whether
    the remote one changed); `field` names where the URL came from, in errors. The whole download ends
    by the clock's deadline (a read waits at most DOWNLOAD_TIMEOUT, or what is left, for a byte)."""
    parts = urlsplit(url)
    if not parts.path.endswith((".tar.gz", ".tgz", ".tar")):
        raise ModelDataError(f"{field} {url}: it must be one .tar.gz archive (SageMaker's rule)")
    target.parent.mkdir(parents=True, exist_ok=True)
    if parts.scheme == "s3":
        source = S3Source(f"s3://{parts.netloc}/{parts.path.lstrip('/').rpartition('/')[0]}")
        partial = target.parent / "artifact.download"  # where S3Source writes (gateway.multimodel.sources)
        meter = Meter(f"{field} {url}", None, say)

        def still() -> None:
            clock.left(field, url)
            meter.update(partial.stat().st_size if partial.exists() else 0)

        try:
            downloaded, _ = source.fetch(parts.path.rpartition("/")[2], target.parent, still)
        except ArtifactMissing as exc:  # "s3://bucket/key cannot be downloaded (why)"
            raise ModelDataError(f"{field} {exc}") from None
        downloaded.replace(target)
        meter.finish(target.stat().st_size)
        return target
    try:
        timeout = min(DOWNLOAD_TIMEOUT, clock.left(field, url))
        with urllib.request.urlopen(url, timeout=timeout) as answer, target.open("wb") as out:
            length = answer.headers.get("Content-Length")
            meter = Meter(f"{field} {url}", int(length) if length and length.isdigit() else None, say)
            done = 0
            while chunk := answer.read1(_CHUNK):  # what has come, not a full chunk: the clock is read
                out.write(chunk)
                done += len(chunk)
                clock.left(field, url)
                meter.update(done)
        meter.finish(done)
    except (OSError, ValueError) as exc:
        if time.monotonic() >= clock.deadline:
            clock.left(field, url)  # the deadline passed during the read: say that
        raise ModelDataError(f"{field} {url}: cannot be downloaded ({exc})") from None
    return target


def _extract(
    archive: Path, target: Path, clock: Clock, field: str = "ModelDataUrl", say: Say = _quiet
) -> Path:
    stat = archive.stat()
    stamp = json.dumps({"archive": str(archive.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns})
    # beside the folder, not in it: a container that loads every file of /opt/ml/model must not see it
    marker = target.with_name(f"{target.name}.mce-extracted")
    if marker.exists() and marker.read_text() == stamp:
        say(f"{field} {archive.name}: unpacked already ({target})")
        return target
    say(f"unpacking {field} {archive.name} ({_mb(stat.st_size)}) into {target}")
    began = time.monotonic()
    try:
        unpack(archive, target, max_bytes=clock.max_bytes)
    except ArtifactTooLarge as exc:
        raise ModelDataError(
            f"{field} {archive.name}: {exc}; more than the variant's VolumeSizeInGB "
            f"({clock.limits.volume_gb} GB) allows"
        ) from None
    except ArtifactBroken as exc:
        raise ModelDataError(f"{field} {archive}: cannot extract it: {exc}") from exc
    clock.left(field, str(archive))
    marker.write_text(stamp)
    files = [f for f in target.rglob("*") if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    took = time.monotonic() - began
    say(f"unpacked {field} {archive.name}: {len(files)} files, {_mb(size)} in {took:.1f} s")
    return target
