//! ikv writer: the writer library ([`Writer`]), the HTTP API (`service`, feature `service`)
//! with its two faces (AWS Lambda, local HTTP server), and a client for that API
//! ([`client`]). Embedding processes (the Python wheel) take the library and the client
//! only: the server's dependencies (axum, the Lambda runtime, clap) stay out of them.

pub mod client;
#[cfg(feature = "service")]
pub mod service;
pub mod wire;
pub mod writer;

pub use writer::{CommitPolicy, PartitionCommit, WriteReceipt, Writer, WriterOptions};
