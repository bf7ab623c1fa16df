//! Plain server-rendered pages (sign-in, API reference): the shell they share and HTML escaping.
//! They run no script, so they work under the strictest CSP and without JavaScript.

/// A whole page: the panel's stylesheet and top bar, then `body` (trusted HTML) in a `<main>`
/// of class `class`.
pub fn page(title: &str, class: &str, body: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{title} · backend-monitor</title>
<link rel="stylesheet" href="/pkg/backend-monitor.css">
<link rel="icon" type="image/svg+xml" href="/favicon.svg">
</head>
<body>
<header class="topbar"><a class="brand" href="/"><img src="/favicon.svg" alt="" width="22" height="22">backend-monitor</a></header>
<main class="{class}">
{body}
</main>
</body>
</html>
"#,
        title = escape(title),
        class = escape(class),
    )
}

/// Escapes text for HTML content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_quotes_are_escaped() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn the_title_is_escaped_too() {
        assert!(page("<b>", "c", "").contains("<title>&lt;b&gt; · backend-monitor</title>"));
    }
}
