# The `sluice` binary on Debian bookworm, linked against Debian's RocksDB (as in
# development: .cargo/config.toml points the rocksdb crate at librocksdb-dev).
#   docker build -t sluice .
#   docker run -p 6875:6875 -p 8081:8081 sluice serve --pg-listen 0.0.0.0:6875 --rest-listen 0.0.0.0:8081

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      librocksdb-dev libsnappy-dev clang libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sluice-server \
 && cp target/release/sluice /usr/local/bin/sluice

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      librocksdb7.8 libsnappy1v5 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /var/lib/sluice sluice
COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice
USER sluice
WORKDIR /var/lib/sluice
# pgwire, REST, Flight SQL, coordinator gRPC, worker gRPC/Flight
EXPOSE 6875 8081 50051 6123 6124
ENTRYPOINT ["sluice"]
CMD ["serve", "--pg-listen", "0.0.0.0:6875", "--rest-listen", "0.0.0.0:8081", "--flight-listen", "0.0.0.0:50051", "--data-dir", "/var/lib/sluice/data"]
