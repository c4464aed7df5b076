# Two stages: build with the Rust toolchain, run on a slim Debian with only the binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin gatehouse

FROM debian:bookworm-slim
RUN useradd --system --home /app gatehouse && mkdir -p /app/data /app/config && chown gatehouse /app/data
WORKDIR /app
COPY --from=build /src/target/release/gatehouse /usr/local/bin/gatehouse
COPY config/gatehouse.toml /app/config/gatehouse.toml
USER gatehouse
EXPOSE 8080
ENTRYPOINT ["gatehouse", "--config", "/app/config/gatehouse.toml"]
CMD ["serve"]
