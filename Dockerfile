# Image of the project's processes (stream worker here; the same image runs the CLI). CPU-only torch keeps it small.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY topicfs ./topicfs
COPY stream ./stream
COPY offline_jobs ./offline_jobs
COPY serving ./serving
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu .
COPY feature_repo ./feature_repo
CMD ["python", "-m", "stream.cli", "worker"]
