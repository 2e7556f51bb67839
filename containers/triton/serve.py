"""The Triton container's entrypoint: NVIDIA Triton Inference Server on the ports SageMaker hands out.
Docker (NVIDIA's image) and native (the tritonserver that nvidia-pytriton's wheel bundles) alike.

    python containers/triton/serve.py kserve       Triton's own APIs (the Open Inference Protocol):
                                                   HTTP on SAGEMAKER_BIND_TO_PORT, gRPC on the first port
                                                   of SAGEMAKER_SAFE_PORT_RANGE, metrics on the next
    python containers/triton/serve.py sagemaker    SageMaker mode, as SageMaker's Triton container runs
                                                   it: GET /ping, POST /invocations on
                                                   SAGEMAKER_BIND_TO_PORT (the default model:
                                                   SAGEMAKER_TRITON_DEFAULT_MODEL_NAME); with
                                                   SAGEMAKER_MULTI_MODEL=true, the multi-model API
                                                   (/models), models loaded on request

    python containers/triton/serve.py [serve]      the mode MCE_TRITON_MODE names (default kserve):
                                                   SageMaker runs an image as `docker run IMAGE serve`

    MCE_MODEL_DIR       the model repository (default /opt/ml/model); ignored for a multi-model container
    MCE_RUN_DIR         scratch space for the native launch (default /tmp/triton)
    MCE_BIND_ADDRESS    the listen address (default 0.0.0.0; native launch: 127.0.0.1)
    MCE_TRITON_VENV     the venv holding nvidia-pytriton (default <repository>/.venv/triton), used when
                        `tritonserver` is not on PATH

Natively, the bundled tritonserver needs what its wheel leaves to PyTriton (shared/spec/backends.md): the
Python-backend stub for this Python copied into its backend folder, the venv's `bin` first on PATH (the
stub runs the first python3 it finds, with that python's numpy), and LD_LIBRARY_PATH holding the
interpreter's lib folder and the wheel's bundled libraries. Triton's SageMaker service binds 0.0.0.0
whatever it is told, so for a loopback address this script preloads loopback.c (compiled here, once)
to keep it on loopback; without a C compiler it refuses SageMaker mode rather than listen on the network.
The server replaces this process (exec), so SIGTERM reaches it directly.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
EXIT_TIMEOUT = 10  # seconds Triton waits for in-flight requests on SIGTERM (the launcher's grace is 30 s)


def ports() -> tuple[int, int]:
    """(SAGEMAKER_BIND_TO_PORT, the first port of SAGEMAKER_SAFE_PORT_RANGE)."""
    bind = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
    safe = os.environ.get("SAGEMAKER_SAFE_PORT_RANGE", "")
    low = int(safe.split("-")[0]) if safe else 8000
    return bind, low


def bundled_server(run_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The tritonserver in nvidia-pytriton's wheel, made runnable: its command prefix and environment."""
    venv = Path(os.environ.get("MCE_TRITON_VENV", ROOT / ".venv" / "triton"))
    python = venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(
            f"serve.py: no tritonserver on PATH and no nvidia-pytriton venv at {venv} "
            "(MCE_TRITON_VENV; bash .ci/setup makes it)"
        )
    query = "import sys, sysconfig, pytriton; print(sysconfig.get_config_var('LIBDIR')); "
    query += "print(pytriton.__file__); print(f'{sys.version_info[0]}.{sys.version_info[1]}')"
    libdir, package, version = subprocess.run(
        [str(python), "-c", query], check=True, capture_output=True, text=True
    ).stdout.split()
    dist = Path(package).parent / "tritonserver"
    site = Path(package).parent.parent
    backends = run_dir / "backends"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not (backends / "python" / stub.name).exists():
        shutil.rmtree(backends, ignore_errors=True)
        shutil.copytree(dist / "backends", backends)
        shutil.copy(stub, backends / "python" / stub.name)
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "LD_LIBRARY_PATH": os.pathsep.join(
            p for p in (libdir, str(site / "nvidia_pytriton.libs"), os.environ.get("LD_LIBRARY_PATH")) if p
        ),
    }
    return [str(dist / "bin" / "tritonserver"), f"--backend-directory={backends}"], env


