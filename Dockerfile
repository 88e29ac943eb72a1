# Multi-stage build: compile with the Rust toolchain, run from a small Debian image with only the binary.
#   docker build -t wecom-callback .
#   docker run -p 8080:8080 -e WECOM_LISTEN=0.0.0.0:8080 -e DATABASE_URL=postgres://... \
#     -e WECOM_TOKEN=... -e WECOM_ENCODING_AES_KEY=... -e WECOM_CORP_ID=... \
#     -v wecom-spool:/var/lib/wecom-callback wecom-callback
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
COPY examples ./examples
COPY openapi.yaml config.example.toml ./
RUN cargo build --release --locked --bin wecom-callback

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/wecom-callback --create-home --shell /usr/sbin/nologin wecom
COPY --from=build /src/target/release/wecom-callback /usr/local/bin/wecom-callback
USER wecom
# The spool (callbacks acknowledged while PostgreSQL was down) lives here: mount a volume on it.
ENV STATE_DIRECTORY=/var/lib/wecom-callback WECOM_LISTEN=0.0.0.0:8080
VOLUME ["/var/lib/wecom-callback"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s CMD ["/bin/sh", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q 200 <&3"]
ENTRYPOINT ["/usr/local/bin/wecom-callback"]
CMD ["serve"]
