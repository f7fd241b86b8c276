//! IDs and names: generation, Docker's name rule, and resolution of full
//! IDs, unique prefixes and names (with or without the leading "/").

use rand::RngCore;

/// 64 random hex digits; never all digits (Docker avoids IDs that parse as
/// numbers, which confuse short-ID displays).
pub fn new_id() -> String {
    loop {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        let id = hex::encode(b);
        if !id[..12].bytes().all(|c| c.is_ascii_digit()) {
            return id;
        }
    }
}

/// Docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (so at least two characters).
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Strip one leading "/" and check the rule. Error text is Docker's.
pub fn normalize_name(raw: &str) -> Result<String, String> {
    let name = raw.strip_prefix('/').unwrap_or(raw);
    if !valid_name(name) {
        return Err(format!(
            "Invalid container name ({raw}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        ));
    }
    Ok(name.to_string())
}

/// Outcome of looking a reference up among `(id, name)` pairs.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(String),
    NotFound,
    Ambiguous,
}

/// Docker's order: exact full ID, then exact name, then unique ID prefix.
pub fn resolve<'a>(reference: &str, items: impl Iterator<Item = (&'a str, &'a str)>) -> Lookup {
    if reference.is_empty() {
        return Lookup::NotFound;
    }
    let name = reference.strip_prefix('/').unwrap_or(reference);
    let mut prefix_hits: Vec<&str> = Vec::new();
    let mut by_name = None;
    for (id, n) in items {
        if id == reference {
            return Lookup::Found(id.to_string());
        }
        if n == name {
            by_name = Some(id);
        }
        if id.starts_with(reference) {
            prefix_hits.push(id);
        }
    }
    if let Some(id) = by_name {
        return Lookup::Found(id.to_string());
    }
    match prefix_hits.len() {
        0 => Lookup::NotFound,
        1 => Lookup::Found(prefix_hits[0].to_string()),
        _ => Lookup::Ambiguous,
    }
}

/// A random `adjective_surname` name like Docker's, unique among `taken`.
pub fn random_name(taken: impl Fn(&str) -> bool) -> String {
    const LEFT: &[&str] = &[
        "admiring",
        "agitated",
        "amazing",
        "bold",
        "brave",
        "busy",
        "clever",
        "cool",
        "dazzling",
        "eager",
        "ecstatic",
        "elegant",
        "epic",
        "fervent",
        "focused",
        "friendly",
        "gallant",
        "gifted",
        "happy",
        "hopeful",
        "inspiring",
        "jolly",
        "keen",
        "kind",
        "laughing",
        "lucid",
        "magical",
        "modest",
        "nice",
        "nostalgic",
        "optimistic",
        "peaceful",
        "pensive",
        "quirky",
        "relaxed",
        "serene",
        "sharp",
        "silly",
        "stoic",
        "tender",
        "trusting",
        "vibrant",
        "vigilant",
        "wizardly",
        "youthful",
        "zealous",
    ];
    const RIGHT: &[&str] = &[
        "albattani",
        "archimedes",
        "babbage",
        "bohr",
        "curie",
        "darwin",
        "dijkstra",
        "einstein",
        "euler",
        "fermat",
        "feynman",
        "galileo",
        "gauss",
        "hopper",
        "hypatia",
        "kepler",
        "knuth",
        "lamarr",
        "lovelace",
        "maxwell",
        "meitner",
        "newton",
        "noether",
        "pascal",
        "ritchie",
        "shannon",
        "tesla",
        "thompson",
        "turing",
        "wozniak",
        "yalow",
    ];
    let mut rng = rand::rng();
    for attempt in 0.. {
        let l = LEFT[(rng.next_u32() as usize) % LEFT.len()];
        let r = RIGHT[(rng.next_u32() as usize) % RIGHT.len()];
        let name = if attempt < 10 {
            format!("{l}_{r}")
        } else {
            format!("{l}_{r}{}", rng.next_u32() % 10)
        };
        if !taken(&name) {
            return name;
        }
    }
    unreachable!()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, new_id());
    }

    #[test]
    fn name_rule() {
        assert!(valid_name("web"));
        assert!(valid_name("a1_b.c-d"));
        assert!(!valid_name("a"));
        assert!(!valid_name("_web"));
        assert!(!valid_name("we b"));
        assert!(!valid_name("web/x"));
        assert_eq!(normalize_name("/web").unwrap(), "web");
        assert!(normalize_name("-x")
            .unwrap_err()
            .contains("only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"));
    }

    #[test]
    fn resolution_order() {
        let a = format!("abc1{}", "0".repeat(60));
        let b = format!("abc2{}", "0".repeat(60));
        let items = [(a.as_str(), "web"), (b.as_str(), "abc1")];
        let r = |s: &str| resolve(s, items.iter().copied());
        assert_eq!(r(&a), Lookup::Found(a.clone()));
        assert_eq!(r("web"), Lookup::Found(a.clone()));
        assert_eq!(r("/web"), Lookup::Found(a.clone()));
        // A name wins over an ID prefix.
        assert_eq!(r("abc1"), Lookup::Found(b.clone()));
        assert_eq!(r("abc2"), Lookup::Found(b.clone()));
        assert_eq!(r("abc"), Lookup::Ambiguous);
        assert_eq!(r("zzz"), Lookup::NotFound);
        assert_eq!(r(""), Lookup::NotFound);
    }

    #[test]
    fn random_names_avoid_taken() {
        let n = random_name(|_| false);
        assert!(valid_name(&n));
        let n2 = random_name(|x| x == n);
        assert_ne!(n, n2);
    }
}
