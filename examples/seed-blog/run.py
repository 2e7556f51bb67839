"""Run deploy.py against a local SageMaker and a local S3 server (examples/local_aws.py), with the two
models packed as model.tar.gz. `bash examples/seed-blog/run.sh` builds the models first.

    .venv/bin/python examples/seed-blog/run.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from local_aws import BUCKET, ROOT, artifact, local_aws  # noqa: E402


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="seed-blog-"))
    tensorflow = artifact(work / "tensorflow.tar.gz", ROOT / "build" / "tensorflow" / "model")
    pytorch = artifact(work / "pytorch.tar.gz", ROOT / "build" / "pytorch" / "model-store")
    with local_aws(work) as env:
        deploy = [sys.executable, str(HERE / "deploy.py"), BUCKET, str(tensorflow), str(pytorch)]
        return subprocess.run(deploy, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
