//! Machine identity logins (issue #8) against the real binary with the
//! cluster profile applied: `auth/jwt` (signature, time, audience, issuer and
//! algorithm refusals; claims pin the kubelet name) and `auth/aws` against
//! moto (STS GetCallerIdentity signed with aws-sigv4, EC2 instance lookup,
//! every refusal). A refused login issues no token.
//!
//! moto does not check SigV4 signatures, so these tests cannot show that STS
//! refuses a tampered signature; they show that the server's own checks (URL,
//! body, signed server-id header, instance state, ARN binding) refuse.

use crate::harness::aws::{Creds, create_instance_profile, create_role, instance, query, sigv4};
use crate::harness::{Moto, ServerProcess};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const CLUSTER: &str = "kubecluster";

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// A server with the profile applied; (server, root token, temp dir).
async fn profiled() -> (ServerProcess, String, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let srv = ServerProcess::start("memory", &tmp.path().join("tls"), &[], vec![]);
    let (s, init) = srv
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"secret_shares": 1, "secret_threshold": 1})),
        )
        .await;
    assert_eq!(s, 200);
    srv.call(
        "PUT",
        "sys/unseal",
        None,
        Some(json!({"key": init["keys"][0]})),
    )
    .await;
    let root = init["root_token"].as_str().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_pki-server"))
        .args(["apply-profile", "--dir"])
        .arg(policies_dir())
        .args(["--cluster", CLUSTER])
        .env("VAULT_ADDR", srv.addr())
        .env("VAULT_TOKEN", &root)
        .env("VAULT_CACERT", srv.ca())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (srv, root, tmp)
}

/// How many tokens exist (accessors), to show a refusal issued nothing.
async fn token_count(srv: &ServerProcess, root: &str) -> usize {
    let (s, v) = srv
        .call("LIST", "auth/token/accessors", Some(root), None)
        .await;
    assert_eq!(s, 200, "{v}");
    v["data"]["keys"].as_array().unwrap().len()
}

/// Issue the kubelet client certificate for `node` with `token`; the status.
async fn kubelet_client(srv: &ServerProcess, token: &str, node: &str) -> (u16, Value) {
    srv.call(
        "POST",
        &format!("{CLUSTER}/pki/kube-apiserver/issue/kubelet-client"),
        Some(token),
        Some(json!({"common_name": format!("system:node:{node}"), "ttl": "1h"})),
    )
    .await
}

// ------------------------------------------------------------------ JWT

struct Signer {
    key: EcdsaKeyPair,
    pem: String,
}

