//! backend-monitor's server: a registry of local AI model backends, watched over gRPC with an OS
//! fallback, controlled through LocalAI's JSON API, and shown in a Leptos panel.

pub mod access;
pub mod allocator;
pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod gpu;
pub mod grpc;
pub mod headers;
pub mod host;
pub mod html;
pub mod logs;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod process;
pub mod registry;
pub mod shim;
pub mod startup;
pub mod supervisor;
