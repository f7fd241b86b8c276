//! Where a registry name is reached, with dockerd's rules: Docker Hub's
//! API host, mirrors for docker.io pulls, plain HTTP for loopback and
//! `--insecure-registry` entries (hostnames or CIDRs), HTTPS otherwise.

use std::net::IpAddr;

use crate::name::DEFAULT_DOMAIN;
use crate::ClientConfig;

/// Docker Hub's registry API.
pub const DOCKER_HUB: &str = "https://registry-1.docker.io";

/// One base URL to try, and how to speak to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `scheme://host[:port]` (a mirror may carry a path), no trailing `/`.
    pub base: String,
    /// Check the server certificate (false for insecure registries).
    pub verify: bool,
    /// Fall back to `http://` when HTTPS cannot connect (insecure
    /// non-loopback registries, as dockerd).
    pub http_fallback: bool,
    /// Try `https://` (unverified) when plain HTTP gets no registry answer
    /// (loopback registries serving TLS; dockerd tries both too).
    pub https_fallback: bool,
    /// A docker.io mirror: any failure moves on to the next endpoint.
    pub mirror: bool,
}

/// Endpoints for pulls of `domain`, in the order to try; `hub` is where
/// docker.io lives ([`DOCKER_HUB`] but for tests).
pub(crate) fn pull_endpoints(cfg: &ClientConfig, hub: &str, domain: &str) -> Vec<Endpoint> {
    let mut eps = Vec::new();
    if domain == DEFAULT_DOMAIN {
        for m in &cfg.mirrors {
            if let Some(ep) = url_endpoint(cfg, m, true) {
                eps.push(ep);
            }
        }
    }
    eps.push(push_endpoint(cfg, hub, domain));
    eps
}

/// The registry itself (pushes, logins: never a mirror).
pub(crate) fn push_endpoint(cfg: &ClientConfig, hub: &str, domain: &str) -> Endpoint {
    if domain == DEFAULT_DOMAIN {
        return url_endpoint(cfg, hub, false).unwrap_or_else(|| Endpoint {
            base: DOCKER_HUB.to_string(),
            verify: true,
            http_fallback: false,
            https_fallback: false,
            mirror: false,
        });
    }
    let host = host_of(domain);
    if is_loopback(host) {
        Endpoint {
            base: format!("http://{domain}"),
            verify: false,
            http_fallback: false,
            https_fallback: true,
            mirror: false,
        }
    } else if is_insecure(cfg, domain) {
        Endpoint {
            base: format!("https://{domain}"),
            verify: false,
            http_fallback: true,
            https_fallback: false,
            mirror: false,
        }
    } else {
        Endpoint {
            base: format!("https://{domain}"),
            verify: true,
            http_fallback: false,
            https_fallback: false,
            mirror: false,
        }
    }
}

/// An endpoint given as a URL (mirrors, the docker.io override): the
/// scheme is as written, verification off for loopback and insecure hosts.
fn url_endpoint(cfg: &ClientConfig, base: &str, mirror: bool) -> Option<Endpoint> {
    let url = url::Url::parse(base.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let host = url.host_str()?;
    let domain = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let insecure = is_loopback(host) || is_insecure(cfg, &domain);
    let base = url.as_str().trim_end_matches('/').to_string();
    Some(Endpoint {
        base,
        verify: !insecure,
        http_fallback: false,
        https_fallback: false,
        mirror,
    })
}

/// Whether TLS to `url`'s host (e.g. a token realm) skips verification:
/// loopback and insecure registries, as for their API endpoints.
pub(crate) fn verify_url(cfg: &ClientConfig, url: &url::Url) -> bool {
    let Some(host) = url.host_str() else {
        return true;
    };
    let domain = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    !(is_loopback(host) || is_insecure(cfg, &domain) || is_insecure(cfg, host))
}

/// The host part of `host[:port]` / `[v6]:port`, brackets kept.
fn host_of(domain: &str) -> &str {
    if domain.starts_with('[') {
        match domain.find(']') {
            Some(i) => &domain[..=i],
            None => domain,
        }
    } else {
        domain.split(':').next().unwrap_or(domain)
    }
}

fn ip_of(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// 127.0.0.0/8, ::1 and `localhost` (Docker's default insecure set, plus
/// IPv6 loopback).
pub(crate) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || ip_of(host).is_some_and(|ip| ip.is_loopback())
}

/// `--insecure-registry` match: the exact `host[:port]` or a CIDR holding
/// the IP of an IP-literal host.
fn is_insecure(cfg: &ClientConfig, domain: &str) -> bool {
    let ip = ip_of(host_of(domain));
    cfg.insecure_registries.iter().any(|entry| {
        let entry = entry
            .trim()
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        if entry.eq_ignore_ascii_case(domain) {
            return true;
        }
        match (entry.parse::<ipnet::IpNet>(), ip) {
            (Ok(net), Some(ip)) => net.contains(&ip),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(insecure: &[&str], mirrors: &[&str]) -> ClientConfig {
        ClientConfig {
            insecure_registries: insecure.iter().map(|s| s.to_string()).collect(),
            mirrors: mirrors.iter().map(|s| s.to_string()).collect(),
            user_agent: String::new(),
        }
    }

    #[test]
    fn docker_hub_and_mirrors() {
        let c = cfg(
            &[],
            &["http://127.0.0.1:5000/", "https://mirror.example.com"],
        );
        let eps = pull_endpoints(&c, DOCKER_HUB, "docker.io");
        let bases: Vec<_> = eps.iter().map(|e| e.base.as_str()).collect();
        assert_eq!(
            bases,
            [
                "http://127.0.0.1:5000",
                "https://mirror.example.com",
                DOCKER_HUB
            ]
        );
        assert!(eps[0].mirror && !eps[0].verify);
        assert!(eps[1].verify);
        assert!(!eps[2].mirror);
        assert_eq!(push_endpoint(&c, DOCKER_HUB, "docker.io").base, DOCKER_HUB);
        assert_eq!(pull_endpoints(&c, DOCKER_HUB, "quay.io").len(), 1);
        let local = push_endpoint(&c, "http://127.0.0.1:5001", "docker.io");
        assert_eq!(local.base, "http://127.0.0.1:5001");
        assert!(!local.mirror);
    }

    #[test]
    fn loopback_is_plain_http() {
        let c = cfg(&[], &[]);
        for d in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "localhost",
        ] {
            let ep = push_endpoint(&c, DOCKER_HUB, d);
            assert_eq!(ep.base, format!("http://{d}"));
            assert!(!ep.http_fallback && ep.https_fallback);
        }
        let ep = push_endpoint(&c, DOCKER_HUB, "reg.example.com:5000");
        assert_eq!(ep.base, "https://reg.example.com:5000");
        assert!(ep.verify);
    }

    #[test]
    fn insecure_by_name_or_cidr() {
        let c = cfg(&["reg.example.com:5000", "10.0.0.0/8"], &[]);
        let ep = push_endpoint(&c, DOCKER_HUB, "reg.example.com:5000");
        assert!(!ep.verify && ep.http_fallback);
        assert!(push_endpoint(&c, DOCKER_HUB, "reg.example.com").verify);
        let ep = push_endpoint(&c, DOCKER_HUB, "10.1.2.3:443");
        assert!(!ep.verify && ep.http_fallback);
        assert!(push_endpoint(&c, DOCKER_HUB, "11.1.2.3").verify);
    }
}
