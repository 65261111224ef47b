# syntax=docker/dockerfile:1
#
# One image for every Mailyard service:
#   docker run IMAGE ingress|queue|delivery|bounce --config /etc/mailyard/mailyard.yaml
#
# Runs as uid/gid 10001 with a read-only root filesystem: Python writes no
# bytecode at run time (it is compiled here), and nothing is written outside
# /tmp (the Helm chart mounts an emptyDir there).

ARG PYTHON_VERSION=3.11

# --- builder: a wheel of Mailyard, installed with its dependencies into a venv
FROM python:${PYTHON_VERSION}-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# Extras: "fast" brings uvloop, "k8s" the Kubernetes client for `mailyard status`.
ARG EXTRAS=fast,k8s

WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services

# Bytecode is checked by hash, not by timestamp: valid whatever a copy does to mtimes.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/mailyard \
 && /opt/mailyard/bin/pip install --no-compile "$(ls /wheels/mailyard-*.whl)[${EXTRAS}]" \
 && /opt/mailyard/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/mailyard


# --- runtime
FROM python:${PYTHON_VERSION}-slim

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="Mailyard" \
      org.opencontainers.image.description="A mail transfer agent in four services that talk over RabbitMQ" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/mailyard/mailyard" \
      org.opencontainers.image.url="https://github.com/mailyard/mailyard" \
      org.opencontainers.image.documentation="https://github.com/mailyard/mailyard/blob/main/charts/mailyard/README.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:${PYTHON_VERSION}-slim"

RUN groupadd --system --gid 10001 mailyard \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin mailyard \
 && mkdir -p /etc/mailyard

COPY --from=builder /opt/mailyard /opt/mailyard

# No PYTHONUNBUFFERED: Mailyard flushes its JSON log lines itself (warnings at
# once, the rest every 250 ms), which spares a write system call per line.
ENV PATH=/opt/mailyard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    TMPDIR=/tmp

USER 10001:10001
WORKDIR /tmp

# SMTP (ingress.listen; ports under 1024 need root, so 2525) and /metrics, /healthz, /readyz.
EXPOSE 2525 9102

ENTRYPOINT ["mailyard"]
CMD ["--help"]
