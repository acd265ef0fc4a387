//! Compiles `proto/sluice/v1/sluice.proto` (and the Envoy rate limit API Sluice also serves,
//! `proto/envoy/service/ratelimit/v3/rls.proto`) with the vendored `protoc`, so building never needs a
//! system protobuf compiler. The descriptor set is written too, for gRPC server reflection.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    // SAFETY-free: build scripts are single-threaded, and tonic-prost-build reads PROTOC from the env.
    env::set_var("PROTOC", protoc);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("sluice_descriptor.bin"))
        .compile_protos(
            &[
                PathBuf::from("proto/sluice/v1/sluice.proto"),
                PathBuf::from("proto/envoy/service/ratelimit/v3/rls.proto"),
            ],
            &[PathBuf::from("proto"), include],
        )?;
    Ok(())
}
