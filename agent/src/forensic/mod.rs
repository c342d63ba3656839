//! The forensic log's integrity: the hash chain every line of the `log` action carries
//! ([`chain`]), its shipping to object storage ([`ship`]) and its check, `hooker log verify`
//! ([`verify`]). The `log` action itself is
//! [`crate::action`]'s `log.rs`.

pub mod chain;
pub mod ship;
pub mod verify;