impl Signer {
    fn new() -> Self {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &kp.serialize_der(), &rng)
                .unwrap();
        Self {
            key,
            pem: kp.public_key_pem(),
        }
    }

    fn sign_with(&self, header: Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", B64URL.encode(sig.as_ref()))
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with(json!({"alg": "ES256", "typ": "JWT"}), claims)
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

const ISSUER: &str = "https://local.kube-aws-pki";

fn claims(node: &str) -> Value {
    json!({
        "iss": ISSUER,
        "sub": format!("node:{node}"),
        "aud": "pki-server",
        "iat": now(),
        "nbf": now() - 5,
        "exp": now() + 600,
        "node_name": node,
        "kube-aws-pki/role": "worker",
    })
}

async fn jwt_login(srv: &ServerProcess, jwt: &str) -> (u16, Value) {
    srv.call(
        "POST",
        "auth/jwt/login",
        None,
        Some(json!({"role": "worker", "jwt": jwt})),
    )
    .await
}

#[tokio::test]
async fn jwt_login_pins_the_node_name_and_refuses_every_bad_token() {
    let (srv, root, tmp) = profiled().await;
    let signer = Signer::new();
    let audit_log = tmp.path().join("audit.log");
    let (s, v) = srv
        .call(
            "POST",
            "sys/audit/file",
            Some(&root),
            Some(json!({"type": "file", "options": {"file_path": audit_log}})),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    // apply-profile enabled the method and wrote its roles, but without
    // --jwt-pubkey no configuration: nothing can log in yet.
    let (s, v) = srv.call("GET", "sys/auth", Some(&root), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["jwt/"]["type"], "jwt", "{v}");
    let (s, v) = srv
        .call(
            "POST",
            "auth/jwt/config",
            Some(&root),
            Some(json!({"jwt_validation_pubkeys": [signer.pem], "bound_issuer": ISSUER})),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    // A role must bind something.
    let (s, _) = srv
        .call(
            "POST",
            "auth/jwt/role/loose",
            Some(&root),
            Some(json!({"role_type": "jwt", "user_claim": "sub", "token_policies": ["x"]})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, v) = srv
        .call(
            "POST",
            "auth/jwt/role/worker",
            Some(&root),
            Some(json!({
                "role_type": "jwt",
                "bound_audiences": ["pki-server"],
                "bound_claims": {"kube-aws-pki/role": "worker"},
                "user_claim": "sub",
                "claim_mappings": {"node_name": "node_name"},
                "token_policies": [format!("{CLUSTER}-worker")],
                "token_ttl": "1h",
                "token_max_ttl": "2h",
            })),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = srv
        .call("GET", "auth/jwt/role/worker", Some(&root), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["token_ttl"], 3600);
    assert_eq!(v["data"]["claim_mappings"]["node_name"], "node_name");
    let (s, v) = srv.call("LIST", "auth/jwt/role", Some(&root), None).await;
    assert_eq!(s, 200);
    let mut keys: Vec<&str> = v["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["controller", "etcd", "operator", "worker"],
        "the profile's roles"
    );
    // Configuration needs a token.
    let (s, _) = srv.call("GET", "auth/jwt/config", None, None).await;
    assert_eq!(s, 403);

    // Every bad token is refused, and no token is issued.
    let before = token_count(&srv, &root).await;
    let other = Signer::new();
    let mut refusals: Vec<(&str, String)> = Vec::new();
    let mut c = claims("worker-1");
    c["exp"] = json!(now() - 3600);
    refusals.push(("expired", signer.sign(&c)));
    let mut c = claims("worker-1");
    c["nbf"] = json!(now() + 3600);
    refusals.push(("not yet valid", signer.sign(&c)));
    let mut c = claims("worker-1");
    c["aud"] = json!("someone-else");
    refusals.push(("wrong audience", signer.sign(&c)));
    let mut c = claims("worker-1");
    c["iss"] = json!("https://evil.example");
    refusals.push(("wrong issuer", signer.sign(&c)));
    let mut c = claims("worker-1");
    c["kube-aws-pki/role"] = json!("controller");
    refusals.push(("bound claim", signer.sign(&c)));
    let mut c = claims("worker-1");
    c.as_object_mut().unwrap().remove("exp");
    refusals.push(("no exp", signer.sign(&c)));
    refusals.push(("signed by another key", other.sign(&claims("worker-1"))));
    let good = signer.sign(&claims("worker-1"));
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = B64URL.encode(claims("worker-2").to_string());
    refusals.push((
        "payload changed after signing",
        format!("{}.{forged_payload}.{}", parts[0], parts[2]),
    ));
    let none = format!(
        "{}.{}.",
        B64URL.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        B64URL.encode(claims("worker-1").to_string())
    );
    refusals.push(("alg none", none));
    let hs_input = format!(
        "{}.{}",
        B64URL.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string()),
        B64URL.encode(claims("worker-1").to_string())
    );
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, signer.pem.as_bytes()),
        hs_input.as_bytes(),
    );
    refusals.push((
        "HS256 keyed with the public key",
        format!("{hs_input}.{}", B64URL.encode(mac.as_ref())),
    ));
    refusals.push(("garbage", "not.a.jwt".into()));
    for (what, jwt) in &refusals {
        let (s, v) = jwt_login(&srv, jwt).await;
        assert!(s == 400 || s == 403, "{what}: {s} {v}");
        assert!(v["auth"].is_null(), "{what}: {v}");
        assert!(
            v["errors"].as_array().is_some_and(|e| !e.is_empty()),
            "{what}: {v}"
        );
    }
    let (s, _) = srv
        .call(
            "POST",
            "auth/jwt/login",
            None,
            Some(json!({"role": "nope", "jwt": good})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        token_count(&srv, &root).await,
        before,
        "a refused login issued a token"
    );

    // A good token: its claims land in the token's metadata and pin the name.
    let (s, v) = jwt_login(&srv, &good).await;
    assert_eq!(s, 200, "{v}");
    let auth = &v["auth"];
    assert_eq!(auth["metadata"]["node_name"], "worker-1", "{v}");
    assert_eq!(auth["metadata"]["role"], "worker");
    assert_eq!(auth["lease_duration"], 3600);
    assert_eq!(auth["renewable"], true);
    assert_eq!(
        auth["token_policies"],
        json!(["default", format!("{CLUSTER}-worker")])
    );
    let token = auth["client_token"].as_str().unwrap().to_string();
    // Logins are audited, with the JWT and the token HMAC'd, never in clear.
    let log = std::fs::read_to_string(&audit_log).unwrap();
    assert!(log.contains("auth/jwt/login"), "logins are audited");
    assert!(
        !log.contains(&good) && !log.contains(&token),
        "secret material in the audit log"
    );
    let (s, v) = srv
        .call("GET", "auth/token/lookup-self", Some(&token), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["meta"]["node_name"], "worker-1");
    assert_eq!(v["data"]["path"], "auth/jwt/login");
    let (s, v) = kubelet_client(&srv, &token, "worker-1").await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = kubelet_client(&srv, &token, "worker-2").await;
    assert!(s == 400 || s == 403, "{v}");
    // The token may not touch the auth configuration.
    let (s, _) = srv
        .call(
            "POST",
            "auth/jwt/role/worker",
            Some(&token),
            Some(json!({"bound_subject": "x"})),
        )
        .await;
    assert_eq!(s, 403);

    // Disabling the method revokes what it issued.
    let (s, _) = srv.call("DELETE", "sys/auth/jwt", Some(&root), None).await;
    assert_eq!(s, 204);
    let (s, _) = srv
        .call("GET", "auth/token/lookup-self", Some(&token), None)
        .await;
    assert_eq!(s, 403);
    let (s, _) = jwt_login(&srv, &good).await;
    assert!(s == 404 || s == 403 || s == 400, "{s}");
}

// ------------------------------------------------------------------ AWS

const BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
const SERVER_ID: &str = "pki.kubecluster.internal";

/// The login body hvac's `iam_login` would send.
fn iam_login(url: &str, body: &str, headers: &[(String, String)], role: &str) -> Value {
    let map: serde_json::Map<String, Value> =
        headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    json!({
        "role": role,
        "iam_http_request_method": "POST",
        "iam_request_url": B64.encode(url),
        "iam_request_body": B64.encode(body),
        "iam_request_headers": B64.encode(Value::Object(map).to_string()),
    })
}

#[tokio::test]
async fn aws_login_against_moto_pins_the_instance_and_refuses_every_bad_request() {
    let Some(moto) = Moto::start() else { return };
    let m = moto.endpoint.as_str();
    let admin = Creds::admin();
    let role_arn = create_role(m, &admin, "k8s-worker").await;
    let other_arn = create_role(m, &admin, "something-else").await;
    create_instance_profile(m, &admin, "k8s-worker").await;
    let tags = [
        ("kube-aws-pki/role", "worker"),
        ("kube-aws-pki/cluster", CLUSTER),
    ];
    let n1 = instance(m, &admin, "k8s-worker", &role_arn, &tags).await;
    let n2 = instance(m, &admin, "k8s-worker", &role_arn, &tags).await;
    assert_ne!(n1.dns, n2.dns);

    let (srv, root, _tmp) = profiled().await;
    // apply-profile enabled the method; the test points it at moto.
    let (s, v) = srv.call("GET", "sys/auth", Some(&root), None).await;
    assert_eq!(
        (s, v["data"]["aws/"]["type"].as_str()),
        (200, Some("aws")),
        "{v}"
    );
    let (s, v) = srv
        .call(
            "POST",
            "auth/aws/config/client",
            Some(&root),
            Some(json!({
                "sts_endpoint": moto.endpoint,
                "sts_region": "us-east-1",
                "iam_server_id_header_value": SERVER_ID,
                "endpoint": moto.endpoint,
                "access_key": "testing",
                "secret_key": "testing",
            })),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = srv
        .call("GET", "auth/aws/config/client", Some(&root), None)
        .await;
    assert_eq!(s, 200);
    assert!(v["data"].get("secret_key").is_none(), "{v}");
    let (s, v) = srv
        .call(
            "POST",
            "auth/aws/role/worker",
            Some(&root),
            Some(json!({
                "auth_type": "iam",
                "bound_iam_principal_arn": ["arn:aws:iam::*:role/k8s-*"],
                "inferred_entity_type": "ec2_instance",
                "inferred_aws_region": "us-east-1",
                "token_policies": [format!("{CLUSTER}-worker")],
                "token_period": "72h",
            })),
        )
        .await;
    assert_eq!(s, 204, "{v}");

    let url = format!("{}/", moto.endpoint);
    let id_header = [("x-vault-aws-iam-server-id", SERVER_ID)];
    let before = token_count(&srv, &root).await;

    // Refusals first: none may issue a token.
    let mut bad: Vec<(&str, Value)> = Vec::new();
    let h = sigv4(
        &n1.creds,
        "sts",
        &url,
        BODY,
        &[("x-vault-aws-iam-server-id", "other.server")],
    );
    bad.push((
        "signed for another server id",
        iam_login(&url, BODY, &h, "worker"),
    ));
    let h = sigv4(&n1.creds, "sts", &url, BODY, &[]);
    bad.push(("no server id", iam_login(&url, BODY, &h, "worker")));
    let mut h = sigv4(&n1.creds, "sts", &url, BODY, &[]);
    h.push(("x-vault-aws-iam-server-id".into(), SERVER_ID.into()));
    bad.push(("server id not signed", iam_login(&url, BODY, &h, "worker")));
    let tampered = "Action=AssumeRole&Version=2011-06-15";
    let h = sigv4(&n1.creds, "sts", &url, BODY, &id_header);
    bad.push(("tampered body", iam_login(&url, tampered, &h, "worker")));
    let evil = "http://127.0.0.1:1/";
    let h = sigv4(&n1.creds, "sts", evil, BODY, &id_header);
    bad.push(("non-STS URL", iam_login(evil, BODY, &h, "worker")));
    let with_query = format!("{url}?Action=GetCallerIdentity");
    let h = sigv4(&n1.creds, "sts", &with_query, BODY, &id_header);
    bad.push(("query string", iam_login(&with_query, BODY, &h, "worker")));
    // An ARN outside bound_iam_principal_arn.
    let outsider = crate::harness::aws::assume_role(m, &admin, &other_arn, &n1.id).await;
    let h = sigv4(&outsider, "sts", &url, BODY, &id_header);
    bad.push((
        "ARN outside the binding",
        iam_login(&url, BODY, &h, "worker"),
    ));
    // Not an instance profile session while the role requires one.
    let h = sigv4(&admin, "sts", &url, BODY, &id_header);
    bad.push(("not an instance", iam_login(&url, BODY, &h, "worker")));
    for (what, body) in &bad {
        let (s, v) = srv
            .call("POST", "auth/aws/login", None, Some(body.clone()))
            .await;
        assert!(s == 400 || s == 403, "{what}: {s} {v}");
        assert!(v["auth"].is_null(), "{what}: {v}");
    }
    assert_eq!(
        token_count(&srv, &root).await,
        before,
        "a refused login issued a token"
    );

    // A good login: the instance's own name, address and tags in the metadata.
    let h = sigv4(&n1.creds, "sts", &url, BODY, &id_header);
    let (s, v) = srv
        .call(
            "POST",
            "auth/aws/login",
            None,
            Some(iam_login(&url, BODY, &h, "worker")),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let meta = &v["auth"]["metadata"];
    assert_eq!(meta["node_name"], n1.dns.as_str(), "{v}");
    assert_eq!(meta["private_ip"], n1.ip.as_str());
    assert_eq!(meta["instance_id"], n1.id.as_str());
    assert_eq!(meta["role"], "worker");
    assert_eq!(meta["cluster"], CLUSTER);
    assert_eq!(meta["canonical_arn"], role_arn.as_str());
    assert!(
        meta["availability_zone"]
            .as_str()
            .unwrap()
            .starts_with("us-east-1")
    );
    let token = v["auth"]["client_token"].as_str().unwrap().to_string();
    let (s, v) = kubelet_client(&srv, &token, &n1.dns).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = kubelet_client(&srv, &token, &n2.dns).await;
    assert!(s == 400 || s == 403, "{v}");

    // A terminated instance's credentials no longer log in.
    query(
        m,
        &admin,
        "ec2",
        &[
            ("Action", "TerminateInstances"),
            ("Version", "2016-11-15"),
            ("InstanceId.1", &n2.id),
        ],
    )
    .await;
    let after = token_count(&srv, &root).await;
    let h = sigv4(&n2.creds, "sts", &url, BODY, &id_header);
    let (s, v) = srv
        .call(
            "POST",
            "auth/aws/login",
            None,
            Some(iam_login(&url, BODY, &h, "worker")),
        )
        .await;
    assert!(s == 400 || s == 403, "terminated: {s} {v}");
    assert_eq!(token_count(&srv, &root).await, after);
    // One answer for "no such running instance of this account": a
    // terminated instance and one that never existed read the same.
    let terminated = v["errors"].to_string();
    let ghost = crate::harness::aws::assume_role(m, &admin, &role_arn, "i-0123456789abcdef0").await;
    let h = sigv4(&ghost, "sts", &url, BODY, &id_header);
    let (s, v) = srv
        .call(
            "POST",
            "auth/aws/login",
            None,
            Some(iam_login(&url, BODY, &h, "worker")),
        )
        .await;
    assert!(s == 400 || s == 403, "ghost: {s} {v}");
    let ghost_text = v["errors"].to_string();
    assert!(
        ghost_text.contains("is not a running instance of account"),
        "{ghost_text}"
    );
    assert_eq!(
        terminated.replace(&n2.id, "ID"),
        ghost_text.replace("i-0123456789abcdef0", "ID"),
        "the two refusals differ"
    );

    // The ARN and account are checked before any EC2 call: with EC2
    // unreachable, a caller the role cannot accept is refused for what it
    // is (403), never after a DescribeInstances attempt (500).
    let (s, v) = srv
        .call(
            "POST",
            "auth/aws/config/client",
            Some(&root),
            Some(json!({"endpoint": "http://127.0.0.1:1"})),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let h = sigv4(&outsider, "sts", &url, BODY, &id_header);
    let (s, v) = srv
        .call(
            "POST",
            "auth/aws/login",
            None,
            Some(iam_login(&url, BODY, &h, "worker")),
        )
        .await;
    assert_eq!(s, 403, "outsider with EC2 unreachable: {v}");
    assert!(
        v["errors"]
            .to_string()
            .contains("does not belong to the role"),
        "{v}"
    );
}
