"""The pytest plugin (gateway/pytest_plugin.py) as a user's test suite meets it: pytest run in a
subprocess on a test file, the plugin loaded from its entry point, no AWS settings in the environment.
Each run happens under a child subreaper, so any process the session leaves behind is found."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import ROOT, build_pytorch_model

README = ROOT / "README.md"

# pytest under a child subreaper: what the session leaves running is re-parented here and named
SUBREAPER = """
import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
code = subprocess.run(sys.argv[1:]).returncode
left = set()
for task in os.listdir("/proc/self/task"):
    with open(f"/proc/self/task/{task}/children") as children:
        left.update(children.read().split())
for pid in sorted(left):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            name, rest = stat.read().rsplit(")", 1)
        state = rest.split()[0]
        if state == "Z":  # it ended; nobody was left to collect it but this process
            os.waitpid(int(pid), 0)
            continue
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = cmdline.read().replace(b"\\0", b" ").decode(errors="replace")
        print("LEFT BEHIND", pid, name.split("(", 1)[1], argv)
        os.kill(int(pid), 9)
    except OSError:
        pass
sys.exit(code)
"""


def readme_block(first_line: str) -> str:
    """The README's fenced block whose first line is `first_line`, as written."""
    for block in re.findall(r"```\w*\n(.*?)```", README.read_text(), flags=re.DOTALL):
        if block.startswith(first_line):
            return str(block)
    raise AssertionError(f"README has no block beginning {first_line!r}")


def run_pytest(tmp_path: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """pytest as a user runs it: no AWS variables, a HOME without ~/.aws, the plugin from its entry point."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = str(tmp_path / "home")
    (tmp_path / "home").mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "inner")]
    return subprocess.run(
        [sys.executable, "-c", SUBREAPER, *argv, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_readme_deploy_test_passes_as_written_and_leaves_nothing_running(tmp_path: Path) -> None:
    build_pytorch_model()  # the README's first command builds it; the test needs it where it says
    test = tmp_path / "test_deploy.py"
    test.write_text(readme_block("# test_deploy.py"))
    run = run_pytest(tmp_path, str(test), cwd=ROOT)  # from the repository's root, as the README says
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    assert "LEFT BEHIND" not in run.stdout, run.stdout


def test_a_failed_endpoint_shows_its_reason_and_log_in_the_report(tmp_path: Path) -> None:
    """The image map from --mce-images, an mce up argument from --mce-args (the region, seen in the ARN);
    the endpoint fails, so does the test, and its report says why, with the container's last words."""
    (tmp_path / "images.yaml").write_text(
        yaml.safe_dump(
            {
                "Images": [
                    {
                        "Image": "acme/broken:*",
                        "Backend": {
                            "Protocol": "sagemaker",
                            "Launch": {
                                "Command": [
                                    sys.executable,
                                    "-c",
                                    "import sys; print('cannot find /opt/ml/model/weights.bin', flush=True); "
                                    "sys.exit(3)",
                                ]
                            },
                        },
                    }
                ]
            }
        )
    )
    (tmp_path / "test_broken.py").write_text(
        """
import boto3


def test_the_endpoint_comes_up(local_sagemaker):
    sm = boto3.client("sagemaker")
    sm.create_model(ModelName="broken", ExecutionRoleArn="arn:aws:iam::000000000000:role/local",
                    PrimaryContainer={"Image": "acme/broken:1"})
    sm.create_endpoint_config(EndpointConfigName="broken", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "broken", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    arn = sm.create_endpoint(EndpointName="broken", EndpointConfigName="broken")["EndpointArn"]
    assert arn.startswith("arn:aws:sagemaker:eu-west-1:")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="broken")
"""
    )
    run = run_pytest(
        tmp_path,
        "test_broken.py",
        "--mce-images",
        "images.yaml",
        "--mce-args",
        "--region eu-west-1",
        cwd=tmp_path,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed" in run.stdout
    report = run.stdout.split("local SageMaker", 1)[1]
    assert "endpoint broken: Failed: " in report
    reason = report.split("endpoint broken: Failed: ", 1)[1].split("\n--- ", 1)[0]
    assert "exited with code 3" in reason and "cannot find /opt/ml/model/weights.bin" in reason, report
    assert re.search(
        r"--- broken/.*\.log \(last 1 lines\)\ncannot find /opt/ml/model/weights.bin\n", report
    ), report
    assert "LEFT BEHIND" not in run.stdout, run.stdout


def test_a_session_without_the_fixture_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    run = run_pytest(tmp_path, "test_plain.py", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert not (tmp_path / "inner" / "mce0").exists()  # the fixture's folder: never made


def test_mce_up_failing_to_start_fails_the_fixture_with_its_words(tmp_path: Path) -> None:
    (tmp_path / "test_any.py").write_text("def test_any(local_sagemaker):\n    pass\n")
    run = run_pytest(tmp_path, "test_any.py", "--mce-images", "missing.yaml", cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 error" in run.stdout
    assert "mce up did not start" in run.stdout and "missing.yaml" in run.stdout


def test_the_readme_ci_job_is_a_valid_github_workflow(tmp_path: Path) -> None:
    workflow = tmp_path / "deploy-tests.yml"
    workflow.write_text(readme_block("# .github/workflows/deploy-tests.yml"))
    checked = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            str(workflow),
        ],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
