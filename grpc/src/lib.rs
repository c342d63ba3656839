//! Generated gRPC code: Hooker's intake service (`hooker.v1`) and the subset of Tracee's API
//! (`tracee.v1beta1`) the Tracee subscriber reads, from `proto/` at the repository root.
//! Each package also carries its encoded descriptor set, for server reflection.

#![forbid(unsafe_code)]

pub mod hooker {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic)]
        tonic::include_proto!("hooker.v1");

        /// The encoded `FileDescriptorSet` of `hooker/v1/intake.proto` (with its imports).
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            include_bytes!(concat!(env!("OUT_DIR"), "/hooker_v1_descriptor.bin"));
    }
}

pub mod tracee {
    pub mod v1beta1 {
        #![allow(clippy::all, clippy::pedantic)]
        tonic::include_proto!("tracee.v1beta1");

        /// The encoded `FileDescriptorSet` of `tracee/v1beta1/tracee.proto` (with its imports).
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            include_bytes!(concat!(env!("OUT_DIR"), "/tracee_v1beta1_descriptor.bin"));
    }
}

/// Go's `omitempty`: leave zero values out of the JSON of the serde-derived Tracee types.
fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// protojson's enum rendering for `PacketMetadata.direction`: the value's name, or its number when
/// the enum does not know it.
fn packet_direction<S: serde::Serializer>(value: &i32, serializer: S) -> Result<S::Ok, S::Error> {
    match tracee::v1beta1::PacketDirection::try_from(*value) {
        Ok(direction) => serializer.serialize_str(direction.as_str_name()),
        Err(_) => serializer.serialize_i32(*value),
    }
}

/// protojson's rendering of a 64-bit integer: a decimal string.
fn int64_string<S: serde::Serializer>(value: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}
