//! Just enough XML for the answers of Blob Storage and S3: the text of named elements, in
//! document order, with the five predefined entities and numeric references decoded. Both
//! services answer with small, flat, well-formed documents (lists, upload ids, errors); a
//! full parser would add a crate for no gain. Anything unexpected yields `None`, never a
//! panic.

/// The raw inner text of every `<tag>…</tag>` element in `xml`, in order (nested elements
/// included as text). Self-closing `<tag/>` elements yield an empty string.
pub fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let open_attrs = format!("<{tag} ");
    let empty = format!("<{tag}/>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    loop {
        let starts = [
            rest.find(&open).map(|i| (i, open.len(), false)),
            rest.find(&open_attrs).and_then(|i| {
                rest[i..].find('>').map(|end| {
                    let self_closing = rest[i..i + end].ends_with('/');
                    (i, end + 1, self_closing)
                })
            }),
            rest.find(&empty).map(|i| (i, empty.len(), true)),
        ];
        let Some((at, len, self_closing)) = starts.into_iter().flatten().min_by_key(|s| s.0) else {
            break;
        };
        let body_start = at + len;
        if self_closing {
            out.push("");
            rest = &rest[body_start..];
            continue;
        }
        let Some(end) = rest[body_start..].find(&close) else {
            break;
        };
        out.push(&rest[body_start..body_start + end]);
        rest = &rest[body_start + end + close.len()..];
    }
    out
}

/// The decoded text of the first `<tag>` element in `xml`.
pub fn text(xml: &str, tag: &str) -> Option<String> {
    elements(xml, tag).first().map(|raw| unescape(raw))
}

/// Decodes `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;` and `&#N;` / `&#xN;`; an unknown
/// reference is kept as it is.
pub fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let Some(semi) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let name = &tail[1..semi];
        let decoded = match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => name
                .strip_prefix("#x")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes text for an XML element body.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_elements_in_order_with_attributes_and_empties() {
        let xml = r#"<?xml version="1.0"?><R><Blobs><Blob><Name>a&amp;b</Name></Blob><Blob><Name>c</Name></Blob></Blobs><NextMarker/><E x="1">t</E></R>"#;
        let blobs = elements(xml, "Blob");
        assert_eq!(blobs.len(), 2);
        assert_eq!(text(blobs[0], "Name").as_deref(), Some("a&b"));
        assert_eq!(text(blobs[1], "Name").as_deref(), Some("c"));
        assert_eq!(text(xml, "NextMarker").as_deref(), Some(""));
        assert_eq!(text(xml, "E").as_deref(), Some("t"));
        assert_eq!(text(xml, "Missing"), None);
    }

    #[test]
    fn unescapes_references_and_keeps_unknown_ones() {
        assert_eq!(unescape("&lt;&#65;&#x42;&bogus;&"), "<AB&bogus;&");
        assert_eq!(escape("<a&b>"), "&lt;a&amp;b&gt;");
    }

    #[test]
    fn broken_documents_yield_nothing() {
        assert!(elements("<Name>unterminated", "Name").is_empty());
        assert!(elements("", "Name").is_empty());
    }
}
