"""Multi-model containers (`Mode: MultiModel`, spec §4): SageMaker's part, done by the gateway.

`sources` finds a `TargetModel`'s artifact under the container's prefix (a folder, file:// or s3://);
`store` keeps track of which models the container has loaded, loads on first use and unloads to make room;
`backend` is the container as the data plane sees it: invoke the named model, loading it first if need be.
"""
