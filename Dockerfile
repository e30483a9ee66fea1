# One Dockerfile for every FLTS service image; build args pick the service. From the repository root:
#   docker build --build-arg SERVICE=gateway -t flts/gateway:0.1.0 .
#   docker build --build-arg SERVICE=train --build-arg PYTORCH=yes -t flts/train:0.1.0 .
# (docker-compose.yaml passes the same arguments.) SERVICE is the extra of pyproject.toml the image installs,
# from its fully pinned deploy/requirements/<SERVICE>.txt (deploy/lock.sh), and the *_container module it runs.
# Only the trainers need PyTorch (PYTORCH=yes, a layer of its own); inference serves the networks' exported
# ONNX graphs without it. Needs BuildKit (the default builder of Docker >= 23 and of
# compose v2); no `# syntax=` line, so the built-in frontend is used and nothing is pulled for it.

# The base image, pinned by version.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# "yes" for the services that train PyTorch models (train).
ARG PYTORCH=no

FROM ${PYTHON_IMAGE} AS python
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
# A fixed non-root uid/gid, so Kubernetes runAsNonRoot can verify it and volumes can be chowned to it.
# libgomp1: the OpenMP runtime LightGBM's wheel links against (nonml); the slim image lacks it.
# hadolint ignore=DL3008
RUN groupadd --system --gid 10001 flts \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin flts \
 && apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && python -m venv /opt/venv

# PyTorch alone, in a layer of its own. The CPU index keeps the images small; any
# index that serves torch works (empty: PyPI only, whose Linux wheel is the CUDA build).
FROM python AS deps-pytorch-yes
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY deploy/requirements/torch.txt /tmp/torch.txt
RUN --mount=type=cache,target=/root/.cache/pip,id=flts-pip,sharing=locked \
    pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r /tmp/torch.txt

FROM python AS deps-pytorch-no

# The service's own pinned dependencies (transitive ones included, so --no-deps installs exactly them).
# hadolint ignore=DL3006
# checkov:skip=CKV_DOCKER_7: an earlier stage of this file (deps-pytorch-yes or -no), not a pulled image
FROM deps-pytorch-${PYTORCH} AS deps
ARG SERVICE
COPY deploy/requirements/${SERVICE}.txt /tmp/requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip,id=flts-pip,sharing=locked \
    test -n "${SERVICE}" && pip install --no-deps -r /tmp/requirements.txt

# The code: one wheel of the shared package and the service modules, built once for every image.
FROM python AS wheel
COPY deploy/requirements/build.txt /tmp/build.txt
RUN --mount=type=cache,target=/root/.cache/pip,id=flts-pip,sharing=locked \
    pip install --no-deps -r /tmp/build.txt
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src/ src/
COPY gateway_container/ gateway_container/
COPY preprocess_container/ preprocess_container/
COPY train_container/ train_container/
COPY nonML_container/ nonML_container/
COPY eval_container/ eval_container/
COPY inference_container/ inference_container/
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

FROM deps AS service
ARG SERVICE
ARG SERVICE_MODULE=${SERVICE}_container
ARG FLTS_VERSION=0.1.0
# The API port of the HTTP services (gateway 8000, inference 8001); empty for the Kafka workers.
ARG HTTP_PORT=""
LABEL org.opencontainers.image.title="flts-${SERVICE}" \
      org.opencontainers.image.description="FLTS ${SERVICE} service (python -m ${SERVICE_MODULE}.service)" \
      org.opencontainers.image.version="${FLTS_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-deps /wheels/flts-*.whl
# The image's default pipeline config; compose and the chart mount the same file at the same path.
COPY config/pipeline.yaml /etc/flts/pipeline.yaml
ENV FLTS_SERVICE_MODULE=${SERVICE_MODULE} \
    PIPELINE_CONFIG=/etc/flts/pipeline.yaml \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=${HTTP_PORT} \
    METRICS_PORT=9100
# The working directory is the one writable place (a tmpfs in compose, an emptyDir in the chart).
WORKDIR /tmp
USER 10001:10001
# /healthz: on the API port of the HTTP services (HTTP_PORT set), beside /metrics on a worker's METRICS_PORT
# (503 once its consumer has stalled with lag).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('HTTP_PORT') or os.environ['METRICS_PORT']), timeout=4)"]
CMD ["sh", "-c", "exec python -m \"$FLTS_SERVICE_MODULE\".service"]
