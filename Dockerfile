# prodloop: `docker build -t prodloop .`; the entrypoint is the `prodloop` CLI
# (`docker run prodloop run --config /etc/prodloop/prodloop.yaml`).

# the native hot path (native/): one abi3 wheel, built with cargo and maturin
FROM rust:1.95-slim-bookworm AS native
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/maturin \
 && /opt/maturin/bin/pip install --no-cache-dir maturin==1.16.0
COPY native /native
RUN /opt/maturin/bin/maturin build --release --manifest-path /native/Cargo.toml --out /wheels

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git: `prodloop history scan` reads repositories with the git CLI
RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY attribution ./attribution
COPY collector ./collector
COPY schemas ./schemas
COPY --from=native /wheels /wheels
# the wheel carries schemas/ (migrations, event schemas) as collector/_schemas
RUN pip install . /wheels/prodloop_native-*.whl \
 && rm -rf /src /wheels \
 && groupadd --system --gid 10001 prodloop \
 && useradd --system --uid 10001 --gid prodloop --home-dir /var/lib/prodloop --create-home prodloop

USER 10001:10001
WORKDIR /var/lib/prodloop
# receivers (OTLP/gRPC, OTLP/HTTP + events API) and /metrics, /healthz, /readyz
EXPOSE 4317 4318 9464
ENTRYPOINT ["prodloop"]
CMD ["run"]
