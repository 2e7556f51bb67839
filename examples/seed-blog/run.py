"""Run deploy.py against a local SageMaker: a local S3 server (moto's), `mce up`, the AWS endpoint
variables; then stop both. `bash examples/seed-blog/run.sh` builds the models first.

    .venv/bin/python examples/seed-blog/run.py
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BUILD = ROOT / "build"


def artifact(path: Path, folder: Path) -> Path:
    """model.tar.gz as SageMaker's containers expect it: the folder's contents at the top."""
    with tarfile.open(path, "w:gz") as tar:
        for item in sorted(folder.iterdir()):
            tar.add(item, arcname=item.name)
    return path


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="seed-blog-"))
    tensorflow = artifact(work / "tensorflow.tar.gz", BUILD / "tensorflow" / "model")
    pytorch = artifact(work / "pytorch.tar.gz", BUILD / "pytorch" / "model-store")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the S3 server's request lines
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    s3_url = "http://{}:{}".format(*s3.get_host_and_port())
    aws = {
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": s3_url,
    }
    boto3.client(
        "s3",
        endpoint_url=s3_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    ).create_bucket(Bucket="sagemaker-local")
    env = {**os.environ, **aws}
    mce = subprocess.Popen(
        [sys.executable, "-m", "gateway", "up", "--port", "0", "--state", str(work / "state")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    listening = threading.Event()
    url = ""

    def pump() -> None:  # mce's console, as it comes; its URL from the line that announces it
        nonlocal url
        assert mce.stdout is not None
        for line in mce.stdout:
            print(f"  mce | {line}", end="", flush=True)
            if "listening on" in line and not url:
                url = line.rsplit(" ", 1)[1].strip()
                listening.set()
        listening.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        listening.wait()
        if not url:
            return mce.wait() or 1
        env.update(AWS_ENDPOINT_URL_SAGEMAKER=url, AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=url)
        deploy = subprocess.run(
            [sys.executable, str(HERE / "deploy.py"), "sagemaker-local", str(tensorflow), str(pytorch)],
            env=env,
        )
        return deploy.returncode
    finally:
        mce.terminate()
        mce.wait(timeout=60)
        s3.stop()


if __name__ == "__main__":
    sys.exit(main())
