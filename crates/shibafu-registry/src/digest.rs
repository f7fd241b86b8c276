//! Content digests (`algorithm:hex`) and the streaming hasher that computes
//! them while a blob is written. ring's SHA-2 is assembly, so hashing keeps up
//! with the disk even in debug builds.

use std::fmt;
use std::str::FromStr;

/// A digest string that is not `sha256:<64 hex>` or `sha512:<128 hex>`.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("invalid digest {0:?}")]
    Invalid(String),
    #[error("unsupported digest algorithm {0:?}")]
    Unsupported(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    fn ring(self) -> &'static ring::digest::Algorithm {
        match self {
            Algorithm::Sha256 => &ring::digest::SHA256,
            Algorithm::Sha512 => &ring::digest::SHA512,
        }
    }
}

/// A validated digest; `hex` is lowercase and of the algorithm's length, so it
/// is safe to use as a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    alg: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Digest of a whole in-memory buffer (manifests).
    pub fn of(alg: Algorithm, data: &[u8]) -> Digest {
        let mut h = Hasher::new(alg);
        h.update(data);
        h.finish()
    }

    pub fn from_parts(alg: Algorithm, hex: &str) -> Result<Digest, DigestError> {
        format!("{}:{}", alg.name(), hex).parse()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg.name(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Invalid(s.to_string()))?;
        let grammar_ok = !alg.is_empty()
            && alg
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+._-".contains(&c))
            && !hex.is_empty()
            && hex
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"=_-".contains(&c));
        if !grammar_ok {
            return Err(DigestError::Invalid(s.to_string()));
        }
        let alg =
            Algorithm::from_name(alg).ok_or_else(|| DigestError::Unsupported(s.to_string()))?;
        if hex.len() != alg.hex_len()
            || !hex
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err(DigestError::Invalid(s.to_string()));
        }
        Ok(Digest {
            alg,
            hex: hex.to_string(),
        })
    }
}

/// Incremental hasher; `Clone` so an upload's state can be kept between
/// chunks without re-reading what is already on disk.
#[derive(Clone)]
pub struct Hasher {
    alg: Algorithm,
    ctx: ring::digest::Context,
}

impl Hasher {
    pub fn new(alg: Algorithm) -> Self {
        Hasher {
            alg,
            ctx: ring::digest::Context::new(alg.ring()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    pub fn update(&mut self, data: &[u8]) {
        self.ctx.update(data);
    }

    pub fn finish(self) -> Digest {
        Digest {
            alg: self.alg,
            hex: hex::encode(self.ctx.finish().as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_hash() {
        let d = Digest::of(Algorithm::Sha256, b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        let mut h = Hasher::new(Algorithm::Sha512);
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), Digest::of(Algorithm::Sha512, b"abc"));
    }

    #[test]
    fn rejects() {
        assert!(matches!(
            "sha256".parse::<Digest>(),
            Err(DigestError::Invalid(_))
        ));
        assert!(matches!(
            "sha256:abc".parse::<Digest>(),
            Err(DigestError::Invalid(_))
        ));
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(matches!(
            upper.parse::<Digest>(),
            Err(DigestError::Invalid(_))
        ));
        let traversal = format!("sha256:../{}", "a".repeat(61));
        assert!(traversal.parse::<Digest>().is_err());
        let md5 = format!("md5:{}", "a".repeat(32));
        assert!(matches!(
            md5.parse::<Digest>(),
            Err(DigestError::Unsupported(_))
        ));
    }
}
