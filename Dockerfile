# livecdn: one image for every node, started as `python -m KIND --config FILE`
# (KIND: origin, edge or balancer; python -m topology works too). Build at the repository root:
#   docker build -t livecdn:latest .
# Debian (bookworm) with CPython 3.11; PyAV comes as a wheel from PyPI with its own FFmpeg
# libraries, so the nodes need no ffmpeg binary.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY common ./common
COPY origin ./origin
COPY edge ./edge
COPY balancer ./balancer
COPY topology ./topology
RUN pip install --only-binary=av . \
    && useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin livecdn \
    && mkdir -p /etc/livecdn /var/lib/livecdn/records \
    && chown -R livecdn:livecdn /var/lib/livecdn

# not root; recordings belong on a volume: record_dir = "/var/lib/livecdn/records"
USER 10001:10001
# the nodes' default ports: origin RTMP/HTTP, edge RTMP/HTTP, balancer HTTP/control
EXPOSE 1935 8080 1936 8081 8090 8091
ENTRYPOINT ["python", "-m"]
CMD ["origin", "--config", "/etc/livecdn/origin.toml"]
