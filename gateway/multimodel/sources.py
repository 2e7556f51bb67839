"""Where a multi-model container's artifacts come from: the `ModelDataUrl` prefix, made local.

`TargetModel` is a path relative to the prefix (spec §4.2). The request path has already refused the
forms that leave it (`gateway.invocation`); a local prefix also checks the resolved path, so a symbolic
link cannot lead out either. S3 is read with botocore, which the gateway already carries for SigV4: its
usual credential chain, region and `AWS_ENDPOINT_URL_S3` apply. Fetching blocks; callers run it in a thread.
"""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from gateway.aws import s3_client

_CHUNK = 1024 * 1024


class ArtifactMissing(Exception):
    """Nothing to load at `TargetModel` under the prefix (or it may not be read)."""


class ArtifactBroken(Exception):
    """The artifact is there but is not a model archive that unpacks."""


class ArtifactTooLarge(ArtifactBroken):
    """The archive would unpack to more bytes than allowed."""


class Source(Protocol):
    url: str  # the prefix, as the endpoint document gives it

    def fetch(self, relative: str, into: Path) -> tuple[Path, bool]:
        """The artifact at `relative` as a local path (an archive or a folder); True when it was downloaded
        into the folder `into` (the caller deletes it), False when it is read where it is."""


class LocalSource:
    """A folder (a path, relative to the endpoint document, or a file:// URL); artifacts are read in place."""

    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root.resolve()

    def fetch(self, relative: str, into: Path) -> tuple[Path, bool]:
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ArtifactMissing(f"{relative} leads outside the model prefix {self.url}")
        if not path.exists():
            raise ArtifactMissing(f"there is no {relative} under {self.url}")
        return path, False


class S3Source:
    """`s3://bucket/prefix/`: each artifact is downloaded once into the cache."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.url = url
        self.bucket = parts.netloc
        self.prefix = parts.path.lstrip("/")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        self._client: Any = None

    def fetch(
        self, relative: str, into: Path, still: Callable[[], object] = lambda: None
    ) -> tuple[Path, bool]:
        """`still()` is called between chunks and raises to give up (a deadline)."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.prefix + relative
        target = into / "artifact.download"
        try:
            answer = self._s3().get_object(Bucket=self.bucket, Key=key)
            with target.open("wb") as out:
                for chunk in answer["Body"].iter_chunks(_CHUNK):
                    out.write(chunk)
                    still()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            known = code in ("NoSuchKey", "404", "NoSuchBucket", "AccessDenied", "403")
            raise ArtifactMissing(
                f"s3://{self.bucket}/{key} cannot be downloaded ({code if known else exc})"
            ) from exc
        except BotoCoreError as exc:  # no credentials, no route to the endpoint, ...
            raise ArtifactMissing(f"s3://{self.bucket}/{key} cannot be downloaded ({exc})") from exc
        return target, True

    def _s3(self) -> Any:
        if self._client is None:
            self._client = s3_client()
        return self._client


def source_for(url: str, base: Path) -> Source:
    """The source for a MultiModel container's `ModelDataUrl` (relative paths are from `base`)."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        return S3Source(url)
    if parts.scheme == "file":
        return LocalSource(url, Path(unquote(parts.path)))
    path = Path(url)
    return LocalSource(url, path if path.is_absolute() else base / path)


def unpack(artifact: Path, target: Path, *, max_bytes: int | None = None) -> None:
    """Extract a model archive into the folder `target` (made anew); ArtifactTooLarge, with nothing
    written, if its files add up to more than `max_bytes`."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    try:
        with tarfile.open(artifact) as tar:
            if max_bytes is not None:  # the sizes the archive declares, read before anything is written
                total = sum(member.size for member in tar.getmembers() if member.isfile())
                if total > max_bytes:
                    raise ArtifactTooLarge(f"it unpacks to {total} bytes")
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
                tar.extractall(target, filter="data")  # refuses absolute paths, `..`, devices
            else:
                extract_by_hand(tar, target)
    except ArtifactTooLarge:
        shutil.rmtree(target, ignore_errors=True)
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise ArtifactBroken(f"{artifact.name} does not unpack as a model archive (.tar.gz): {exc}") from exc


def extract_by_hand(tar: tarfile.TarFile, target: Path) -> None:
    """`filter="data"` for the Pythons that lack it (3.11.0 to 3.11.3; Debian 12's python3 is 3.11.2),
    checked before anything is written: leading slashes are stripped from names, and members that would
    land outside `target` (`..`, a link that is absolute or leads out), devices and FIFOs are refused.
    Owners, modes and times are not restored: a model's files are plain data."""
    root = target.resolve()
    members = tar.getmembers()
    for member in members:
        member.name = member.name.lstrip("/")
        where = (root / member.name).resolve()
        if not where.is_relative_to(root):
            raise ValueError(f"{member.name!r} would be extracted outside the model folder")
        if member.isdev() or member.isfifo():
            raise ValueError(f"{member.name!r} is a device or FIFO, not a model file")
        if member.issym() or member.islnk():
            start = where.parent if member.issym() else root
            if member.linkname.startswith("/") or not (start / member.linkname).resolve().is_relative_to(
                root
            ):
                raise ValueError(f"{member.name!r} links to {member.linkname!r}, outside the model folder")
    for member in members:
        tar.extract(member, target, set_attrs=False)


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
