//! Outbound policy: which origins a connector may reach and which addresses may be dialled.
//!
//! Pure functions only — nothing here opens a socket — so every rule is unit-tested,
//! including the private and metadata ranges that end-to-end tests must never aim at.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// One allowed origin pattern: `https://api.github.com`, `https://*.example.com`,
/// `http://127.0.0.1:8080`. A missing port means the scheme's default port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    scheme: String,
    host: HostMatch,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    /// Exactly this host (a domain lower-cased without a trailing dot, or an IP address).
    Exact(Host<String>),
    /// Any strict subdomain of this domain (`*.example.com` does not match `example.com`).
    SubdomainsOf(String),
}

/// Why a host pattern could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid allowed host `{pattern}`: {reason}")]
pub struct PatternError {
    pattern: String,
    reason: &'static str,
}

impl HostPattern {
    /// Whether requests it lets through travel unencrypted (`http`).
    pub fn is_plain_http(&self) -> bool {
        self.scheme == "http"
    }

    /// Parse `scheme://host[:port]`; the host may start with `*.`. Paths are not allowed.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let fail = |reason| PatternError {
            pattern: pattern.to_owned(),
            reason,
        };
        let (scheme, rest) = pattern.split_once("://").ok_or_else(|| fail("missing scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(fail("scheme must be http or https"));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') || rest.contains('@') {
            return Err(fail("only scheme, host and port are allowed"));
        }
        let (wildcard, rest) = match rest.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        if rest.contains('*') {
            return Err(fail(
                "`*` may only begin a pattern, as in `https://*.example.com`",
            ));
        }
        // Let the URL parser canonicalise the host and port exactly as it will for requests.
        let url = Url::parse(&format!("{scheme}://{rest}/")).map_err(|_| fail("not a valid host"))?;
        let host = url.host().ok_or_else(|| fail("missing host"))?;
        if wildcard && !matches!(host, Host::Domain(_)) {
            return Err(fail("wildcards apply to domain names only"));
        }
        let port = url.port_or_known_default().ok_or_else(|| fail("missing port"))?;
        let host = match (wildcard, host) {
            // `*.com`, `*.co.uk` or `*.github.io` would allow hosts anyone can register: a
            // connector that declares one can send its params anywhere. The public suffix list
            // tells these apart; a name it does not know (`*.acme.corp`) counts as under a
            // one-label suffix, as browsers treat it.
            (true, Host::Domain(domain))
                if psl::domain(domain.trim_end_matches('.').as_bytes()).is_none() =>
            {
                return Err(fail(
                    "a wildcard covers the subdomains of one registrable domain (`*.example.com`), not a public suffix such as `*.com`, `*.co.uk` or `*.github.io`",
                ));
            }
            (true, Host::Domain(domain)) => HostMatch::SubdomainsOf(canonical_domain(domain)),
            (_, host) => HostMatch::Exact(canonical(host)),
        };
        Ok(Self { scheme, host, port })
    }

    /// The pattern for exactly the origin of `url`.
    pub fn origin_of(url: &Url) -> Option<Self> {
        Some(Self {
            scheme: url.scheme().to_owned(),
            host: HostMatch::Exact(canonical(url.host()?)),
            port: url.port_or_known_default()?,
        })
    }

    /// Whether `url` falls under this pattern. Checked on every upstream request, so it
    /// compares in place rather than building the URL's canonical host.
    pub fn matches(&self, url: &Url) -> bool {
        let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) else {
            return false;
        };
        if url.scheme() != self.scheme || port != self.port {
            return false;
        }
        match (&self.host, host) {
            (HostMatch::Exact(Host::Domain(allowed)), Host::Domain(name)) => {
                name.trim_end_matches('.').eq_ignore_ascii_case(allowed)
            }
            (HostMatch::Exact(Host::Ipv4(allowed)), Host::Ipv4(ip)) => ip == *allowed,
            (HostMatch::Exact(Host::Ipv6(allowed)), Host::Ipv6(ip)) => ip == *allowed,
            (HostMatch::SubdomainsOf(domain), Host::Domain(name)) => {
                is_strict_subdomain(name.trim_end_matches('.'), domain)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            HostMatch::Exact(host) => write!(f, "{}://{}:{}", self.scheme, host, self.port),
            HostMatch::SubdomainsOf(domain) => write!(f, "{}://*.{}:{}", self.scheme, domain, self.port),
        }
    }
}

/// A host as patterns keep it: a domain lower-cased without a trailing dot, an IP as it is.
fn canonical(host: Host<&str>) -> Host<String> {
    match host {
        Host::Domain(domain) => Host::Domain(canonical_domain(domain)),
        Host::Ipv4(ip) => Host::Ipv4(ip),
        Host::Ipv6(ip) => Host::Ipv6(ip),
    }
}

