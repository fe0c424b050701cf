//! The conformance suite every storage backend must pass.
//!
//! Run from each backend's tests (memory, file here; S3 against moto in the
//! integration tests).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test suite: failures must panic

use super::{Condition, Storage};

/// Exercise get/put/delete/list and both conditional puts on `s`. Panics on failure.
pub async fn run(s: &dyn Storage) {
    let p = "conformance-";
    let k = |x: &str| format!("{p}t/{x}");
    assert!(s.get(&k("a")).await.unwrap().is_none(), "fresh key absent");
    s.put(&k("a"), b"one").await.unwrap();
    let e = s.get(&k("a")).await.unwrap().expect("present after put");
    assert_eq!(e.value, b"one");
    s.put(&k("a"), b"two").await.unwrap();
    let e2 = s.get(&k("a")).await.unwrap().unwrap();
    assert_eq!(e2.value, b"two", "put overwrites");

    // create-if-absent
    assert!(!s.put_if(&k("a"), b"x", Condition::Absent).await.unwrap());
    assert_eq!(s.get(&k("a")).await.unwrap().unwrap().value, b"two");
    assert!(s.put_if(&k("b"), b"bee", Condition::Absent).await.unwrap());
    assert_eq!(s.get(&k("b")).await.unwrap().unwrap().value, b"bee");

    // compare-and-swap
    assert!(
        !s.put_if(&k("a"), b"x", Condition::Matches(e.version.clone()))
            .await
            .unwrap(),
        "stale version loses"
    );
    assert!(
        s.put_if(&k("a"), b"three", Condition::Matches(e2.version.clone()))
            .await
            .unwrap()
    );
    assert_eq!(s.get(&k("a")).await.unwrap().unwrap().value, b"three");
    assert!(
        !s.put_if(&k("zz"), b"x", Condition::Matches(e2.version))
            .await
            .unwrap(),
        "CAS on an absent key loses"
    );
    assert!(s.get(&k("zz")).await.unwrap().is_none());

    // list: direct children, folders with a trailing slash, sorted
    s.put(&k("dir/x"), b"1").await.unwrap();
    s.put(&k("dir/sub/y"), b"2").await.unwrap();
    assert_eq!(
        s.list(&format!("{p}t/")).await.unwrap(),
        vec!["a", "b", "dir/"]
    );
    assert_eq!(
        s.list(&format!("{p}t/dir/")).await.unwrap(),
        vec!["sub/", "x"]
    );
    assert!(s.list(&format!("{p}none/")).await.unwrap().is_empty());
    assert!(s.list("").await.unwrap().contains(&format!("{p}t/")));

    // binary values survive
    let bin: Vec<u8> = (0..=255u8).collect();
    s.put(&k("bin"), &bin).await.unwrap();
    assert_eq!(s.get(&k("bin")).await.unwrap().unwrap().value, bin);

    // delete, and delete of an absent key
    for x in ["a", "b", "bin", "dir/x", "dir/sub/y"] {
        s.delete(&k(x)).await.unwrap();
    }
    s.delete(&k("never")).await.unwrap();
    assert!(s.get(&k("a")).await.unwrap().is_none());
    assert!(
        s.list(&format!("{p}t/")).await.unwrap().is_empty(),
        "emptied folder not listed"
    );

    // bad keys are refused, never mapped somewhere else
    assert!(s.put("../escape", b"x").await.is_err());
    assert!(s.get("/abs").await.is_err());
}
