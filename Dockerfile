# geopush worker image: the same package `make run` installs, pinned by constraints.txt.
# The fence-matching kernel (Rust) is built in its own stage, portably (no host CPU flags).
FROM rust:1-slim-bookworm AS kernel
RUN apt-get update && apt-get install -y --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY kernel ./kernel
COPY scripts/kernel.sh ./scripts/kernel.sh
RUN mkdir geofences && GEOPUSH_KERNEL_RUSTFLAGS= bash scripts/kernel.sh

FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml constraints.txt README.md ./
COPY geofences ./geofences
COPY decisions ./decisions
COPY delivery ./delivery
COPY streams ./streams
COPY scripts/native.py ./scripts/native.py
COPY --from=kernel /src/geofences/_kernel.abi3.so ./geofences/_kernel.abi3.so
# the package, then its hot path compiled with mypyc (a C compiler only while building), then
# the package again with the compiled modules in it
RUN pip install --no-cache-dir -c constraints.txt . mypy \
 && apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && python scripts/native.py >/dev/null \
 && pip install --no-cache-dir --no-deps --force-reinstall . \
 && pip uninstall -y mypy && apt-get purge -y gcc libc6-dev && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/* build
COPY config ./config
ENV GEOPUSH_WEB_HOST=0.0.0.0 \
    GEOPUSH_DATA_DIR=/var/lib/geopush \
    GEOPUSH_CATALOG_PATH=/app/config/catalog
VOLUME /var/lib/geopush
EXPOSE 6066
ENTRYPOINT ["geopush"]
CMD ["worker"]
