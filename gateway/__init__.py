"""mce-gateway: SageMaker multi-container endpoints (Direct and Serial) behind one gateway, anywhere."""

__version__ = "0.1.0"
