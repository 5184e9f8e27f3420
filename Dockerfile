# geopush worker image: the same package `make run` installs, pinned by constraints.txt.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml constraints.txt README.md ./
COPY geofences ./geofences
COPY decisions ./decisions
COPY delivery ./delivery
COPY streams ./streams
RUN pip install --no-cache-dir -c constraints.txt .
COPY config ./config
ENV GEOPUSH_WEB_HOST=0.0.0.0 \
    GEOPUSH_DATA_DIR=/var/lib/geopush \
    GEOPUSH_CATALOG_PATH=/app/config/catalog
VOLUME /var/lib/geopush
EXPOSE 6066
ENTRYPOINT ["geopush"]
CMD ["worker"]
