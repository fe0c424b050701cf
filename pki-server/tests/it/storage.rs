//! Storage against real backends: the conformance suite and concurrent
//! conditional puts on S3 (moto) and file; no plaintext in the bucket.

use crate::harness::{Moto, TestApp};
use pki_server::storage::{Condition, DynStorage, FileStorage, S3Storage, Storage, conformance};
use std::sync::Arc;

async fn bucket(moto: &Moto, name: &str) -> aws_sdk_s3::Client {
    let s3 = moto.s3().await;
    s3.create_bucket().bucket(name).send().await.unwrap();
    s3
}

#[tokio::test]
async fn s3_backend_passes_the_conformance_suite() {
    let Some(moto) = Moto::start() else { return };
    bucket(&moto, "conf").await;
    let sdk = moto.sdk().await;
    conformance::run(&S3Storage::new(&sdk, "conf", "some/prefix/")).await;
    conformance::run(&S3Storage::new(&sdk, "conf", "")).await;
}

/// 16 writers race create-if-absent on one key, then compare-and-swap from the
/// same version: exactly one wins each time (`atomic`), and the stored value is
/// the winner's. Then the same conditions one after another.
///
/// moto checks `If-None-Match`/`If-Match` and stores the object later without
/// a lock (moto/s3/responses.py, threaded server), so two racing writers can
/// both pass there: against moto (`atomic = false`) the race must still leave
/// a winner's value, and the sequential conditions must hold exactly. Real S3
/// makes the conditional put atomic.
async fn race(s: DynStorage, atomic: bool) {
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            (
                i,
                s.put_if("race/key", &[i], Condition::Absent).await.unwrap(),
            )
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, won) = t.await.unwrap();
        if won {
            winners.push(i);
        }
    }
    check_winners(&winners, atomic, "create-if-absent");
    let cur = s.get("race/key").await.unwrap().unwrap();
    assert!(
        winners.contains(&cur.value[0]),
        "{:?} not a winner",
        cur.value
    );

    let mut tasks = Vec::new();
    for i in 100..116u8 {
        let s = s.clone();
        let v = cur.version.clone();
        tasks.push(tokio::spawn(async move {
            (
                i,
                s.put_if("race/key", &[i], Condition::Matches(v))
                    .await
                    .unwrap(),
            )
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, won) = t.await.unwrap();
        if won {
            winners.push(i);
        }
    }
    check_winners(&winners, atomic, "compare-and-swap");
    let now = s.get("race/key").await.unwrap().unwrap();
    assert!(
        winners.contains(&now.value[0]),
        "{:?} not a winner",
        now.value
    );

    // One after another: no second create, no swap from a stale version.
    assert!(
        !s.put_if("race/key", b"late", Condition::Absent)
            .await
            .unwrap()
    );
    assert!(
        !s.put_if(
            "race/key",
            b"stale",
            Condition::Matches(cur.version.clone())
        )
        .await
        .unwrap()
    );
    assert_eq!(s.get("race/key").await.unwrap().unwrap().value, now.value);
    assert!(
        s.put_if("race/key", b"next", Condition::Matches(now.version.clone()))
            .await
            .unwrap()
    );
    assert_eq!(s.get("race/key").await.unwrap().unwrap().value, b"next");
}

fn check_winners(winners: &[u8], atomic: bool, what: &str) {
    if atomic {
        assert_eq!(winners.len(), 1, "{what} winners: {winners:?}");
    } else {
        assert!(!winners.is_empty(), "{what}: nobody won");
    }
}

#[tokio::test]
async fn concurrent_conditional_puts_have_one_winner_on_file() {
    let dir = tempfile::tempdir().unwrap();
    race(Arc::new(FileStorage::open(dir.path()).unwrap()), true).await;
    // One server owns a directory: a second handle (as a second server would
    // open) is refused while the first is open, since each would replay and
    // delete the other's write-ahead log.
    let a = FileStorage::open(dir.path()).unwrap();
    assert!(FileStorage::open(dir.path()).is_err());
    assert!(a.put_if("k2", b"a", Condition::Absent).await.unwrap());
    drop(a);
    let b = FileStorage::open(dir.path()).unwrap();
    assert!(!b.put_if("k2", b"b", Condition::Absent).await.unwrap());
    assert_eq!(b.get("k2").await.unwrap().unwrap().value, b"a");
}

#[tokio::test]
async fn concurrent_conditional_puts_on_s3_leave_a_winner_and_conditions_hold() {
    let Some(moto) = Moto::start() else { return };
    bucket(&moto, "race").await;
    race(
        Arc::new(S3Storage::new(&moto.sdk().await, "race", "p/")),
        false,
    )
    .await;
}

#[tokio::test]
async fn no_plaintext_and_nothing_that_unseals_in_the_bucket() {
    let Some(moto) = Moto::start() else { return };
    let s3 = bucket(&moto, "sealed").await;
    let storage: DynStorage = Arc::new(S3Storage::new(&moto.sdk().await, "sealed", "pki/"));
    let app = TestApp::with_storage(storage.clone());
    let (keys, keys_b64, token) = app.init().await;
    for k in &keys[..3] {
        app.call(
            "PUT",
            "/v1/sys/unseal",
            None,
            Some(serde_json::json!({"key": k})),
        )
        .await;
    }
    let barrier = app.state.seal.barrier().expect("unsealed");
    let canaries = [
        "canary-plaintext-value-0001",
        "-----BEGIN PRIVATE KEY----- canary",
    ];
    for (i, c) in canaries.iter().enumerate() {
        barrier
            .put(&format!("logical/test/{i}"), c.as_bytes())
            .await
            .unwrap();
    }
    assert_eq!(
        app.call("PUT", "/v1/sys/rotate", Some(&token), None)
            .await
            .status,
        204
    );
    barrier
        .put("logical/test/after-rotate", canaries[0].as_bytes())
        .await
        .unwrap();
    let cluster_id = app
        .call("GET", "/v1/sys/seal-status", None, None)
        .await
        .body["cluster_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Scan every object in the bucket.
    let list = s3.list_objects_v2().bucket("sealed").send().await.unwrap();
    let mut objects = Vec::new();
    for o in list.contents() {
        let key = o.key().unwrap().to_string();
        let body = s3
            .get_object()
            .bucket("sealed")
            .key(&key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes()
            .to_vec();
        objects.push((key, body));
    }
    assert!(
        objects.len() >= 7,
        "{:?}",
        objects.iter().map(|o| &o.0).collect::<Vec<_>>()
    );
    let mut needles: Vec<Vec<u8>> = canaries.iter().map(|c| c.as_bytes().to_vec()).collect();
    needles.push(token.clone().into_bytes());
    needles.push(token.as_bytes()["hvs.".len()..].to_vec());
    needles.push(cluster_id.into_bytes());
    for k in keys.iter().chain(&keys_b64) {
        needles.push(k.clone().into_bytes());
    }
    for k in &keys {
        needles.push(hex::decode(k).unwrap()); // the raw share bytes
    }
    for (key, body) in &objects {
        for n in &needles {
            assert!(
                !body.windows(n.len()).any(|w| w == &n[..]),
                "plaintext secret in s3 object {key}"
            );
        }
        if key == "pki/core/seal-config" {
            // The one object in clear: type, share count and threshold only.
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            let mut fields: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
            fields.sort();
            assert_eq!(fields, ["shares", "threshold", "type"]);
        } else {
            // Everything else is a sealed value: term | 0x02 | nonce | ciphertext | tag.
            assert!(
                body.len() >= 4 + 1 + 12 + 16 && body[4] == 2,
                "{key} is not a sealed value"
            );
        }
    }
    // Nothing in the bucket unseals: a fresh server on it is sealed, and every
    // object tried as an unseal key is refused (progress resets at threshold).
    let fresh = TestApp::with_storage(storage.clone());
    assert_eq!(
        fresh
            .call("GET", "/v1/sys/seal-status", None, None)
            .await
            .body["sealed"],
        true
    );
    for (_, body) in &objects {
        for cand in [
            hex::encode(body),
            hex::encode(&body[body.len().saturating_sub(33)..]),
        ] {
            fresh
                .call(
                    "PUT",
                    "/v1/sys/unseal",
                    None,
                    Some(serde_json::json!({"key": cand})),
                )
                .await;
        }
    }
    assert!(fresh.state.seal.barrier().is_none());
}
