//! Verifying AWS Signature Version 4, as the Kinesis API asks for it.
//!
//! The client signs a canonical form of its request (method, path, query, the headers it names
//! in `SignedHeaders`, the SHA-256 of the body) with a key derived from its secret, the date, the
//! region and the service. The server derives the same key from the secret it holds for the
//! access key, signs the same canonical form of the request it received, and compares: any
//! change to a signed header or to one byte of the body changes the signature. A request signed
//! more than [`MAX_SKEW`] away from the server's clock is refused, so a captured request cannot
//! be replayed later. Follows
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html>.

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{User, Users};

/// How far a request's signing time may be from the server's clock, either way (AWS' own).
pub const MAX_SKEW: TimeDelta = TimeDelta::minutes(15);

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// A request as received, for verification.
pub struct SignedRequest<'a> {
    /// The HTTP method (`POST`).
    pub method: &'a str,
    /// The path as sent (percent-encoded as the client encoded it).
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    /// Every header: lowercase name, raw value; HTTP/2's `:authority` among them, as clients
    /// that speak HTTP/2 sign the host under that name.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The body, whose SHA-256 the signature covers.
    pub body: &'a [u8],
}

/// Why a request's signature is refused, in the terms of AWS' error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// No `Authorization` header (`MissingAuthenticationTokenException`).
    #[error("Missing Authentication Token")]
    Missing,
    /// An `Authorization` header that is not a complete Signature V4
    /// (`IncompleteSignatureException`).
    #[error("{0}")]
    Incomplete(String),
    /// An access key no user has (`UnrecognizedClientException`).
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    /// Signed too long ago or too far ahead (`InvalidSignatureException`).
    #[error("{0}")]
    Expired(String),
    /// The signature is not the one the secret gives (`InvalidSignatureException`).
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    )]
    Mismatch,
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn parse_authorization<'a>(value: &'a str) -> Result<Authorization<'a>, SigV4Error> {
    let incomplete = |what: &str| SigV4Error::Incomplete(what.to_string());
    let rest = value
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| {
            incomplete("Authorization header requires the AWS4-HMAC-SHA256 signing algorithm.")
        })?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, value) = part.trim().split_once('=').unwrap_or((part.trim(), ""));
        match key {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            _ => {}
        }
    }
    let require = |part: Option<&'a str>, name: &str| {
        part.filter(|v| !v.is_empty()).ok_or_else(|| {
            incomplete(&format!(
                "Authorization header requires '{name}' parameter. Authorization={value}"
            ))
        })
    };
    let credential = require(credential, "Credential")?;
    let signed_headers = require(signed_headers, "SignedHeaders")?;
    let signature = require(signature, "Signature")?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = scope[..] else {
        return Err(incomplete(&format!(
            "Credential should be scoped to a valid region, date, service and aws4_request, not '{credential}'."
        )));
    };
    Ok(Authorization {
        access_key,
        date,
        region,
        service,
        signed_headers,
        signature,
    })
}

/// The user that signed `request`, if its signature is right and recent.
pub fn verify<'u>(
    users: &'u Users,
    request: &SignedRequest<'_>,
    now: DateTime<Utc>,
) -> Result<&'u User, SigV4Error> {
    let authorization = header(request, "authorization")
        .map(String::from_utf8_lossy)
        .ok_or(SigV4Error::Missing)?;
    let auth = parse_authorization(&authorization)?;
    let user = users.get(auth.access_key).ok_or(SigV4Error::UnknownKey)?;

    let amz_date = header(request, "x-amz-date")
        .and_then(|v| std::str::from_utf8(v).ok())
        .ok_or_else(|| {
            SigV4Error::Incomplete(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                    .into(),
            )
        })?;
    let signed_at = NaiveDateTime::parse_from_str(amz_date, TIME_FORMAT)
        .map_err(|_| {
            SigV4Error::Incomplete(format!(
                "X-Amz-Date {amz_date:?} is not a time such as 20261202T120000Z."
            ))
        })?
        .and_utc();
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(SigV4Error::Mismatch);
    }
    let stamp = |t: DateTime<Utc>| t.format(TIME_FORMAT).to_string();
    if signed_at < now - MAX_SKEW {
        return Err(SigV4Error::Expired(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - 15 min.)",
            stamp(now - MAX_SKEW),
            stamp(now)
        )));
    }
    if signed_at > now + MAX_SKEW {
        return Err(SigV4Error::Expired(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 15 min.)",
            stamp(now + MAX_SKEW),
            stamp(now)
        )));
    }

    let names: Vec<&str> = auth.signed_headers.split(';').collect();
    if !names.contains(&"host") && !names.contains(&":authority") {
        return Err(SigV4Error::Incomplete(
            "Signed headers must include the 'host' header (':authority' in HTTP/2).".into(),
        ));
    }
    let canonical = canonical_request(request, &names)?;
    let expected = signature(user.secret(), &auth, amz_date, &canonical);
    if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
        Ok(user)
    } else {
        Err(SigV4Error::Mismatch)
    }
}

/// The canonical request: method, path, query, the signed headers, their names and the body's
/// hash, one per line.
fn canonical_request(request: &SignedRequest<'_>, names: &[&str]) -> Result<String, SigV4Error> {
    let mut headers = String::new();
    for name in names {
        let values: Vec<String> = request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| {
                // Trimmed, with runs of spaces made one.
                String::from_utf8_lossy(v)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if values.is_empty() {
            return Err(SigV4Error::Mismatch);
        }
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let mut query: Vec<(&str, &str)> = request
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    query.sort_unstable();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let path = request
        .path
        .split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/");
    Ok(format!(
        "{}\n{}\n{query}\n{headers}\n{}\n{}",
        request.method,
        if path.is_empty() { "/" } else { &path },
        names.join(";"),
        hex::encode(Sha256::digest(request.body))
    ))
}

fn header<'a>(request: &SignedRequest<'a>, name: &str) -> Option<&'a [u8]> {
    request
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// Percent-encoding as Signature V4 wants it: everything but `A-Z a-z 0-9 - _ . ~`.
fn uri_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The signature of a canonical request, in hex: the string to sign, signed with the key
/// derived from the secret and the credential's scope.
fn signature(secret: &str, auth: &Authorization<'_>, amz_date: &str, canonical: &str) -> String {
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{}/{}/{}/aws4_request\n{}",
        auth.date,
        auth.region,
        auth.service,
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    for part in [auth.region, auth.service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    hex::encode(hmac(&key, string_to_sign.as_bytes()))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Signs a request as an AWS SDK would: the counterpart of [`verify`], for tests and Sluice's
/// own clients. Returns the `Authorization` header's value; `headers` must hold `host` and
/// `x-amz-date`, which are signed with every other header given.
pub fn sign(
    request: &SignedRequest<'_>,
    access_key: &str,
    secret: &str,
    region: &str,
    service: &str,
) -> String {
    let mut names: Vec<&str> = request.headers.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names.dedup();
    let amz_date = header(request, "x-amz-date")
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or_default();
    let date = amz_date.get(..8).unwrap_or_default();
    let canonical = canonical_request(request, &names).unwrap_or_default();
    let auth = Authorization {
        access_key,
        date,
        region,
        service,
        signed_headers: &names.join(";"),
        signature: "",
    };
    let signature = signature(secret, &auth, amz_date, &canonical);
    format!(
        "{ALGORITHM} Credential={access_key}/{date}/{region}/{service}/aws4_request, \
         SignedHeaders={}, Signature={signature}",
        auth.signed_headers
    )
}
