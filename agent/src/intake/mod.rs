//! Intakes: the ways events get in. One file per way; all of them hand batches to the router.

pub mod http;
pub mod serve;
pub mod unix;
