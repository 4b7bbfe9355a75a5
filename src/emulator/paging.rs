//! Paging for every list: `maxresults` 1–25 (else 400 `BadParameter`), an opaque `$skiptoken`,
//! and an absolute `nextLink` shaped like Azure's: explicit port, `api-version` then
//! `$skiptoken` then `maxresults`, `null` on the last page.
//!
//! The ragged switch makes pages vary the way Azure's do: some pages come back empty but still
//! carry a `nextLink`, some short, and the last page may be empty, so a client that stops at the
//! first empty page is caught.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::error::ApiError;

/// Azure's largest page.
pub const MAX_RESULTS: u32 = 25;

/// What the client asked for: the query's `maxresults` and `$skiptoken`.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub maxresults: Option<String>,
    pub skiptoken: Option<String>,
}

/// How the emulator pages: the page size when the client gives none, and the ragged switch.
#[derive(Debug, Clone, Copy)]
pub struct PagingMode {
    pub default_page_size: u32,
    pub ragged: bool,
}

/// One page: the items and the absolute link to the next page, if any.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_link: Option<String>,
}

/// The decoded `$skiptoken`: where the previous page stopped and how many pages came before.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    after: String,
    page: u32,
}

fn decode_marker(skiptoken: Option<&str>) -> Result<Option<Marker>, ApiError> {
    match skiptoken {
        None | Some("") => Ok(None),
        Some(token) => {
            let bytes = URL_SAFE_NO_PAD
                .decode(token.trim_end_matches('='))
                .map_err(|_| bad_token())?;
            Ok(Some(
                serde_json::from_slice::<Marker>(&bytes).map_err(|_| bad_token())?,
            ))
        }
    }
}

/// The sort key the previous page stopped after (`None` on the first page), so a list can
/// copy only what the requested page needs; an invalid token is 400 as in [`paginate`].
pub fn skip_after(skiptoken: Option<&str>) -> Result<Option<String>, ApiError> {
    Ok(decode_marker(skiptoken)?.map(|m| m.after))
}

fn bad_token() -> ApiError {
    ApiError::bad_parameter("The $skiptoken parameter is invalid.")
}

/// Checks `maxresults`: absent, or an integer from 1 to 25.
pub fn parse_maxresults(raw: Option<&str>) -> Result<Option<u32>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    match raw.trim().parse::<i64>() {
        Ok(n) if (1..=i64::from(MAX_RESULTS)).contains(&n) => Ok(u32::try_from(n).ok()),
        _ => Err(ApiError::bad_parameter(format!(
            "Invalid maxresults value '{raw}': it must be an integer between 1 and {MAX_RESULTS}."
        ))),
    }
}

/// Cuts one page out of `items`, which must be sorted by `sort_key` (unique, ascending).
/// `link_base` is the absolute URL of the list without a query (`https://host:port/secrets`).
pub fn paginate<T>(
    items: Vec<T>,
    sort_key: impl Fn(&T) -> String,
    request: &PageRequest,
    mode: PagingMode,
    link_base: &str,
    api_version: &str,
) -> Result<Page<T>, ApiError> {
    let maxresults = parse_maxresults(request.maxresults.as_deref())?;
    let size = maxresults
        .unwrap_or(mode.default_page_size)
        .clamp(1, MAX_RESULTS) as usize;
    let marker = decode_marker(request.skiptoken.as_deref())?;
    let page_no = marker.as_ref().map_or(0, |m| m.page);
    let remaining: Vec<T> = match &marker {
        None => items,
        Some(m) => items
            .into_iter()
            .filter(|item| sort_key(item) > m.after)
            .collect(),
    };
    let take = if mode.ragged {
        match page_no % 3 {
            1 => 0,
            2 => size.div_ceil(2),
            _ => size,
        }
    } else {
        size
    };
    let total = remaining.len();
    let page: Vec<T> = remaining.into_iter().take(take).collect();
    // Ragged mode also ends on an empty page with `nextLink: null`, as Azure sometimes does.
    let more = page.len() < total || (mode.ragged && total > 0 && page.len() == total);
    let next_link = if more {
        let after = match (page.last(), &marker) {
            (Some(last), _) => sort_key(last),
            (None, Some(m)) => m.after.clone(),
            (None, None) => String::new(),
        };
        let token = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Marker {
                after,
                page: page_no + 1,
            })
            .map_err(|e| ApiError::internal(e.to_string()))?,
        );
        let mut link = format!("{link_base}?api-version={api_version}&$skiptoken={token}");
        if let Some(n) = maxresults {
            link.push_str(&format!("&maxresults={n}"));
        }
        Some(link)
    } else {
        None
    };
    Ok(Page {
        items: page,
        next_link,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(n: usize, size: &str, ragged: bool) -> (Vec<String>, usize, usize) {
        let items: Vec<String> = (0..n).map(|i| format!("s{i:03}")).collect();
        let mode = PagingMode {
            default_page_size: 25,
            ragged,
        };
        let mut request = PageRequest {
            maxresults: Some(size.to_string()),
            skiptoken: None,
        };
        let (mut seen, mut pages, mut empty) = (Vec::new(), 0, 0);
        loop {
            let page = paginate(
                items.clone(),
                |s| s.clone(),
                &request,
                mode,
                "https://h:443/secrets",
                "7.6",
            )
            .unwrap();
            pages += 1;
            if page.items.is_empty() {
                empty += 1;
            }
            seen.extend(page.items);
            let Some(link) = page.next_link else { break };
            assert!(link.starts_with("https://h:443/secrets?api-version=7.6&$skiptoken="));
            assert!(link.ends_with(&format!("&maxresults={size}")));
            let token = link
                .split("$skiptoken=")
                .nth(1)
                .unwrap()
                .split('&')
                .next()
                .unwrap();
            request.skiptoken = Some(token.to_string());
        }
        (seen, pages, empty)
    }

    #[test]
    fn full_pages_cover_everything_once() {
        let (seen, pages, empty) = walk(60, "3", false);
        assert_eq!(seen.len(), 60);
        assert_eq!(pages, 20);
        assert_eq!(empty, 0);
    }

    #[test]
    fn ragged_pages_include_empty_ones_and_still_cover_everything() {
        let (seen, _, empty) = walk(10, "2", true);
        assert_eq!(seen.len(), 10);
        assert!(empty >= 2);
    }

    #[test]
    fn maxresults_outside_range_is_refused() {
        assert!(parse_maxresults(Some("26")).is_err());
        assert!(parse_maxresults(Some("0")).is_err());
        assert_eq!(parse_maxresults(Some("25")).unwrap(), Some(25));
    }
}
