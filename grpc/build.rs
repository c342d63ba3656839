//! Compiles `../proto` with protox (pure Rust, no system `protoc`) and tonic-prost-build, and
//! writes each package's encoded descriptor set for server reflection.

use std::path::PathBuf;

use prost::Message;

/// Tracee argument types that Tracee's `Event.MarshalJSON` renders with protojson (proto field
/// names, zero values omitted, enums by name, 64-bit integers as strings); they derive
/// `serde::Serialize`, with the field attributes in [`PROTOJSON_FIELDS`], to render the same way.
const TRACEE_JSON_TYPES: &[&str] = &[
    "HookedSyscalls",
    "HookedSymbolData",
    "HookedSeqOps",
    "IPv4",
    "IPv6",
    "TCP",
    "UDP",
    "ICMP",
    "ICMPv6",
    "DNS",
    "DNSQuestion",
    "DNSResourceRecord",
    "DNSSOA",
    "DNSSRV",
    "DNSMX",
    "DNSOPT",
    "DNSURI",
    "DnsQuestions",
    "DnsResponses",
    "DnsQueryData",
    "DnsAnswer",
    "DnsResponseData",
    "PacketMetadata",
    "HTTP",
    "HTTPRequest",
    "HTTPResponse",
    "HttpHeader",
];

/// Fields of those types where protojson differs from serde's default rendering.
const PROTOJSON_FIELDS: &[(&str, &str)] = &[
    (
        "PacketMetadata.direction",
        "#[serde(serialize_with = \"crate::packet_direction\")]",
    ),
    (
        "HTTP.content_length",
        "#[serde(serialize_with = \"crate::int64_string\")]",
    ),
    (
        "HTTPRequest.content_length",
        "#[serde(serialize_with = \"crate::int64_string\")]",
    ),
    (
        "HTTPResponse.content_length",
        "#[serde(serialize_with = \"crate::int64_string\")]",
    ),
    ("DNSMX.Preference", "#[serde(rename = \"Preference\")]"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let protos = manifest.join("../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", protos.display());

    let hooker = protox::compile(["hooker/v1/intake.proto"], [&protos])?;
    std::fs::write(out.join("hooker_v1_descriptor.bin"), hooker.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .btree_map(".")
        .compile_fds(hooker)?;

    let tracee = protox::compile(["tracee/v1beta1/tracee.proto"], [&protos])?;
    std::fs::write(
        out.join("tracee_v1beta1_descriptor.bin"),
        tracee.encode_to_vec(),
    )?;
    let mut builder = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .btree_map(".");
    for name in TRACEE_JSON_TYPES {
        let path = format!(".tracee.v1beta1.{name}");
        builder = builder
            .type_attribute(&path, "#[derive(serde::Serialize)]")
            .field_attribute(&path, "#[serde(skip_serializing_if = \"crate::is_zero\")]");
    }
    for (field, attribute) in PROTOJSON_FIELDS {
        builder = builder.field_attribute(format!(".tracee.v1beta1.{field}"), attribute);
    }
    builder.compile_fds(tracee)?;
    Ok(())
}
