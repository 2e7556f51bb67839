# The gateway's image: `mce` on a slim official Python, serving an endpoint document mounted at
# /etc/mce/endpoint.yaml (compose.yaml does so). Build context: the repository root.
FROM python:3.11-slim-bookworm
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# /opt/ml/models: a MultiModel endpoint's model cache (compose mounts a volume there, which takes this
# folder's owner when it is new), written by the gateway as its user
RUN python -m pip install --no-cache-dir . \
 && useradd --system --no-create-home mce \
 && mkdir -p /opt/ml/models && chown mce /opt/ml/models
USER mce
EXPOSE 8080
ENTRYPOINT ["mce"]
CMD ["serve", "/etc/mce/endpoint.yaml", "--host", "0.0.0.0", "--port", "8080", "--by-hostname"]
