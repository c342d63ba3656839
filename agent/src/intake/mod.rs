//! Intakes: the ways events get in. One file per way; all of them hand batches to the router.

pub mod connections;
pub mod forward;
pub mod grpc;
pub mod h2_authority;
pub mod http;
pub mod msgpack;
pub mod serve;
pub mod submit;
pub mod tracee;
pub mod tracee_event;
pub mod unix;
