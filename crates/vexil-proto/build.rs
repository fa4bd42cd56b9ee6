//! Generates the gRPC code from `proto/` with the `protoc` shipped in the
//! `protoc-bin-vendored` crate, so the build needs no system protoc and downloads nothing.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/flagd/evaluation/v1/evaluation.proto",
        "proto/flagd/evaluation/v2/evaluation.proto",
        "proto/flagd/sync/v1/sync.proto",
        "proto/vexil/v1/vexil.proto",
        "proto/vexil/v1/identity.proto",
    ];
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("descriptor.bin"))
        .compile_with_config(config, &protos, &["proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
