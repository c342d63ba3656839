//! AWS Signature Version 4 for one request, with ring's SHA-256 and HMAC: no AWS SDK.
//!
//! Signs `host`, `x-amz-date`, `x-amz-security-token` (with temporary credentials) and whatever
//! headers the caller passes; the payload hash is always the real body's. The canonical path is
//! encoded once, as in AWS's published test suite (the only paths used here have nothing to encode).

use chrono::{DateTime, Utc};
use ring::hmac;

use crate::action::alert::{hex, sha256_hex};
use crate::config::Secret;

/// Access key, secret key and, for temporary credentials, the session token.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// Where and what a signature is for.
pub struct Scope<'a> {
    pub region: &'a str,
    pub service: &'a str,
}

/// The headers to add to the request: `host`, `x-amz-date`, maybe `x-amz-security-token`, and
/// `authorization`.
pub fn sign(
    method: &str,
    url: &reqwest::Url,
    headers: &[(&str, &str)],
    body: &[u8],
    credentials: &Credentials,
    scope: &Scope<'_>,
    now: DateTime<Utc>,
) -> Vec<(&'static str, String)> {
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let date = now.format("%Y%m%d").to_string();
    let mut added = vec![("host", host(url)), ("x-amz-date", amz_date.clone())];
    if let Some(token) = &credentials.session_token {
        added.push(("x-amz-security-token", token.expose().to_string()));
    }
    let mut signed: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), normalise(value)))
        .chain(
            added
                .iter()
                .map(|(name, value)| (name.to_string(), normalise(value))),
        )
        .collect();
    signed.sort();
    let signed_names = signed
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = signed
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    let canonical_request = format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{signed_names}\n{}",
        canonical_path(url.path()),
        canonical_query(url.query().unwrap_or_default()),
        sha256_hex(body)
    );
    let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{credential_scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let key = signing_key(
        credentials.secret_access_key.expose(),
        &date,
        scope.region,
        scope.service,
    );
    let signature = hex(hmac::sign(&key, string_to_sign.as_bytes()).as_ref());
    added.push((
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{credential_scope}, SignedHeaders={signed_names}, Signature={signature}",
            credentials.access_key_id.expose()
        ),
    ));
    added
}

/// The `Host` header reqwest sends: the port only when it is not the scheme's default.
pub fn host(url: &reqwest::Url) -> String {
    let name = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{name}:{port}"),
        None => name.to_string(),
    }
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let step = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let k_date = step(format!("AWS4{secret}").as_bytes(), date);
    let k_region = step(k_date.as_ref(), region);
    let k_service = step(k_region.as_ref(), service);
    let k_signing = step(k_service.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref())
}

/// Header values are trimmed and inner runs of spaces collapsed.
fn normalise(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn canonical_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/')
        .map(|segment| encode(&decode(segment)))
        .collect::<Vec<_>>()
        .join("/")
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                encode(&decode(&name.replace('+', " "))),
                encode(&decode(&value.replace('+', " "))),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes every byte but the unreserved ones, upper-case hex, as SigV4 requires.
fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn decode(text: &str) -> Vec<u8> {
    let digit = |byte: u8| (byte as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && index + 2 < bytes.len()
            && let (Some(high), Some(low)) = (digit(bytes[index + 1]), digit(bytes[index + 2]))
        {
            out.push(high * 16 + low);
            index += 3;
            continue;
        }
        out.push(bytes[index]);
        index += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The credentials and clock of AWS's published SigV4 test suite.
    fn suite(method: &str, url: &str, body: &[u8]) -> String {
        let credentials = Credentials {
            access_key_id: Secret::new("AKIDEXAMPLE"),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: None,
        };
        let scope = Scope {
            region: "us-east-1",
            service: "service",
        };
        let now = DateTime::parse_from_rfc3339("2015-08-30T12:36:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap();
        let url = reqwest::Url::parse(url).unwrap();
        let headers = sign(method, &url, &[], body, &credentials, &scope, now);
        assert_eq!(headers[0], ("host", "example.amazonaws.com".to_string()));
        assert_eq!(headers[1], ("x-amz-date", "20150830T123600Z".to_string()));
        headers
            .into_iter()
            .find(|(name, _)| *name == "authorization")
            .map(|(_, value)| value)
            .unwrap_or_default()
    }

    #[test]
    fn signatures_match_the_aws_sigv4_test_suite() {
        let prefix = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=";
        for (name, method, url, signature) in [
            (
                "get-vanilla",
                "GET",
                "https://example.amazonaws.com/",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "get-vanilla-query-order-key-case",
                "GET",
                "https://example.amazonaws.com/?Param2=value2&Param1=value1",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
            (
                "post-vanilla",
                "POST",
                "https://example.amazonaws.com/",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
        ] {
            assert_eq!(
                suite(method, url, b""),
                format!("{prefix}{signature}"),
                "{name}"
            );
        }
    }

    #[test]
    fn canonical_forms_encode_once_and_sort() {
        assert_eq!(canonical_path("/%E1%88%B4"), "/%E1%88%B4");
        assert_eq!(canonical_path("/findings/import"), "/findings/import");
        assert_eq!(canonical_query("b=2&a=x%20y&A=0"), "A=0&a=x%20y&b=2");
        assert_eq!(normalise("  a   b "), "a b");
    }

    #[test]
    fn a_session_token_is_signed_and_sent() {
        let credentials = Credentials {
            access_key_id: Secret::new("AKID"),
            secret_access_key: Secret::new("secret"),
            session_token: Some(Secret::new("token")),
        };
        let url = reqwest::Url::parse("http://127.0.0.1:4566/findings/import").unwrap();
        let headers = sign(
            "POST",
            &url,
            &[("content-type", "application/json")],
            b"{}",
            &credentials,
            &Scope {
                region: "eu-west-1",
                service: "securityhub",
            },
            Utc::now(),
        );
        assert_eq!(headers[0], ("host", "127.0.0.1:4566".to_string()));
        assert_eq!(headers[2], ("x-amz-security-token", "token".to_string()));
        assert!(
            headers[3]
                .1
                .contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token")
        );
    }
}
