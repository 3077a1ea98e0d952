# eventstash: a multi-stage build. The first stage compiles the release
# binary (protos are compiled by protox at build time: no protoc needed);
# the second is a small Debian image with the binary, the shipped
# pipelines, protos and templates.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin eventstash

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 eventstash \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/eventstash --create-home eventstash
WORKDIR /opt/eventstash
COPY --from=build /src/target/release/eventstash /usr/local/bin/eventstash
COPY pipelines pipelines
COPY protos protos
COPY templates templates
ENV EVENTSTASH_DATA_DIR=/var/lib/eventstash \
    GRPC_BIND_ADDRESS=0.0.0.0:42043 \
    METRICS_BIND=0.0.0.0:9600
# Numeric, so that Kubernetes' runAsNonRoot can check it (deploy/kubernetes).
USER 10001:10001
EXPOSE 42043 9600
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["eventstash", "healthcheck"]
ENTRYPOINT ["eventstash"]
CMD ["run", "-c", "pipelines/default.toml"]
