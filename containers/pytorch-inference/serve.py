"""SageMaker's PyTorch inference container (the `pytorch-inference` Deep Learning Container), natively:
TorchServe running the real SageMaker PyTorch inference toolkit (`sagemaker-pytorch-inference`, in a folder
of its own: MCE_PYTORCH_TOOLKIT, default <venv>/toolkits/pytorch), so a `model.tar.gz` made for that
container serves unchanged:

    model.pth | model.pt          the model; without code/inference.py a TorchScript file (the toolkit's
                                  default model_fn), JSON/CSV/NPY in, Accept-driven encoding out
    code/inference.py             optional: model_fn, input_fn, predict_fn, output_fn (SAGEMAKER_PROGRAM
                                  names another entry script)
    code/requirements.txt         honoured when what it asks is installed already; else refused, naming it

What the image has at fixed paths is moved into this container's run folder: the toolkit reads
SAGEMAKER_BASE_DIR (default /opt/ml), so `<run>/ml/model` is the unpacked model data, and its code
folder is on PYTHONPATH. TorchServe gets the toolkit's own settings (its handler service as the default
handler, request bodies handed over undecoded) and SageMaker's ports (SAGEMAKER_BIND_TO_PORT,
SAGEMAKER_SAFE_PORT_RANGE), as containers/pytorch does. SAGEMAKER_SUBMIT_DIRECTORY, when it names a
local folder, is the code folder; an `s3://` tar.gz is fetched by the launcher, which says where in
MCE_CODE_DIR.

The image's tag (MCE_IMAGE) is checked against what is installed: another PyTorch version is a warning in
the log; a GPU or Neuron image cannot run here and stops the container with the reason.

    python containers/pytorch-inference/serve.py      (MCE_MODEL_DIR, MCE_RUN_DIR, MCE_BIND_ADDRESS)
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import dlc

HANDLER = "sagemaker_pytorch_serving_container.handler_service:handle"


def launcher_module():  # type: ignore[no-untyped-def]
    """containers/pytorch/serve.py: its ports, log settings and TorchServe run loop are shared."""
    path = Path(__file__).resolve().parent.parent / "pytorch" / "serve.py"
    spec = importlib.util.spec_from_file_location("mce_torchserve_launch", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    launch = launcher_module()
    model_dir = Path(os.environ.get("MCE_MODEL_DIR", "/opt/ml/model")).resolve()
    run_dir = Path(os.environ.get("MCE_RUN_DIR", "/tmp/pytorch-inference")).resolve()
    address = os.environ.get("MCE_BIND_ADDRESS", "0.0.0.0")
    reason = dlc.check_image(os.environ.get("MCE_IMAGE", ""), "PyTorch", "torch")
    if reason is not None:
        print(f"serve.py: {reason}", file=sys.stderr)
        return 2
    if not model_dir.is_dir():
        print(f"serve.py: model directory {model_dir} does not exist (MCE_MODEL_DIR)", file=sys.stderr)
        return 2
    base = run_dir / "ml"
    base.mkdir(parents=True, exist_ok=True)
    link = base / "model"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(model_dir, target_is_directory=True)
    code = dlc.code_folder(link)
    refusal = dlc.requirements_refusal(code)
    if refusal is not None:
        print(f"serve.py: {refusal}", file=sys.stderr)
        return 2
    if not (code / os.environ.get("SAGEMAKER_PROGRAM", "inference.py")).is_file() and not any(
        model_dir.glob("*.pt*")
    ):
        print(
            f"serve.py: {model_dir} holds no model.pth or model.pt and no code/inference.py", file=sys.stderr
        )
        return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    config = launch.write_config(
        run_dir,
        [
            *launch.base_config(address),
            f"default_service_handler={HANDLER}",
            "decode_input_request=false",  # the toolkit takes the body as bytes
        ],
        model_log="info",  # what inference.py prints, and its tracebacks, as CloudWatch would show them
    )
    toolkit = Path(os.environ.get("MCE_PYTORCH_TOOLKIT", Path(sys.prefix) / "toolkits" / "pytorch"))
    if not (toolkit / "sagemaker_pytorch_serving_container").is_dir():
        print(
            f"serve.py: SageMaker's PyTorch inference toolkit is not in {toolkit} (MCE_PYTORCH_TOOLKIT): "
            "pip install --no-deps --target <that folder> sagemaker-pytorch-inference==2.0.25 "
            "(.ci/setup does)",
            file=sys.stderr,
        )
        return 2
    env = {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(base),
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(code), str(toolkit), os.environ.get("PYTHONPATH", "")])
        ),
    }
    launcher_path = shutil.which("torchserve") or str(Path(sys.executable).with_name("torchserve"))
    store = run_dir / "model-store"
    store.mkdir(exist_ok=True)
    result: int = launch.run(
        launcher_path,
        config,
        run_dir,
        ["--model-store", str(store), "--models", f"model={link}"],
        env,
        give_up=True,
    )
    return result


if __name__ == "__main__":
    sys.exit(main())
