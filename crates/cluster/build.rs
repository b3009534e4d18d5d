//! Generates the control plane's gRPC code from `proto/cluster.proto`, with the protoc
//! that `protoc-bin-vendored` ships (no system protoc needed, works offline).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the env.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=../../proto/cluster.proto");
    tonic_prost_build::configure()
        .compile_protos(&["../../proto/cluster.proto"], &["../../proto"])?;
    Ok(())
}
