//! The one request loop of the object stores: send, and send again after a lost connection,
//! a time-out, a throttle (429, 503) or a server error, with growing pauses. Each request is
//! rebuilt for every try (a signature carries the time), and each body is cheap to resend
//! (`bytes::Bytes`), so a part cut off mid-way is sent whole again.

use std::time::Duration;

use super::DestError;

/// Tries per request: the first and five more, about 6 s of pauses in all.
pub const ATTEMPTS: u32 = 6;

/// Sends the request `build` makes, retrying what a retry can fix. Any other answer, an
/// error status included, is returned for the caller to read.
pub async fn send(
    what: &str,
    mut build: impl FnMut() -> Result<reqwest::RequestBuilder, DestError>,
) -> Result<reqwest::Response, DestError> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            let pause = Duration::from_millis(200u64 << (attempt - 1).min(4));
            tokio::time::sleep(pause).await;
        }
        match build()?.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                if (status == 408 || status == 429 || status >= 500) && attempt + 1 < ATTEMPTS {
                    last = format!("HTTP {status}");
                    continue;
                }
                return Ok(response);
            }
            Err(err) => last = one_line(&err),
        }
    }
    Err(DestError::Network {
        what: what.to_owned(),
        message: format!("{last} (after {ATTEMPTS} tries)"),
    })
}

/// An error answer as a [`DestError`]: the status and the service's error code (`<Code>` in
/// both services' XML, or Blob Storage's `x-ms-error-code` header).
pub async fn error(what: &str, response: reqwest::Response) -> DestError {
    let status = response.status().as_u16();
    let header_code = response
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.unwrap_or_default();
    let code = header_code.or_else(|| super::xml::text(&body, "Code"));
    DestError::Http {
        what: what.to_owned(),
        status,
        code,
    }
}

/// The answer to a HEAD of one object, the same in Blob Storage and S3: its size (200), or
/// `None` when there is no such object (404); anything else is the error `what` names.
pub async fn object_size(
    what: &str,
    response: reqwest::Response,
) -> Result<Option<u64>, DestError> {
    match response.status().as_u16() {
        200 => Ok(Some(
            response
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0),
        )),
        404 => Ok(None),
        _ => Err(error(what, response).await),
    }
}

/// An error and its causes on one line, without a URL's query string (where a SAS token
/// may be).
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    redact_queries(&text)
}

/// Cuts every `?query` out of URLs in `text`.
pub fn redact_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_query = false;
    for c in text.chars() {
        if c == '?' {
            in_query = true;
            out.push_str("?…");
            continue;
        }
        if in_query && (c.is_whitespace() || c == ')' || c == '"' || c == '\'') {
            in_query = false;
        }
        if !in_query {
            out.push(c);
        }
    }
    out
}

/// The client every store uses: rustls with the platform's and Mozilla's roots (as the vault
/// client), plus `COLDVAULT_CA_CERT` when set.
pub fn client() -> Result<reqwest::Client, DestError> {
    let ca = std::env::var_os("COLDVAULT_CA_CERT").filter(|v| !v.is_empty());
    crate::vault::transport::build_http_client(ca.as_deref().map(std::path::Path::new))
        .map_err(|e| DestError::Credentials(format!("cannot build the HTTP client: {e}")))
}

/// Percent-encodes all but RFC 3986's unreserved characters (and `/` when `keep_slash`), as
/// both services' signatures expect.
pub fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_cut_from_error_text() {
        assert_eq!(
            redact_queries("error sending request for url (https://a/c/x?sig=SECRET&sv=1)"),
            "error sending request for url (https://a/c/x?…)"
        );
    }

    #[test]
    fn encoding_keeps_unreserved_characters() {
        assert_eq!(encode("a b/c~d+", false), "a%20b%2Fc~d%2B");
        assert_eq!(encode("a b/c", true), "a%20b/c");
    }
}
