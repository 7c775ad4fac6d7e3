//! ikv writer: the writer library ([`Writer`]), the HTTP API ([`service`]) with its two faces
//! (AWS Lambda, local HTTP server), and a client for that API ([`client`]).

pub mod client;
pub mod service;
pub mod writer;

pub use writer::{CommitPolicy, PartitionCommit, WriteReceipt, Writer, WriterOptions};
