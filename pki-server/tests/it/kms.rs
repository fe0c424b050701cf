//! KMS auto-unseal against moto: init gives recovery shares and unseals; a
//! SIGKILLed server comes back unsealed without shares; with the KMS key
//! disabled it stays sealed and says why; recovery shares still unseal it.

use crate::harness::{Moto, ServerProcess};
use serde_json::json;

#[tokio::test]
async fn kms_auto_unseal_restart_and_disabled_key() {
    let Some(moto) = Moto::start() else { return };
    let sdk = moto.sdk().await;
    let kms = aws_sdk_kms::Client::new(&sdk);
    let key_id = kms
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let s3 = moto.s3().await;
    s3.create_bucket().bucket("kms-data").send().await.unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let mut srv = ServerProcess::start(
        "s3://kms-data/pki",
        &tmp.path().join("tls"),
        &["--kms-key-id", &key_id],
        moto.env(),
    );
    let (s, init) = srv
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"recovery_shares": 5, "recovery_threshold": 3})),
        )
        .await;
    assert_eq!(s, 200, "{init}");
    assert_eq!(init["keys"].as_array().unwrap().len(), 0);
    let recovery: Vec<String> = init["recovery_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().into())
        .collect();
    assert_eq!(recovery.len(), 5);
    let token = init["root_token"].as_str().unwrap().to_string();
    let st = srv.call("GET", "sys/seal-status", None, None).await.1;
    assert_eq!(
        (
            st["type"].as_str(),
            st["sealed"].as_bool(),
            st["recovery_seal"].as_bool()
        ),
        (Some("awskms"), Some(false), Some(true))
    );

    // SIGKILL and restart: unsealed again with no share given.
    srv.kill_and_restart();
    let st = srv.wait_sealed(false, 20).await;
    assert_eq!(st["sealed"], false, "auto-unseal after restart: {st}");
    assert_eq!(
        srv.call("GET", "sys/key-status", Some(&token), None)
            .await
            .0,
        200
    );

    // Nothing in the bucket is the root key in clear: the wrapped key is KMS ciphertext.
    let list = s3
        .list_objects_v2()
        .bucket("kms-data")
        .send()
        .await
        .unwrap();
    for o in list.contents() {
        let body = s3
            .get_object()
            .bucket("kms-data")
            .key(o.key().unwrap())
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert!(!body.windows(token.len()).any(|w| w == token.as_bytes()));
    }

    // Disable the key: a restart stays sealed and says why.
    kms.disable_key().key_id(&key_id).send().await.unwrap();
    srv.kill_and_restart();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let st = srv.call("GET", "sys/seal-status", None, None).await.1;
    assert_eq!(st["sealed"], true, "{st}");
    let why = st["warnings"][0].as_str().unwrap_or_default().to_string();
    assert!(
        why.contains("auto-unseal failed") && why.contains("kms decrypt"),
        "{st}"
    );
    let log = std::fs::read_to_string(srv.log()).unwrap();
    assert!(log.contains("auto-unseal failed"), "the log says why");
    assert_eq!(srv.call("GET", "sys/health", None, None).await.0, 503);

    // Break-glass: the recovery shares unseal without KMS.
    for k in &recovery[..2] {
        srv.call("PUT", "sys/unseal", None, Some(json!({"key": k})))
            .await;
    }
    assert_eq!(
        srv.call("GET", "sys/seal-status", None, None).await.1["sealed"],
        true,
        "two recovery shares are not enough"
    );
    let st = srv
        .call("PUT", "sys/unseal", None, Some(json!({"key": recovery[2]})))
        .await
        .1;
    assert_eq!(st["sealed"], false, "{st}");
    // Neither the token nor a share reached the log.
    for secret in recovery.iter().chain([&token]) {
        assert!(!log.contains(secret.as_str()));
    }
}
