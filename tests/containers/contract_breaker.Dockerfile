# contract_breaker.py as an image, for mce check's Docker rules (tests/test_check.py); BIND_TO_PORT=false
# drops the label a multi-container endpoint requires. Build context: tests/containers.
FROM python:3.11-slim-bookworm
ARG BIND_TO_PORT=true
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=${BIND_TO_PORT}
ENV BREAKER_HOST=0.0.0.0
COPY contract_breaker.py /srv/contract_breaker.py
ENTRYPOINT ["python", "/srv/contract_breaker.py"]
