FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY config ./config
RUN pip install --no-cache-dir . \
    && useradd --system --home /data lucie \
    && mkdir -p /data && chown lucie /data
USER lucie
ENV LUCIE_BOT_DATA_DIR=/data
VOLUME ["/data"]
ENTRYPOINT ["lucie-bot"]
CMD ["run", "--config", "/config/config.toml"]
