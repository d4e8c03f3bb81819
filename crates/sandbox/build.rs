//! Compiles Kubernetes' .proto files (proto/, as go-to-protobuf generates them upstream) into a
//! descriptor set with rust-protobuf's pure-Rust parser, for the sandbox's protobuf bodies.

use protobuf::Message;

fn main() {
    // Every file, dependencies first: the descriptor set holds only the inputs.
    let inputs: Vec<String> = [
        "apimachinery/pkg/runtime/schema",
        "apimachinery/pkg/runtime",
        "apimachinery/pkg/util/intstr",
        "apimachinery/pkg/api/resource",
        "apimachinery/pkg/apis/meta/v1",
        "api/core/v1",
        "api/apps/v1",
        "api/policy/v1",
        "api/coordination/v1",
        "api/events/v1",
        "api/rbac/v1",
        "api/admissionregistration/v1",
        "api/storage/v1",
        "api/autoscaling/v1",
        "api/authorization/v1",
        "api/authentication/v1",
    ]
    .iter()
    .map(|p| format!("proto/{p}/generated.proto"))
    .collect();
    println!("cargo:rerun-if-changed=proto");
    let fds = protobuf_parse::Parser::new()
        .pure()
        .include("proto")
        .inputs(&inputs)
        .file_descriptor_set()
        .expect("Kubernetes .proto files parse");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(
        out.join("kubernetes.fds"),
        fds.write_to_bytes().expect("descriptor set encodes"),
    )
    .expect("descriptor set written");
}