fn canonical_domain(domain: &str) -> String {
    domain.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `name` is a subdomain of `domain` (lower-case), and not `domain` itself.
fn is_strict_subdomain(name: &str, domain: &str) -> bool {
    let Some(label_end) = name.len().checked_sub(domain.len() + 1) else {
        return false;
    };
    let name = name.as_bytes();
    label_end > 0 && name[label_end] == b'.' && name[label_end + 1..].eq_ignore_ascii_case(domain.as_bytes())
}

/// Whether any pattern in `allowlist` admits `url`. An empty allowlist admits nothing.
pub fn is_allowed(allowlist: &[HostPattern], url: &Url) -> bool {
    allowlist.iter().any(|pattern| pattern.matches(url))
}

/// Whether `url`'s host is this machine's loopback: `localhost` (or a name under it) or a
/// loopback address.
pub fn names_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The IP literal in `url`'s host, if it is one. The URL parser has already turned decimal,
/// octal and hex IPv4 spellings (`2130706433`, `0x7f000001`, `0177.0.0.1`) into addresses.
pub fn ip_literal(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        Host::Domain(_) => None,
    }
}

/// Which destination addresses the gateway may connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressPolicy {
    /// Only globally routable unicast addresses (the production default).
    PublicOnly,
    /// Also loopback and private ranges: the operator's explicit opt-in, e.g. for
    /// self-hosted upstreams on a private network, and for tests against loopback.
    AllowPrivate,
}

impl AddressPolicy {
    /// Whether the gateway may connect to `ip` under this policy.
    pub fn permits(self, ip: IpAddr) -> bool {
        self.refusal(ip).is_none()
    }

    /// Why the gateway may not connect to `ip` under this policy, in words for the refusal
    /// (`None`: it may). A developer whose upstream is on loopback learns the flag to pass.
    pub fn refusal(self, ip: IpAddr) -> Option<&'static str> {
        match classify(ip) {
            AddressClass::Public => None,
            AddressClass::Private if self == Self::AllowPrivate => None,
            AddressClass::Private => Some(
                "it is private (loopback, a local network), which the gateway reaches only when \
                 started with --allow-private-upstreams",
            ),
            AddressClass::Forbidden => Some(
                "the gateway never connects there (cloud metadata, link-local, multicast, reserved ranges)",
            ),
        }
    }
}

/// The classes of destination address that matter for SSRF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Globally routable unicast.
    Public,
    /// Loopback, RFC 1918, unique-local, CGNAT: reachable only with the operator's opt-in.
    Private,
    /// Never dialled: unspecified, broadcast, multicast, documentation and reserved ranges,
    /// link-local ranges and the cloud metadata addresses.
    Forbidden,
}

