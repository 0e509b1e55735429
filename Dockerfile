# One image per binary of the workspace, from one Dockerfile. Build from the
# repository root, naming the binary:
#   docker build --build-arg BIN=coupon-service -t promo-dev/coupon-service:dev .
# BIN: coupon-service | timesale-service | point-service | promotion-operator.
# The Deployments always pass the subcommand (`serve`, `consume`, `run`), so
# the image has no default command. Building one binary with `--bin` also
# builds its crates with only the features it needs (the operator's
# platform without sqlx or utoipa).
FROM rust:1.95-bookworm AS build
ARG BIN
RUN test -n "$BIN" || (echo "set --build-arg BIN=<binary>" >&2; exit 1)
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin "$BIN" \
    && cp "target/release/$BIN" /app

# distroless: no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /app /usr/local/bin/app
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/app"]
