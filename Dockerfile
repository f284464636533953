# syntax=docker/dockerfile:1
# PackCache Server: `packcache serve` in a lean, non-root image (deploy/README.md).
#   CUDA (default):  docker build -t packcache-server:0.1.0 .
#   CPU only:        docker build --build-arg VARIANT=cpu -t packcache-server:0.1.0-cpu .
# Settings come from PACKCACHE_* variables or flags after the image name (`packcache serve
# --help`). Volumes: /models (checkpoints, read-only) and /data (videos, jobs.sqlite3).

ARG VARIANT=cuda
ARG CUDA_IMAGE=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG TORCH_VERSION=2.7.1

# The project as a wheel. Pure Python: pip fetches setuptools, nothing is compiled; this
# stage's tools stay out of the final image.
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY packcache_core ./packcache_core
COPY server ./server
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Runtime bases: PyTorch's CUDA runtime image (torch, CUDA and cuDNN libraries, no compiler),
# or slim Python with the CPU wheel of the same torch.
FROM ${CUDA_IMAGE} AS base-cuda

FROM ${PYTHON_IMAGE} AS base-cpu
ARG TORCH_VERSION
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        "torch==${TORCH_VERSION}"

# base-cuda or base-cpu: a stage above, so no registry tag to pin.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS server
ARG VARIANT
LABEL org.opencontainers.image.title="packcache-server" \
      org.opencontainers.image.description="Lumos-1 image-to-video server with fixed-size KV caches" \
      org.opencontainers.image.licenses="Apache-2.0" \
      dev.packcache.variant="${VARIANT}"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PACKCACHE_HOST=0.0.0.0 \
    PACKCACHE_PORT=8000 \
    PACKCACHE_DATA_DIR=/data \
    HOME=/home/packcache \
    XDG_CACHE_HOME=/tmp/cache

RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin packcache \
    && mkdir -p /data /models \
    && chown packcache:packcache /data /models

# torch is already there (the base), so pip adds only the server's own dependencies.
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir --find-links /wheels "packcache-server[postgres]==0.1.0" \
    && rm -rf /wheels

USER 10001:10001
WORKDIR /home/packcache
VOLUME ["/data", "/models"]
EXPOSE 8000
STOPSIGNAL SIGTERM

# /health is 200 while the process serves, also while the model loads; 503 if start-up failed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PACKCACHE_PORT', '8000') + '/health', timeout=4)"]

ENTRYPOINT ["packcache", "serve"]
CMD []
