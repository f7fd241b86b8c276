//! `Range` (blob GET) and `Content-Range` (chunked upload PATCH) parsing, and
//! tag/catalog pagination: small pure functions kept apart from the handlers
//! so they can be tested exhaustively.

/// A header value that cannot be satisfied or parsed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("malformed range {0:?}")]
    Malformed(String),
    #[error("range {0:?} not satisfiable for {1} bytes")]
    Unsatisfiable(String, u64),
}

/// Resolves a GET `Range` header against a blob of `size` bytes into an
/// inclusive `(first, last)` byte range. `Ok(None)` means "serve the whole
/// blob": RFC 9110 lets a server ignore multi-range and non-bytes units.
pub fn parse_range(header: &str, size: u64) -> Result<Option<(u64, u64)>, RangeError> {
    let h = header.trim();
    let Some(spec) = h.strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec
        .trim()
        .split_once('-')
        .ok_or_else(|| RangeError::Malformed(h.to_string()))?;
    let num = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| RangeError::Malformed(h.to_string()))
    };
    let unsat = || RangeError::Unsatisfiable(h.to_string(), size);
    if a.trim().is_empty() {
        // Suffix range: the last N bytes.
        let n = num(b)?;
        if n == 0 || size == 0 {
            return Err(unsat());
        }
        return Ok(Some((size.saturating_sub(n), size - 1)));
    }
    let first = num(a)?;
    let last = if b.trim().is_empty() {
        u64::MAX
    } else {
        num(b)?
    };
    if last < first {
        return Err(RangeError::Malformed(h.to_string()));
    }
    if first >= size {
        return Err(unsat());
    }
    Ok(Some((first, last.min(size - 1))))
}

/// Parses an upload `Content-Range`: the spec's `<start>-<end>` (inclusive),
/// also accepting the RFC forms `bytes start-end/total` and `bytes=start-end`
/// that some clients send.
pub fn parse_content_range(header: &str) -> Result<(u64, u64), RangeError> {
    let h = header.trim();
    let bad = || RangeError::Malformed(h.to_string());
    let s = h
        .strip_prefix("bytes=")
        .or_else(|| h.strip_prefix("bytes "))
        .unwrap_or(h);
    let s = s.split_once('/').map_or(s, |(r, _)| r);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let first: u64 = a.trim().parse().map_err(|_| bad())?;
    let last: u64 = b.trim().parse().map_err(|_| bad())?;
    if last < first {
        return Err(bad());
    }
    Ok((first, last))
}

/// The `Range` header value the spec wants in upload responses: the
/// inclusive range of bytes received so far (`0-0` before the first byte,
/// as distribution answers).
pub fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

/// One page of a sorted list: the entries strictly after `last`, at most `n`
/// of them (`None` = all), and whether more follow.
pub fn paginate(sorted: &[String], n: Option<usize>, last: Option<&str>) -> (Vec<String>, bool) {
    let start = match last {
        Some(l) => sorted.partition_point(|x| x.as_str() <= l),
        None => 0,
    };
    let rest = &sorted[start..];
    match n {
        Some(n) if n < rest.len() => (rest[..n].to_vec(), true),
        _ => (rest.to_vec(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=90-1000", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-1000", 100), Ok(Some((0, 99))));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert!(matches!(
            parse_range("bytes=100-", 100),
            Err(RangeError::Unsatisfiable(..))
        ));
        assert!(matches!(
            parse_range("bytes=-0", 100),
            Err(RangeError::Unsatisfiable(..))
        ));
        assert!(matches!(
            parse_range("bytes=5-2", 100),
            Err(RangeError::Malformed(_))
        ));
        assert!(matches!(
            parse_range("bytes=x-2", 100),
            Err(RangeError::Malformed(_))
        ));
        assert!(matches!(
            parse_range("bytes=0-0", 0),
            Err(RangeError::Unsatisfiable(..))
        ));
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Ok((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Ok((100, 199)));
        assert_eq!(parse_content_range("bytes=5-5"), Ok((5, 5)));
        assert!(parse_content_range("10-5").is_err());
        assert!(parse_content_range("abc").is_err());
        assert_eq!(upload_range(0), "0-0");
        assert_eq!(upload_range(100), "0-99");
    }

    #[test]
    fn pages() {
        let v: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(paginate(&v, None, None), (v.clone(), false));
        assert_eq!(paginate(&v, Some(2), None), (v[..2].to_vec(), true));
        assert_eq!(paginate(&v, Some(2), Some("b")), (v[2..].to_vec(), false));
        assert_eq!(paginate(&v, Some(10), Some("a")), (v[1..].to_vec(), false));
        assert_eq!(paginate(&v, Some(0), None), (vec![], true));
        assert_eq!(paginate(&v, None, Some("bb")), (v[2..].to_vec(), false));
        assert_eq!(paginate(&v, Some(1), Some("z")), (vec![], false));
    }
}
