//! RSA-2048 key generation rates of the candidates, one thread each.
use std::time::Instant;

fn run(name: &str, secs: f64, mut f: impl FnMut()) {
    f();
    let start = Instant::now();
    let mut each = Vec::new();
    while start.elapsed().as_secs_f64() < secs || each.len() < 10 {
        let t = Instant::now();
        f();
        each.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let total = start.elapsed().as_secs_f64();
    each.sort_by(f64::total_cmp);
    let p = |q: f64| each[((q * each.len() as f64).ceil() as usize).clamp(1, each.len()) - 1];
    println!(
        "| {name} | {:.1} | {:.0} | {:.0} | {:.0} | {} |",
        each.len() as f64 / total,
        total * 1e3 / each.len() as f64,
        p(0.5),
        p(0.99),
        each.len()
    );
}

fn main() {
    let secs: f64 = std::env::var("SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    println!("| candidate | keys/s (1 core) | mean ms | p50 ms | p99 ms | n |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    run("RustCrypto rsa 0.9 (num-bigint-dig)", secs, || {
        std::hint::black_box(rsa09::RsaPrivateKey::new(&mut rand08::rngs::OsRng, 2048).unwrap());
    });
    run(
        "RustCrypto rsa 0.10 (crypto-bigint, crypto-primes)",
        secs,
        || {
            std::hint::black_box(rsa010::PrivateKey::new(&mut getrandom04::SysRng, 2048).unwrap());
        },
    );
    run("aws-lc-rs 1 (AWS-LC)", secs, || {
        std::hint::black_box(
            aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap(),
        );
    });
}
