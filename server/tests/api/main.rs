//! Integration tests: a real backend-monitor on loopback, real gRPC backends, real child
//! processes. One test binary, so the helpers are compiled and linked once.

mod helpers;

mod binary;
mod cli;
mod faults;
mod hardening;
mod lifecycle;
mod memory;
mod metrics;
mod monitor;
mod openapi;
mod ownership;
mod security;
mod supervision;
