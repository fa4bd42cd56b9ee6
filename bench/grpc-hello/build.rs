//! Generates the gRPC code from `proto/` with the `protoc` shipped in the
//! `protoc-bin-vendored` crate, as `crates/vexil-proto/build.rs` does: no system protoc, no
//! download.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/hello/v1/hello.proto"];
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(false)
        .compile_with_config(config, &protos, &["proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
