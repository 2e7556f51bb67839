"""The control plane: SageMaker's own API (CreateModel ... DeleteEndpoint), locally, on the gateway's port.

api.py (the operations), state.py (SQLite), endpoints.py (each endpoint's life cycle), images.py (how an
Image runs locally). docs/architecture.md, "The control plane"; docs/decisions.md D25.
"""
