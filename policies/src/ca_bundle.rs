//! Which bytes may become a trust root: one or more PEM `CERTIFICATE`
//! blocks and nothing else (blank lines aside), each an X.509 certificate with
//! basicConstraints CA:TRUE and nothing after it, at most [`MAX_BYTES`]
//! bytes, no private key anywhere. pki-server's `publish-ca` publishes and
//! node-client's `fetch-ca` installs only what [`check`] accepts.

use x509_parser::prelude::*;

/// The largest CA bundle accepted.
pub const MAX_BYTES: usize = 1 << 20;

/// Check that `bytes` are PEM `CERTIFICATE` blocks only, each a CA
/// certificate; how many.
pub fn check(bytes: &[u8]) -> Result<usize, String> {
    if bytes.len() > MAX_BYTES {
        return Err(format!("larger than {MAX_BYTES} bytes"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "not text".to_string())?;
    if text.contains("PRIVATE KEY") {
        return Err("it holds a private key".into());
    }
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut n = 0usize;
    let mut block: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        match block.as_mut() {
            None if line.is_empty() => {}
            None if line == BEGIN => block = Some(String::new()),
            None if line.starts_with("-----BEGIN ") => {
                return Err(format!("line {}: {line} is not a certificate", i + 1));
            }
            None => return Err(format!("line {}: text outside a certificate", i + 1)),
            Some(b64) if line == END => {
                n += 1;
                let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &b64)
                    .map_err(|_| format!("certificate {n}: bad base64"))?;
                check_ca_der(&der).map_err(|e| format!("certificate {n}: {e}"))?;
                block = None;
            }
            Some(_) if line.starts_with("-----") => {
                return Err(format!("line {}: {line} inside a certificate", i + 1));
            }
            Some(b64) => b64.push_str(line),
        }
    }
    if block.is_some() {
        return Err("a certificate is not terminated".into());
    }
    if n == 0 {
        return Err("no certificate".into());
    }
    Ok(n)
}

/// One DER certificate with basicConstraints CA:TRUE and nothing after it.
fn check_ca_der(der: &[u8]) -> Result<(), String> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|_| "not an X.509 certificate".to_string())?;
    if !rest.is_empty() {
        return Err("bytes after the certificate".into());
    }
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => Ok(()),
        Ok(_) => Err(format!(
            "{} is not a CA (no basicConstraints CA:TRUE)",
            cert.subject()
        )),
        Err(_) => Err("invalid basicConstraints".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    fn cert(ca: Option<bool>) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["pki.example".to_string()]).unwrap();
        p.is_ca = match ca {
            Some(true) => IsCa::Ca(BasicConstraints::Constrained(0)),
            Some(false) => IsCa::ExplicitNoCa,
            None => IsCa::NoCa,
        };
        (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    /// `super::check(input)`: Ok(count) or an error containing `expected`.
    fn expect(input: &str, expected: Result<usize, &str>) {
        match (super::check(input.as_bytes()), expected) {
            (Ok(n), Ok(m)) => assert_eq!(n, m, "{input}"),
            (Err(e), Err(want)) => assert!(e.contains(want), "{e:?} lacks {want:?}"),
            (got, want) => panic!("{got:?} != {want:?} for\n{input}"),
        }
    }

    #[test]
    fn only_pem_ca_certificates_pass() {
        let (ca, ca_key) = cert(Some(true));
        let (ca2, _) = cert(Some(true));
        let (leaf, _) = cert(None);
        let (not_ca, _) = cert(Some(false));
        expect(&ca, Ok(1));
        expect(&format!("\n{ca}\n\n{ca2}"), Ok(2));
        expect(&ca.replace('\n', "\r\n"), Ok(1));
        expect("", Err("no certificate"));
        expect("\n\n", Err("no certificate"));
        expect(&leaf, Err("is not a CA"));
        expect(&not_ca, Err("is not a CA"));
        expect(&format!("{ca}{leaf}"), Err("certificate 2"));
        expect(&format!("{ca}{ca_key}"), Err("private key"));
        expect(&ca_key, Err("private key"));
        expect(&format!("subject=CN x\n{ca}"), Err("text outside"));
        expect(&format!("{ca}garbage"), Err("text outside"));
        expect(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            Err("is not a certificate"),
        );
        expect(
            &ca.replace("-----END CERTIFICATE-----\n", ""),
            Err("not terminated"),
        );
        expect(
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            Err("bad base64"),
        );
        expect(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            Err("not an X.509 certificate"),
        );
        expect(
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            Err("private key"),
        );
        expect(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            Err("is not a certificate"),
        );
        let big = format!("{ca}{}", "\n".repeat(MAX_BYTES));
        expect(&big, Err("larger than"));
        assert!(super::check(&[0xff, 0xfe]).is_err());
    }
}
