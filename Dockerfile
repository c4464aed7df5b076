# Gatehouse in two stages: build with Debian's Rust (rustc-web from bookworm-security is new
# enough for edition 2024, and needs no image but Debian's), run on a slim Debian with only the
# binary: no compiler, no shell tools beyond the base, a non-root user.
FROM debian:bookworm-slim AS build
# Extra CA certificates for a network that inspects https (CI copies the host's here; the folder
# is empty in the repository).
COPY deploy/ca-certificates/ /usr/local/share/ca-certificates/
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates rustc-web cargo-web gcc libc6-dev make perl \
    && update-ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, in their own layer: a change to Gatehouse's code rebuilds only Gatehouse.
COPY Cargo.toml Cargo.lock ./
# How the bundled SQLite is compiled (see .cargo/config.toml).
COPY .cargo .cargo
COPY benches benches
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin gatehouse \
    && rm -rf src
COPY src src
COPY templates templates
COPY migrations migrations
COPY static static
# COPY keeps the files' own times, which may be older than the placeholder just built.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin gatehouse

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin gatehouse \
    && install -d -o gatehouse -g gatehouse /app/data
WORKDIR /app
COPY --from=build /src/target/release/gatehouse /usr/local/bin/gatehouse
COPY config/gatehouse.toml /app/config/gatehouse.toml
ENV GATEHOUSE_CONFIG=/app/config/gatehouse.toml \
    GATEHOUSE_LISTEN=0.0.0.0:8080
USER gatehouse
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=5s --start-period=20s --retries=3 CMD ["gatehouse", "healthcheck"]
ENTRYPOINT ["gatehouse"]
CMD ["serve"]
