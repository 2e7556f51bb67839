"""A local AWS for the examples' deploy scripts: a local S3 server (moto's), `mce up` as the local
SageMaker, and the variables that point plain boto3 at both (botocore reads them). Everything stops when
the block ends.

    with local_aws(work) as env:
        subprocess.run([sys.executable, "deploy.py", ...], env=env)
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "sagemaker-local"


def artifact(path: Path, folder: Path) -> Path:
    """model.tar.gz as SageMaker's containers expect it: the folder's contents at the top."""
    with tarfile.open(path, "w:gz") as tar:
        for item in sorted(folder.iterdir()):
            tar.add(item, arcname=item.name)
    return path


@contextmanager
def local_aws(work: Path) -> Iterator[dict[str, str]]:
    """The environment for a deploy script: credentials, region, and the S3 and SageMaker endpoints (a
    bucket named BUCKET exists)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the S3 server's request lines
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    s3_url = "http://{}:{}".format(*s3.get_host_and_port())
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": s3_url,
    }
    client = boto3.client(
        "s3",
        endpoint_url=s3_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    client.create_bucket(Bucket=BUCKET)
    mce = subprocess.Popen(
        [sys.executable, "-m", "gateway", "up", "--port", "0", "--state", str(work / "state")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    listening = threading.Event()
    found: list[str] = []

    def pump() -> None:  # mce's console, as it comes; its URL from the line that announces it
        assert mce.stdout is not None
        for line in mce.stdout:
            print(f"  mce | {line}", end="", flush=True)
            if "listening on" in line and not found:
                found.append(line.rsplit(" ", 1)[1].strip())
                listening.set()
        listening.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        listening.wait()
        if not found:
            raise RuntimeError(f"mce up exited with {mce.wait()} before it listened")
        yield {**env, "AWS_ENDPOINT_URL_SAGEMAKER": found[0], "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": found[0]}
    finally:
        mce.terminate()
        mce.wait(timeout=60)
        s3.stop()
