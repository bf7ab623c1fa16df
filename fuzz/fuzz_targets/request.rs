//! Fuzzes [`server::api::parse_model_request`], the parser behind every request that names a
//! model: whatever the query, `Content-Type` and body, it answers with a valid request or a
//! 400, and never panics.
//!
//! Input layout (so seeds are readable): the first line is the raw query string, the second
//! the `Content-Type` header (an empty line stands for an absent one), the rest is the body.
//! Non-UTF-8 bytes in the first two lines are replaced, as they cannot reach the parser there.

#![no_main]

use libfuzzer_sys::fuzz_target;
use server::api::parse_model_request;
use server::error::ApiError;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let query = parts.next().map(String::from_utf8_lossy);
    let content_type = parts.next().map(String::from_utf8_lossy);
    let body = parts.next().unwrap_or_default();
    let query = query.as_deref().filter(|q| !q.is_empty());
    let content_type = content_type.as_deref().filter(|c| !c.is_empty());
    match parse_model_request(query, content_type, body) {
        Ok(request) => {
            assert!(!request.model.trim().is_empty(), "{request:?}");
            if let Some(path) = &request.return_to {
                assert!(server::access::is_panel_path(path), "{request:?}");
            }
        }
        Err(ApiError::BadRequest(_)) => {}
        Err(other) => panic!("a malformed request must be a 400, got {other:?}"),
    }
});
