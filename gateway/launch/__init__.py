"""Starting containers natively (no Docker): ports as SageMaker hands them out, and processes that stop clean.

`ports` allocates what SageMaker gives a container of a multi-container endpoint (SAGEMAKER_BIND_TO_PORT and
a SAGEMAKER_SAFE_PORT_RANGE); `process` runs one container's command in a process group of its own and
stops it, and everything it started, by PID. Any container kind uses both; what a kind runs is its
`Backend.Launch.Command` (e.g. containers/pytorch/serve.py).
"""
