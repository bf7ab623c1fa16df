//! How a page's first data travels from the server's render to the browser's hydration.
//!
//! Leptos' default resource codec decodes JSON from a `&str`, while server functions decode
//! their answers from bytes: two serde_json readers, so the WebAssembly bundle carried two
//! copies of every shared type's decoder. [`JsonBytes`] keeps the JSON but decodes from bytes,
//! like the server functions, so each decoder is compiled once.

use leptos::prelude::{ArcResource, Resource};
use leptos::server::codee::{Decoder, Encoder};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// JSON, decoded from the bytes of the string (see the module documentation).
pub struct JsonBytes;

impl<T: Serialize> Encoder<T> for JsonBytes {
    type Error = serde_json::Error;
    type Encoded = String;

    fn encode(value: &T) -> Result<String, Self::Error> {
        serde_json::to_string(value)
    }
}

impl<T: DeserializeOwned> Decoder<T> for JsonBytes {
    type Error = serde_json::Error;
    type Encoded = str;

    fn decode(value: &str) -> Result<T, Self::Error> {
        serde_json::from_slice(value.as_bytes())
    }
}

/// A resource loaded by `fetcher` whenever `source` changes, carried to the browser as
/// [`JsonBytes`]: [`Resource::new`] with the codec the server functions use.
#[track_caller]
pub fn resource<S, T, Fut>(
    source: impl Fn() -> S + Send + Sync + 'static,
    fetcher: impl Fn(S) -> Fut + Send + Sync + 'static,
) -> Resource<T, JsonBytes>
where
    S: PartialEq + Clone + Send + Sync + 'static,
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    ArcResource::new_with_options(source, fetcher, false).into()
}
