"""Generated gRPC stubs (protos/generate.py). DO NOT EDIT."""
