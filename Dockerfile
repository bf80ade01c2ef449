# syntax=docker/dockerfile:1
# wtsbot: multi-stage build with cargo-chef (dependencies cached in their own layer),
# a slim non-root runtime, and a health check through the binary itself.

FROM rust:1.95-slim-bookworm AS chef
WORKDIR /app
RUN cargo install cargo-chef --locked --version 0.1.71

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin wtsbot --bin wts-sim

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates=20230311+deb12u1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/wtsbot --create-home wtsbot
COPY --from=builder /app/target/release/wtsbot /app/target/release/wts-sim /usr/local/bin/
COPY --chown=wtsbot:wtsbot rules/ /var/lib/wtsbot/rules/
WORKDIR /var/lib/wtsbot
USER 10001
ENV WTSBOT__SERVER__BIND=0.0.0.0:8080 \
    WTSBOT__DATABASE__URL=sqlite:///var/lib/wtsbot/data/wtsbot.db?mode=rwc \
    WTSBOT__RULES__DIR=/var/lib/wtsbot/rules \
    WTSBOT__LOG__FORMAT=json
RUN mkdir -p /var/lib/wtsbot/data
# The SQLite file and the rules (with their files) outlive the container.
VOLUME ["/var/lib/wtsbot/data", "/var/lib/wtsbot/rules"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["wtsbot", "healthcheck"]
ENTRYPOINT ["wtsbot"]
CMD ["serve"]
