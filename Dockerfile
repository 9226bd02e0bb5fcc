# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target proxy    -t fluxbase/proxy .
#   docker build --target postgres -t fluxbase/postgres .
# The postgres image is the official postgres:15 image plus the extension;
# its init script creates the extension and sets the authenticator password
# from FLUXBASE_AUTHENTICATOR_PASSWORD.

ARG RUST_VERSION=1.95

# ---- proxy -----------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS proxy-build
# lettre's SMTP TLS links against OpenSSL (rust:bookworm ships libssl-dev);
# SAML signatures are checked by xmlsec1 (bindings generated with clang);
# nasm assembles rav1e's AVIF encoder.
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libclang-dev pkg-config libxml2-dev libxmlsec1-dev nasm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p fluxbase-proxy

FROM debian:bookworm-slim AS proxy
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libssl3 libxml2 libxmlsec1 libxmlsec1-openssl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin fluxbase
COPY --from=proxy-build /src/target/release/fluxbase /usr/local/bin/fluxbase
USER 10001:10001
ENV FLUXBASE_SERVER_LISTEN=0.0.0.0:54321 \
    FLUXBASE_LOG_FORMAT=json
EXPOSE 54321
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:54321/health || exit 1
ENTRYPOINT ["/usr/local/bin/fluxbase"]
CMD ["serve"]

# ---- postgres with the extension ----------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS extension-build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libclang-dev pkg-config postgresql-server-dev-15 \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-pgrx --version 0.18.0 --locked
WORKDIR /src
COPY . .
RUN cargo pgrx init --pg15 /usr/lib/postgresql/15/bin/pg_config \
 && cd extension \
 && cargo pgrx package --pg-config /usr/lib/postgresql/15/bin/pg_config \
      --no-default-features --features pg15 --out-dir /out

FROM postgres:15-bookworm AS postgres
COPY --from=extension-build /out/usr/ /usr/
COPY docker/initdb-fluxbase.sh /docker-entrypoint-initdb.d/10-fluxbase.sh
# As Supabase's Postgres: realtime messages sent from SQL reach the proxies by
# logical decoding (docs/realtime.md); each proxy with a realtime socket holds
# one temporary slot.
CMD ["postgres", "-c", "wal_level=logical", "-c", "max_replication_slots=20"]
