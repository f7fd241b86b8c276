//! Repository name and tag grammar of the OCI distribution spec. Checked
//! before any path is built from a name, so a name can never escape the
//! storage root or collide with the `_`-prefixed bookkeeping directories.

/// Longest repository name accepted (distribution's limit; the spec asks
/// clients to stay under 255 including the host name).
pub const MAX_NAME_LEN: usize = 255;

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`
pub fn valid_repo_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        let sep = b[i];
        while i < b.len() && b[i] == sep {
            i += 1;
        }
        let run = i - start;
        let ok = match sep {
            b'.' => run == 1,
            b'_' => run <= 2,
            b'-' => true,
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    if b.is_empty() || b.len() > 128 {
        return false;
    }
    let first = b[0].is_ascii_alphanumeric() || b[0] == b'_';
    first
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names() {
        for ok in [
            "a",
            "busybox",
            "library/busybox",
            "a/b/c",
            "foo.bar",
            "foo_bar",
            "foo__bar",
            "foo---bar",
            "x0/y-1/z__2",
        ] {
            assert!(valid_repo_name(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "Foo/bar",
            "/a",
            "a/",
            "a//b",
            "_a",
            "a_",
            "a___b",
            "a..b",
            "a-",
            "-a",
            "a:b",
            "../etc",
            "a/../b",
            "_manifests",
            "a b",
        ] {
            assert!(!valid_repo_name(bad), "{bad}");
        }
        assert!(valid_repo_name(&"a".repeat(255)));
        assert!(!valid_repo_name(&"a".repeat(256)));
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.0", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(valid_tag(ok), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "sha256:abc", &"t".repeat(129)] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }
}
