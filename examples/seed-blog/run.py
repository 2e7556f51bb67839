"""Run deploy.py against a local SageMaker and a local S3 server (examples/local_aws.py), with the two
models build_models.py packs as model.tar.gz. `bash examples/seed-blog/run.sh` builds them first.

    .venv/bin/python examples/seed-blog/run.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from local_aws import BUCKET, ROOT, local_aws  # noqa: E402


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="seed-blog-"))
    built = ROOT / "build" / "seed-blog"
    tensorflow, pytorch = built / "tensorflow" / "model.tar.gz", built / "pytorch" / "model.tar.gz"
    with local_aws(work) as env:
        deploy = [sys.executable, str(HERE / "deploy.py"), BUCKET, str(tensorflow), str(pytorch)]
        deploy.append(str(built / "test.json"))
        return subprocess.run(deploy, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
