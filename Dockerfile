# One image for every process of the project (docker-compose.yml): the offline topic job, `feast apply` + materialize,
# the stream worker and its Feast pusher, the candidate API, the topic browser and `feast serve`.
# CPU-only torch keeps it small. It runs as an unprivileged user; its HEALTHCHECK asks the stream worker's /health
# (the default command), and docker-compose.yml gives the other services checks of their own.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY topicfs ./topicfs
COPY stream ./stream
COPY offline_jobs ./offline_jobs
COPY serving ./serving
COPY topicfs_app ./topicfs_app
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu .
COPY feature_repo ./feature_repo
# The user the processes run as, with a home for library caches (Hugging Face, matplotlib); the folders compose mounts
# volumes on (artifacts, the Feast registry) belong to it, so a fresh named volume starts writable by it.
RUN useradd --create-home --uid 10001 --user-group topicfs \
    && mkdir -p /data/artifacts /app/feature_repo/data \
    && chown -R topicfs:topicfs /data /app/feature_repo/data
ENV TOPICFS_PATHS__ARTIFACTS_DIR=/data/artifacts \
    TOPICFS_FEAST__REPO_PATH=/app/feature_repo \
    TOPICFS_STREAM__METRICS_PORT=9100 \
    TOPICFS_STREAM__PUSHER_METRICS_PORT=9101
USER topicfs
EXPOSE 9100 9101
# `topicfs stream health` exits 1 when the worker's /health does not answer (its event loop is stuck or it is gone)
HEALTHCHECK --interval=15s --timeout=10s --start-period=120s --retries=3 CMD ["topicfs", "stream", "health"]
CMD ["topicfs", "stream", "worker"]
