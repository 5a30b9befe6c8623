# One image for web, worker and beat. GPU hosts get a CUDA build of torch from
# pyproject's range; pass --build-arg TORCH_SPEC=torch==2.13.0 for a CPU image.
FROM python:3.11-slim
ARG TORCH_SPEC="torch>=2.4,<3"
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 RUNWRIGHT_DATA_DIR=/data
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
# Everything runs as this user, not root: a hole in the web app or a trainer cannot rewrite
# the code or take the container. /data is theirs, so a new volume mounted there is too.
# safe.directory: git would refuse the root-owned /app to this user, and the trainer
# records the commit it runs.
RUN useradd --system --uid 10001 --user-group --create-home runwright \
    && mkdir -p /data && chown runwright:runwright /data \
    && git config --system --add safe.directory /app
COPY pyproject.toml README.md ./
COPY modelcore ./modelcore
COPY webapp ./webapp
COPY workers ./workers
COPY benchmarks ./benchmarks
RUN pip install "$TORCH_SPEC" && pip install ".[gpu]"
COPY . .
USER runwright
VOLUME ["/data"]
EXPOSE 8000
CMD ["uvicorn", "webapp.asgi:application", "--host", "0.0.0.0", "--port", "8000"]