/// Classify `ip`, looking through IPv4-mapped and IPv4-compatible IPv6 forms.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    // Link-local 169.254.0.0/16 is where clouds put their metadata and credential services
    // (AWS, GCP, Azure and OpenStack metadata, ECS task roles, EKS pod identity, Tencent), and
    // no API lives there; so are Alibaba Cloud's metadata and Azure's WireServer.
    if ip.is_link_local() || ip == Ipv4Addr::new(100, 100, 100, 200) || ip == Ipv4Addr::new(168, 63, 129, 16)
    {
        return AddressClass::Forbidden;
    }
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || a == 0 || a >= 240 {
        return AddressClass::Forbidden;
    }
    // Documentation (TEST-NET-1/2/3), benchmarking, IETF protocol assignments.
    if (a, b, c) == (192, 0, 2)
        || (a, b, c) == (198, 51, 100)
        || (a, b, c) == (203, 0, 113)
        || (a == 198 && (b == 18 || b == 19))
        || (a, b, c) == (192, 0, 0)
    {
        return AddressClass::Forbidden;
    }
    let cgnat = a == 100 && (64..128).contains(&b);
    if ip.is_loopback() || ip.is_private() || cgnat {
        return AddressClass::Private;
    }
    AddressClass::Public
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let first = ip.segments()[0];
    if ip.is_unspecified() || ip.is_multicast() {
        return AddressClass::Forbidden;
    }
    // AWS's IPv6 metadata and credential endpoints (fd00:ec2::/32: metadata at ::254, EKS pod
    // identity at ::23), and link-local fe80::/10 as 169.254.0.0/16 is for IPv4.
    let link_local = (first & 0xffc0) == 0xfe80;
    if (first, ip.segments()[1]) == (0xfd00, 0x0ec2) || link_local {
        return AddressClass::Forbidden;
    }
    // Documentation 2001:db8::/32, discard 100::/64, and other reserved space outside 2000::/3.
    if (first == 0x2001 && ip.segments()[1] == 0x0db8) || first == 0x0100 {
        return AddressClass::Forbidden;
    }
    let unique_local = (first & 0xfe00) == 0xfc00;
    if ip.is_loopback() || unique_local {
        return AddressClass::Private;
    }
    if (first & 0xe000) != 0x2000 {
        // Not global unicast (2000::/3).
        return AddressClass::Forbidden;
    }
    AddressClass::Public
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`)
/// or NAT64 (`64:ff9b::a.b.c.d`) IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(tail);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL parses")
    }

    fn pattern(s: &str) -> HostPattern {
        HostPattern::parse(s).expect("test pattern parses")
    }

    #[test]
    fn exact_origin_matches_scheme_host_and_default_port() {
        let p = pattern("https://api.github.com");
        assert!(p.matches(&url("https://api.github.com/repos/a/b")));
        assert!(p.matches(&url("https://API.GitHub.com:443/x")));
        assert!(p.matches(&url("https://api.github.com./x")));
        assert!(!p.matches(&url("http://api.github.com/x")), "scheme must match");
        assert!(
            !p.matches(&url("https://api.github.com:8443/x")),
            "port must match"
        );
        assert!(!p.matches(&url("https://api.github.com.evil.io/x")));
        assert!(!p.matches(&url("https://evilapi.github.com/x")));
    }

    #[test]
    fn userinfo_does_not_fool_the_host_match() {
        let p = pattern("https://api.github.com");
        assert!(!p.matches(&url("https://api.github.com@evil.io/x")));
        assert!(p.matches(&url("https://evil.io@api.github.com/x")));
    }

    #[test]
    fn wildcard_matches_strict_subdomains_only() {
        let p = pattern("https://*.example.com");
        assert!(p.matches(&url("https://a.example.com/")));
        assert!(p.matches(&url("https://a.b.example.com/")));
        assert!(
            p.matches(&url("https://A.Example.COM./")),
            "case and a trailing dot"
        );
        assert!(!p.matches(&url("https://example.com/")));
        assert!(!p.matches(&url("https://.example.com/")), "an empty label");
        assert!(!p.matches(&url("https://badexample.com/")));
        assert!(!p.matches(&url("https://example.com.evil.io/")));
    }

    #[test]
    fn explicit_port_and_ip_literals() {
        let p = pattern("http://127.0.0.1:8080");
        assert!(p.matches(&url("http://127.0.0.1:8080/x")));
        assert!(!p.matches(&url("http://127.0.0.1:8081/x")));
        assert!(
            p.matches(&url("http://2130706433:8080/x")),
            "decimal spelling is the same host"
        );
        let v6 = pattern("http://[::1]:9000");
        assert!(v6.matches(&url("http://[0:0:0:0:0:0:0:1]:9000/")));
        assert!(!v6.matches(&url("http://127.0.0.1:9000/")), "another family");
        assert!(!pattern("https://*.example.com").matches(&url("https://127.0.0.1/")));
    }

    #[test]
    fn patterns_display_in_canonical_form() {
        let shown = |s: &str| pattern(s).to_string();
        assert_eq!(shown("https://API.GitHub.com."), "https://api.github.com:443");
        assert_eq!(shown("https://*.Example.com"), "https://*.example.com:443");
        assert_eq!(shown("http://[0::1]:9000"), "http://[::1]:9000");
        assert_eq!(shown("http://2130706433"), "http://127.0.0.1:80");
    }

    #[test]
    fn bad_patterns_are_rejected() {
        for bad in [
            "api.github.com",
            "ftp://x.com",
            "https://x.com/path",
            "https://*.1.2.3.4",
            "https://",
            "https://user@x.com",
            "https://*",
            "https://*.com",
            "https://*.com.",
            "https://*.co.uk",
            "https://*.CO.UK.",
            "https://*.github.io",
            "https://*.localhost",
            "https://api.*.example.com",
            "https://*.*.example.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad} should be rejected");
        }
        for good in [
            "https://*.example.com",
            "https://*.example.co.uk",
            "https://*.acme.corp",
            "https://*.acme.test",
        ] {
            assert!(HostPattern::parse(good).is_ok(), "{good} should be accepted");
        }
    }

    #[test]
    fn empty_allowlist_allows_nothing() {
        assert!(!is_allowed(&[], &url("https://api.github.com/")));
    }

    #[test]
    fn ip_spellings_are_normalised_by_the_parser() {
        for spelling in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
        ] {
            assert_eq!(
                ip_literal(&url(spelling)),
                Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                "{spelling}"
            );
        }
        assert_eq!(
            ip_literal(&url("http://localhost/")),
            None,
            "names are resolved, not parsed"
        );
    }

    #[test]
    fn address_classes() {
        let cases: &[(&str, AddressClass)] = &[
            ("8.8.8.8", AddressClass::Public),
            ("140.82.112.3", AddressClass::Public),
            ("2606:4700::1111", AddressClass::Public),
            ("127.0.0.1", AddressClass::Private),
            ("127.255.0.9", AddressClass::Private),
            ("10.1.2.3", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("100.64.0.1", AddressClass::Private),
            ("169.254.1.1", AddressClass::Forbidden),
            ("169.254.170.23", AddressClass::Forbidden),
            ("168.63.129.16", AddressClass::Forbidden),
            ("fd00:ec2::23", AddressClass::Forbidden),
            ("fd00:ec3::1", AddressClass::Private),
            ("::1", AddressClass::Private),
            ("fd12::1", AddressClass::Private),
            ("fe80::1", AddressClass::Forbidden),
            ("::ffff:169.254.170.23", AddressClass::Forbidden),
            ("::ffff:127.0.0.1", AddressClass::Private),
            ("::ffff:10.0.0.1", AddressClass::Private),
            ("::127.0.0.1", AddressClass::Private),
            ("64:ff9b::10.0.0.1", AddressClass::Private),
            ("169.254.169.254", AddressClass::Forbidden),
            ("::ffff:169.254.169.254", AddressClass::Forbidden),
            ("fd00:ec2::254", AddressClass::Forbidden),
            ("100.100.100.200", AddressClass::Forbidden),
            ("100.100.100.199", AddressClass::Private),
            ("169.254.0.23", AddressClass::Forbidden),
            ("0.0.0.0", AddressClass::Forbidden),
            ("::", AddressClass::Forbidden),
            ("255.255.255.255", AddressClass::Forbidden),
            ("224.0.0.1", AddressClass::Forbidden),
            ("ff02::1", AddressClass::Forbidden),
            ("192.0.2.1", AddressClass::Forbidden),
            ("2001:db8::1", AddressClass::Forbidden),
            ("240.0.0.1", AddressClass::Forbidden),
            ("172.32.0.1", AddressClass::Public),
            ("100.128.0.1", AddressClass::Public),
        ];
        for (ip, expected) in cases {
            let parsed: IpAddr = ip.parse().expect("test IP parses");
            assert_eq!(classify(parsed), *expected, "{ip}");
        }
    }

    #[test]
    fn policy_gates_private_addresses_on_opt_in() {
        let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
        let metadata: IpAddr = "169.254.169.254".parse().expect("ip");
        assert!(!AddressPolicy::PublicOnly.permits(loopback));
        assert!(AddressPolicy::AllowPrivate.permits(loopback));
        assert!(
            !AddressPolicy::AllowPrivate.permits(metadata),
            "metadata is never reachable"
        );
        assert!(AddressPolicy::PublicOnly.permits("1.1.1.1".parse().expect("ip")));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Every private-range IPv4 address is private, in every IPv6 wrapping too.
            #[test]
            fn private_ranges_are_never_public(host in any::<u32>(), range in 0usize..4) {
                let (base, mask): (u32, u32) = [
                    (0x0a00_0000, 0xff00_0000),
                    (0xac10_0000, 0xfff0_0000),
                    (0xc0a8_0000, 0xffff_0000),
                    (0x7f00_0000, 0xff00_0000),
                ][range];
                let ip = Ipv4Addr::from(base | (host & !mask));
                prop_assert_eq!(classify(IpAddr::V4(ip)), AddressClass::Private);
                prop_assert_eq!(classify(IpAddr::V6(ip.to_ipv6_mapped())), AddressClass::Private);
                prop_assert!(!AddressPolicy::PublicOnly.permits(IpAddr::V6(ip.to_ipv6_mapped())));
            }

            /// Decimal and hex spellings of any IPv4 address parse to that address, so the
            /// literal check sees what would be dialled.
            #[test]
            fn numeric_spellings_parse_to_the_same_address(n in any::<u32>()) {
                let ip = IpAddr::V4(Ipv4Addr::from(n));
                for spelling in [format!("http://{n}/"), format!("http://0x{n:x}/")] {
                    let parsed = Url::parse(&spelling).expect("numeric hosts parse");
                    prop_assert_eq!(ip_literal(&parsed), Some(ip));
                }
            }

            /// Parsing never panics, and an exact pattern matches no other host.
            #[test]
            fn patterns_match_only_their_own_host(
                pattern in "\\PC{0,40}",
                a in "[a-z]{1,10}",
                b in "[a-z]{1,10}",
            ) {
                let _ = HostPattern::parse(&pattern);
                let exact = HostPattern::parse(&format!("https://{a}.example.com")).expect("valid");
                let other = Url::parse(&format!("https://{b}.example.com/")).expect("valid");
                prop_assert_eq!(exact.matches(&other), a == b);
                let lookalike = Url::parse(&format!("https://{a}.example.com.{b}.net/")).expect("valid");
                prop_assert!(!exact.matches(&lookalike));
            }
        }
    }
}
