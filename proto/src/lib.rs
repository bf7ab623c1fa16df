//! The gRPC `Backend` contract shared by backend-monitor and the backends it watches.
//!
//! The messages and field numbers follow LocalAI's `backend.proto`, so any LocalAI backend can be
//! monitored and the demo backend can be driven by LocalAI. Unknown fields sent by newer backends
//! are skipped by prost, so upstream additions do not break decoding.

mod generated {
    #![allow(warnings, clippy::all, clippy::pedantic)]
    tonic::include_proto!("backend");
}

pub use generated::status_response::State;
pub use generated::*;
