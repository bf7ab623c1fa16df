//! The page's URL: which page it shows and what its query string says, read from the request on
//! the server and from `window.location` in the browser, so both render the same page. The
//! panel has two pages and plain links between them, so it needs no client-side router (which
//! would weigh about 60 KB in the WebAssembly bundle).

/// The path and query string (without `?`) of the page being rendered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    /// The URL's path, still percent-encoded.
    pub path: String,
    /// The URL's query string, still encoded.
    pub query: String,
}

impl Location {
    /// The URL being rendered: the request's on the server, the address bar's in the browser.
    pub fn current() -> Self {
        #[cfg(feature = "ssr")]
        {
            leptos::prelude::use_context::<http::request::Parts>()
                .map(|parts| Self {
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or_default().to_owned(),
                })
                .unwrap_or_default()
        }
        #[cfg(all(feature = "hydrate", not(feature = "ssr")))]
        {
            let location = leptos::prelude::window().location();
            Self {
                path: location.pathname().unwrap_or_default(),
                query: location
                    .search()
                    .unwrap_or_default()
                    .trim_start_matches('?')
                    .to_owned(),
            }
        }
        #[cfg(not(any(feature = "ssr", feature = "hydrate")))]
        {
            Self::default()
        }
    }

    /// The page this path shows.
    pub fn route(&self) -> Route {
        match self.path.as_str() {
            "/" | "" => Route::Panel,
            path => match path.strip_prefix("/models/") {
                Some(segment) if !segment.is_empty() && !segment.contains('/') => {
                    Route::Model(percent_decode(segment, false))
                }
                _ => Route::NotFound,
            },
        }
    }

    /// The decoded value of `key` in the query string (form encoding: `+` is a space), if any.
    pub fn query_value(&self, key: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name, true) == key).then(|| percent_decode(value, true))
        })
    }
}

/// A page of the panel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/`: every backend.
    Panel,
    /// `/models/<name>`: one model, by its decoded name.
    Model(String),
    /// Any other path.
    NotFound,
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_as_space`); invalid escapes and invalid
/// UTF-8 are kept or replaced rather than refused, since a URL is whatever the user typed.
fn percent_decode(text: &str, plus_as_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let escaped = (byte == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                i += 3;
            }
            None => {
                out.push(if plus_as_space && byte == b'+' {
                    b' '
                } else {
                    byte
                });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a model name for use as one URL path segment.
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The path of a model's page.
pub fn model_path(name: &str) -> String {
    format!("/models/{}", path_segment(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &str, query: &str) -> Location {
        Location {
            path: path.to_owned(),
            query: query.to_owned(),
        }
    }

    #[test]
    fn model_names_are_encoded_as_one_path_segment() {
        assert_eq!(model_path("llama-3.1_8b~q4"), "/models/llama-3.1_8b~q4");
        assert_eq!(model_path("a b/c?d"), "/models/a%20b%2Fc%3Fd");
        assert_eq!(model_path("é"), "/models/%C3%A9");
    }

    #[test]
    fn paths_choose_the_page() {
        assert_eq!(at("/", "").route(), Route::Panel);
        assert_eq!(
            at("/models/demo-chat", "").route(),
            Route::Model("demo-chat".into())
        );
        for name in ["a b/c?d", "é", "100%", "x+y"] {
            assert_eq!(
                at(&model_path(name), "").route(),
                Route::Model(name.into()),
                "{name}"
            );
        }
        for path in ["/models/", "/models", "/models/a/b", "/nope", "/api"] {
            assert_eq!(at(path, "").route(), Route::NotFound, "{path}");
        }
    }

    #[test]
    fn query_values_are_form_decoded() {
        let location = at("/", "notice=model+stopped%3A+freed%201.5%20GiB&error=&x");
        assert_eq!(
            location.query_value("notice").as_deref(),
            Some("model stopped: freed 1.5 GiB")
        );
        assert_eq!(location.query_value("error").as_deref(), Some(""));
        assert_eq!(location.query_value("x").as_deref(), Some(""));
        assert_eq!(location.query_value("missing"), None);
        assert_eq!(
            at("/", "a=%zz%4").query_value("a").as_deref(),
            Some("%zz%4")
        );
        assert_eq!(
            at("/", "a=%FF").query_value("a").as_deref(),
            Some("\u{FFFD}")
        );
    }
}
