use super::*;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde_json::json;

const NOW: i64 = 1_800_000_000;

struct Fixture {
    key: ring::signature::EcdsaKeyPair,
    config: JwtConfig,
    keys: Vec<PublicKey>,
    role: JwtRole,
}

fn fixture() -> Fixture {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &kp.serialize_der(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let config = JwtConfig {
        jwt_validation_pubkeys: vec![kp.public_key_pem()],
        bound_issuer: "iss-a".into(),
        ..Default::default()
    };
    config.validate().unwrap();
    let keys = config.keys().unwrap();
    let role = JwtRole {
        bound_audiences: vec!["pki".into()],
        bound_claims: json!({"group": ["a", "b"], "/nested/x": "1"})
            .as_object()
            .unwrap()
            .clone(),
        claim_mappings: [("node_name".to_string(), "node_name".to_string())].into(),
        ..Default::default()
    };
    role.validate().unwrap();
    Fixture {
        key,
        config,
        keys,
        role,
    }
}

fn good() -> Value {
    json!({"iss": "iss-a", "aud": ["x", "pki"], "sub": "s", "exp": NOW + 60, "nbf": NOW,
           "iat": NOW, "group": "b", "nested": {"x": 1}, "node_name": "n1"})
}

fn sign(f: &Fixture, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        B64URL.encode(json!({"alg": "ES256"}).to_string()),
        B64URL.encode(claims.to_string())
    );
    let sig = f
        .key
        .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
        .unwrap();
    format!("{input}.{}", B64URL.encode(sig.as_ref()))
}

/// Log in with `good()` changed by `change`; Ok(node_name) or the error kind.
fn check(change: impl FnOnce(&mut Value), expect: Result<&str, &str>) {
    let f = fixture();
    let mut c = good();
    change(&mut c);
    let got = login(&f.config, &f.keys, "r", &f.role, &sign(&f, &c), NOW);
    match (got, expect) {
        (Ok(l), Ok(n)) => {
            assert_eq!(l.meta["node_name"], n);
            assert_eq!(l.meta["role"], "r");
            assert_eq!(l.display_name, "jwt-s");
        }
        (Err(JwtError::Invalid(_)), Err("invalid")) | (Err(JwtError::Denied(_)), Err("denied")) => {
        }
        (got, want) => panic!("got {got:?}, want {want:?}"),
    }
}

#[test]
fn claims_table() {
    check(|_| {}, Ok("n1"));
    // Inside the leeways.
    check(|c| c["exp"] = json!(NOW - 200), Ok("n1"));
    check(|c| c["nbf"] = json!(NOW + 200), Ok("n1"));
    // Outside them.
    check(|c| c["exp"] = json!(NOW - 211), Err("invalid"));
    check(|c| c["nbf"] = json!(NOW + 211), Err("invalid"));
    check(|c| c["iat"] = json!(NOW + 61), Err("invalid"));
    check(|c| c["exp"] = json!("soon"), Err("invalid"));
    check(
        |c| drop(c.as_object_mut().unwrap().remove("exp")),
        Err("invalid"),
    );
    check(|c| c["iss"] = json!("iss-b"), Err("denied"));
    check(
        |c| drop(c.as_object_mut().unwrap().remove("iss")),
        Err("denied"),
    );
    check(|c| c["aud"] = json!("other"), Err("denied"));
    check(
        |c| drop(c.as_object_mut().unwrap().remove("aud")),
        Err("denied"),
    );
    check(|c| c["group"] = json!("c"), Err("denied"));
    check(|c| c["group"] = json!(["c", "a"]), Ok("n1"));
    check(|c| c["nested"]["x"] = json!(2), Err("denied"));
    check(
        |c| drop(c.as_object_mut().unwrap().remove("sub")),
        Err("denied"),
    );
    check(|c| c["node_name"] = json!({"x": 1}), Err("denied"));
}

#[test]
fn role_rules() {
    let ok = fixture().role;
    for (what, change) in [
        (
            "oidc",
            Box::new(|r: &mut JwtRole| r.role_type = "oidc".into()) as Box<dyn Fn(&mut JwtRole)>,
        ),
        (
            "no user claim",
            Box::new(|r: &mut JwtRole| r.user_claim.clear()),
        ),
        (
            "unbound",
            Box::new(|r: &mut JwtRole| {
                r.bound_audiences.clear();
                r.bound_claims.clear();
            }),
        ),
        (
            "maps role",
            Box::new(|r: &mut JwtRole| {
                r.claim_mappings.insert("x".into(), "role".into());
            }),
        ),
        (
            "root",
            Box::new(|r: &mut JwtRole| r.token.token_policies = vec!["root".into()]),
        ),
        (
            "nested bound",
            Box::new(|r: &mut JwtRole| {
                r.bound_claims.insert("g".into(), json!({"a": 1}));
            }),
        ),
    ] {
        let mut r = ok.clone();
        change(&mut r);
        assert!(r.validate().is_err(), "{what}");
    }
    let bad = JwtConfig {
        jwt_supported_algs: vec!["HS256".into()],
        ..fixture().config
    };
    assert!(bad.validate().is_err());
    assert!(JwtConfig::default().validate().is_err());
}