def loopback_library(run_dir: Path) -> Path:
    """loopback.c compiled into run_dir (kept while the source is unchanged)."""
    source = HERE / "loopback.c"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    library = run_dir / f"loopback-{digest}.so"
    if not library.exists():
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise SystemExit(
                "serve.py: SageMaker mode on a loopback address needs a C compiler for loopback.c "
                "(Triton's SageMaker service binds 0.0.0.0); set MCE_BIND_ADDRESS=0.0.0.0 to allow that"
            )
        partial = library.with_suffix(".tmp")
        build = [compiler, "-shared", "-fPIC", "-O2", "-o", str(partial), str(source), "-ldl"]
        subprocess.run(build, check=True)
        partial.replace(library)
    return library


def arguments(mode: str, multi: bool, address: str, model_dir: Path, run_dir: Path) -> list[str]:
    bind, low = ports()
    common = [f"--exit-timeout-secs={EXIT_TIMEOUT}", "--log-verbose=0"]
    if mode == "kserve":
        return [
            f"--model-repository={model_dir}",
            f"--http-address={address}",
            f"--http-port={bind}",
            f"--grpc-address={address}",
            f"--grpc-port={low}",
            f"--metrics-address={address}",
            f"--metrics-port={low + 1}",
            "--allow-cpu-metrics=false",
            "--allow-gpu-metrics=false",
            *common,
        ]
    sagemaker = [
        "--allow-sagemaker=true",
        f"--sagemaker-port={bind}",
        "--allow-http=false",
        "--allow-grpc=false",
        "--allow-metrics=false",
        *common,
    ]
    if multi:
        empty = run_dir / "models"  # every model comes through POST /models
        empty.mkdir(parents=True, exist_ok=True)
        return [f"--model-repository={empty}", "--model-control-mode=explicit", *sagemaker]
    return [f"--model-repository={model_dir}", *sagemaker]


def main() -> int:
    args = sys.argv[1:]
    chosen = args[0] if args and args[0] != "serve" else os.environ.get("MCE_TRITON_MODE", "kserve")
    mode = chosen if chosen in ("kserve", "sagemaker") else None
    if mode is None or len(args) > 1:
        print("usage: serve.py [kserve | sagemaker | serve]", file=sys.stderr)
        return 2
    multi = os.environ.get("SAGEMAKER_MULTI_MODEL", "").lower() == "true"
    if multi:
        mode = "sagemaker"  # the multi-model API exists only in SageMaker mode
    model_dir = Path(os.environ.get("MCE_MODEL_DIR", "/opt/ml/model")).resolve()
    run_dir = Path(os.environ.get("MCE_RUN_DIR", "/tmp/triton")).resolve()
    address = os.environ.get("MCE_BIND_ADDRESS", "0.0.0.0")
    if not multi and not model_dir.is_dir():
        print(f"serve.py: no model repository at {model_dir} (MCE_MODEL_DIR)", file=sys.stderr)
        return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    installed = shutil.which("tritonserver")
    if installed is not None:
        command = [installed]
    else:
        command, extra = bundled_server(run_dir)
        env.update(extra)
    if mode == "sagemaker" and address not in ("0.0.0.0", "::"):
        env["LD_PRELOAD"] = os.pathsep.join(
            p for p in (str(loopback_library(run_dir)), env.get("LD_PRELOAD")) if p
        )
    command += arguments(mode, multi, address, model_dir, run_dir)
    print("serve.py:", " ".join(command), flush=True)
    os.execve(command[0], command, env)


if __name__ == "__main__":
    sys.exit(main())
