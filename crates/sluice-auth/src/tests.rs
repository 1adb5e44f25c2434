use chrono::{DateTime, TimeZone, Utc};

use crate::sigv4::{self, SigV4Error, SignedRequest};
use crate::{AuthError, Role, User, Users};

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn users() -> Users {
    Users::new(vec![
        User::new("AKIDEXAMPLE", Role::Admin, SECRET).unwrap(),
        User::new("reader", Role::ReadOnly, "0123456789abcdef-reader").unwrap(),
    ])
    .unwrap()
    .unwrap()
}

fn at(stamp: &str) -> DateTime<Utc> {
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
        .unwrap()
        .and_utc()
}

/// AWS' documented example (IAM ListUsers, "Create a signed AWS API request").
const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
     SignedHeaders=content-type;host;x-amz-date, \
     Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";

fn example(authorization: &str, verify: impl FnOnce(&SignedRequest<'_>)) {
    let headers: [(&str, &[u8]); 4] = [
        ("host", b"iam.amazonaws.com"),
        (
            "content-type",
            b"application/x-www-form-urlencoded; charset=utf-8",
        ),
        ("x-amz-date", b"20150830T123600Z"),
        ("authorization", authorization.as_bytes()),
    ];
    verify(&SignedRequest {
        method: "GET",
        path: "/",
        query: "Version=2010-05-08&Action=ListUsers",
        headers: &headers,
        body: b"",
    });
}

#[test]
fn aws_example_verifies_and_signs_alike() {
    example(AUTHORIZATION, |request| {
        let users = users();
        let user = sigv4::verify(&users, request, at("20150830T123900Z")).unwrap();
        assert_eq!(user.name, "AKIDEXAMPLE");
    });
    // Signing the same request (without its Authorization) gives AWS' signature.
    let headers: [(&str, &[u8]); 3] = [
        ("host", b"iam.amazonaws.com"),
        (
            "content-type",
            b"application/x-www-form-urlencoded; charset=utf-8",
        ),
        ("x-amz-date", b"20150830T123600Z"),
    ];
    let request = SignedRequest {
        method: "GET",
        path: "/",
        query: "Action=ListUsers&Version=2010-05-08",
        headers: &headers,
        body: b"",
    };
    let signed = sigv4::sign(&request, "AKIDEXAMPLE", SECRET, "us-east-1", "iam");
    assert_eq!(signed, AUTHORIZATION);
}

fn post<'a>(headers: &'a [(&'a str, &'a [u8])], body: &'a [u8]) -> SignedRequest<'a> {
    SignedRequest {
        method: "POST",
        path: "/",
        query: "",
        headers,
        body,
    }
}

/// Verifies, at `now`, a Kinesis request signed with `secret` over `signed_body` and received
/// with `body`.
fn kinesis(
    secret: &str,
    signed_body: &[u8],
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<String, SigV4Error> {
    let mut headers: Vec<(&str, &[u8])> = vec![
        ("host", b"localhost:7878"),
        ("x-amz-date", b"20150830T123600Z"),
        ("x-amz-target", b"Kinesis_20131202.PutRecord"),
    ];
    let authorization = sigv4::sign(
        &post(&headers, signed_body),
        "AKIDEXAMPLE",
        secret,
        "us-east-1",
        "kinesis",
    );
    headers.push(("authorization", authorization.as_bytes()));
    sigv4::verify(&users(), &post(&headers, body), now).map(|u| u.name.clone())
}

#[test]
fn wrong_secret_tampering_and_staleness_are_refused() {
    let now = at("20150830T123600Z");
    let body = br#"{"a":1}"#;
    assert_eq!(kinesis(SECRET, body, body, now).unwrap(), "AKIDEXAMPLE");
    assert_eq!(
        kinesis(SECRET, body, br#"{"a":2}"#, now),
        Err(SigV4Error::Mismatch),
        "an altered body"
    );
    assert_eq!(
        kinesis("not-the-secret-at-all", body, body, now),
        Err(SigV4Error::Mismatch)
    );
    let late = now + chrono::TimeDelta::minutes(16);
    assert!(matches!(
        kinesis(SECRET, body, body, late),
        Err(SigV4Error::Expired(m)) if m.starts_with(
            "Signature expired: 20150830T123600Z is now earlier than 20150830T123700Z")
    ));
    let early = now - chrono::TimeDelta::minutes(16);
    assert!(matches!(
        kinesis(SECRET, body, body, early),
        Err(SigV4Error::Expired(m)) if m.starts_with("Signature not yet current")
    ));
}

#[test]
fn http2_requests_sign_the_host_as_authority() {
    // The AWS SDK for JavaScript over HTTP/2: no Host header, `:authority` signed in its place.
    let mut headers: Vec<(&str, &[u8])> = vec![
        (":authority", b"127.0.0.1:7878"),
        ("x-amz-date", b"20150830T123600Z"),
        ("x-amz-target", b"Kinesis_20131202.ListStreams"),
    ];
    let authorization = sigv4::sign(
        &post(&headers, b"{}"),
        "AKIDEXAMPLE",
        SECRET,
        "us-east-1",
        "kinesis",
    );
    assert!(authorization.contains("SignedHeaders=:authority;x-amz-date;x-amz-target"));
    headers.push(("authorization", authorization.as_bytes()));
    let now = at("20150830T123600Z");
    let user = sigv4::verify(&users(), &post(&headers, b"{}"), now).map(|u| u.name.clone());
    assert_eq!(user.unwrap(), "AKIDEXAMPLE");
    headers[0].1 = b"127.0.0.1:9999";
    assert_eq!(
        sigv4::verify(&users(), &post(&headers, b"{}"), now).map(|u| u.name.clone()),
        Err(SigV4Error::Mismatch),
        "another authority"
    );
}

#[test]
fn unknown_keys_and_malformed_headers_are_named() {
    let now = Utc.with_ymd_and_hms(2015, 8, 30, 12, 36, 0).unwrap();
    let users = users();
    let check = |authorization: &str| {
        let mut result = None;
        example(authorization, |r| {
            result = Some(sigv4::verify(&users, r, now).map(|u| u.name.clone()))
        });
        result.unwrap()
    };
    assert_eq!(
        check(&AUTHORIZATION.replace("AKIDEXAMPLE", "AKIDOTHER")),
        Err(SigV4Error::UnknownKey)
    );
    for broken in [
        "Basic dXNlcjpwYXNz",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 ",
        "",
    ] {
        assert!(
            matches!(check(broken), Err(SigV4Error::Incomplete(_))),
            "{broken:?}: {:?}",
            check(broken)
        );
    }
    // Signed headers without host are refused even when the signature would match.
    assert!(matches!(
        check(&AUTHORIZATION.replace("content-type;host;x-amz-date", "content-type;x-amz-date")),
        Err(SigV4Error::Incomplete(_))
    ));
}

#[test]
fn users_are_validated_and_found_by_token() {
    assert!(matches!(
        User::new("admin", Role::Admin, "short"),
        Err(AuthError::WeakSecret(_))
    ));
    assert!(matches!(
        User::new("../etc", Role::Admin, "0123456789abcdef"),
        Err(AuthError::InvalidName(_))
    ));
    assert!(matches!(
        User::new("admin", Role::Admin, "0123456789abcdef\n"),
        Err(AuthError::InvalidSecret(_))
    ));
    let same = |a: &str, b: &str, sa: &str, sb: &str| {
        Users::new(vec![
            User::new(a, Role::Admin, sa).unwrap(),
            User::new(b, Role::ReadOnly, sb).unwrap(),
        ])
        .map(|_| ())
    };
    assert_eq!(
        same("a", "a", "0123456789abcdef", "0123456789abcdeg"),
        Err(AuthError::Duplicate("a".into()))
    );
    assert_eq!(
        same("a", "b", "0123456789abcdef", "0123456789abcdef"),
        Err(AuthError::SharedSecret("a".into(), "b".into()))
    );
    assert!(Users::new(Vec::new()).unwrap().is_none());
    let users = users();
    assert_eq!(users.by_token(SECRET).unwrap().name, "AKIDEXAMPLE");
    assert_eq!(
        users.by_token("0123456789abcdef-reader").unwrap().role,
        Role::ReadOnly
    );
    assert!(users.by_token("0123456789abcdef-readeR").is_none());
    assert!(users.by_token("").is_none());
    assert!(
        !format!("{users:?}").contains(SECRET),
        "secrets are not printed"
    );
}
