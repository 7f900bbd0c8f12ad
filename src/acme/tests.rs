//! The ACME layer's pure parts. Issuance from a real CA (Pebble), through
//! HAProxy, and what a CA it cannot trust or reach makes of it, are tested
//! where the pieces of HTTPS are put together (`ops/https_tests.rs`).

use super::*;

#[test]
fn directory_settings_name_lets_encrypt_or_a_url() {
    assert_eq!(directory_url("letsencrypt"), LETS_ENCRYPT);
    assert!(directory_url("letsencrypt-staging").contains("staging"));
    let own = "https://acme.example.net/directory";
    assert_eq!(directory_url(own), own);
}

#[test]
fn contact_is_one_plain_address() {
    assert_eq!(mailto("ops@example.com").unwrap(), "mailto:ops@example.com");
    for bad in [
        "ops",
        "@example.com",
        "ops@localhost",
        "ops@example.com,evil@example.net",
        "o ps@example.com",
        "ops@a@example.com",
        "ops@example.com?cc=x@example.net",
    ] {
        assert!(mailto(bad).is_err(), "{bad}");
    }
}

#[test]
fn tokens_and_key_authorizations_are_base64url() {
    let token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
    assert!(is_token(token));
    assert!(is_key_authorization(&format!(
        "{token}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
    )));
    assert!(!is_token("short"));
    assert!(!is_token(&format!("{token} del")));
    assert!(!is_token(&format!("{token};show")));
    assert!(!is_key_authorization(token));
    assert!(!is_key_authorization(&format!("{token}.thumb print")));
    assert!(!is_key_authorization(&format!("{token}.")));
}

#[test]
fn problem_documents_read_as_one_sentence_with_their_subproblems() {
    let problem: Problem = serde_json::from_value(serde_json::json!({
        "type": "urn:ietf:params:acme:error:rejectedIdentifier",
        "detail": "Error creating new order",
        "status": 400,
        "subproblems": [{
            "type": "urn:ietf:params:acme:error:rejectedIdentifier",
            "detail": "Domain name is blocked",
            "identifier": {"type": "dns", "value": "blocked.example"}
        }]
    }))
    .unwrap();
    assert_eq!(
        describe(&problem),
        "Error creating new order; blocked.example: Domain name is blocked"
    );
    let bare: Problem = serde_json::from_value(serde_json::json!({"type": RATE_LIMITED})).unwrap();
    assert_eq!(describe(&bare), RATE_LIMITED);
}

#[test]
fn a_rate_limit_says_when_to_come_back() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let err = AcmeError::RateLimited {
        action: "the certificate order",
        problem: "too many certificates already issued".into(),
        retry_after: Some(at),
    };
    assert_eq!(err.retry_after(), Some(at));
    assert!(
        err.to_string()
            .ends_with("try again after 2026-01-01T00:00:00Z"),
        "{err}"
    );
    let refused = AcmeError::Refused {
        action: "the certificate order",
        problem: "no".into(),
    };
    assert_eq!(refused.retry_after(), None);
}

#[test]
fn a_rate_limit_problem_carries_the_retry_after_of_its_answer() {
    let transport = Transport::new(None).unwrap();
    let problem = |kind: &str, status: u16| {
        instant_acme::Error::Api(
            serde_json::from_value(serde_json::json!({
                "type": kind, "detail": "too many certificates", "status": status
            }))
            .unwrap(),
        )
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::RETRY_AFTER, "3600".parse().unwrap());
    let before = SystemTime::now();
    transport.note_retry_after(http::StatusCode::TOO_MANY_REQUESTS, &headers);
    let err = failure(
        "the certificate order",
        problem(RATE_LIMITED, 429),
        &transport,
        Duration::from_secs(60),
    );
    let retry_after = err.retry_after().expect("a rate limit says when");
    assert!(retry_after >= before + Duration::from_secs(3600));
    assert!(retry_after <= SystemTime::now() + Duration::from_secs(3600));
    assert!(err.to_string().starts_with(
        "the CA's rate limit holds back the certificate order for now: too many certificates; try again after "
    ));
    // Taken once; a 503 without Retry-After is a rate limit without a time.
    transport.note_retry_after(
        http::StatusCode::SERVICE_UNAVAILABLE,
        &http::HeaderMap::new(),
    );
    let unavailable = failure(
        "the signing",
        problem("urn:ietf:params:acme:error:serverInternal", 503),
        &transport,
        Duration::ZERO,
    );
    assert!(matches!(
        unavailable,
        AcmeError::RateLimited {
            retry_after: None,
            ..
        }
    ));
    let refused = failure(
        "the signing",
        problem("urn:ietf:params:acme:error:badCSR", 400),
        &transport,
        Duration::ZERO,
    );
    assert!(
        refused
            .to_string()
            .starts_with("the CA refused the signing: too many certificates;")
    );
}

#[test]
fn the_account_key_survives_its_pem_and_nothing_else_passes_for_it() {
    let key = AccountKey::generate().unwrap();
    let pem = key.to_pem();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert_eq!(AccountKey::from_pem(&pem).unwrap().to_pem(), pem);
    let wrong = |text: &str| match AccountKey::from_pem(text) {
        Err(AcmeError::AccountKey(reason)) => reason,
        other => panic!("{text:?} gave {:?}", other.map(|_| ())),
    };
    wrong("not pem");
    let certificate =
        crate::certificate::CertifiedKey::placeholder(&[Domain::parse("a.test").unwrap()]).unwrap();
    assert!(wrong(&certificate.chain_pem()).contains("CERTIFICATE"));
    let not_a_key = pem::encode(&pem::Pem::new(
        "PRIVATE KEY",
        vec![0x30, 0x03, 0x02, 0x01, 0x00],
    ));
    assert!(wrong(&not_a_key).contains("P-256"));
}
