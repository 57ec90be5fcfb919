# syntax=docker/dockerfile:1

# Builder: install Parley and its dependencies into a virtualenv that the runtime
# stage copies whole, so the runtime image has no compilers or build caches.
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/parley
ENV PATH=/opt/parley/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md* ./
COPY server ./server
COPY db ./db
COPY realtime ./realtime
COPY llm ./llm
COPY rag ./rag
COPY search ./search
COPY memory ./memory
COPY errors ./errors
RUN pip install --upgrade pip setuptools wheel && pip install .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/parley/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000
RUN groupadd --system parley && useradd --system --gid parley --home-dir /app parley \
    && mkdir -p /app && chown parley:parley /app
COPY --from=builder /opt/parley /opt/parley
WORKDIR /app
USER parley
EXPOSE 8000
# The image has no curl: ask /healthz with the Python that is already there.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/healthz\", timeout=2).status == 200 else 1)"]
# SIGTERM starts a graceful drain (DRAIN_TIMEOUT_S); give it time before SIGKILL.
STOPSIGNAL SIGTERM
CMD ["parley", "serve", "--host", "0.0.0.0"]
