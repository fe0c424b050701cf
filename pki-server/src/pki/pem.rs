//! Minimal PEM (RFC 7468) encoding and decoding for certificates, CSRs, CRLs
//! and keys. Secret blocks are handed back in zeroizing buffers by the callers.

use super::error::{PkiError, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// One decoded PEM block.
pub(crate) struct Block {
    /// The label between `BEGIN ` and the dashes.
    pub label: String,
    /// The decoded contents.
    pub der: Vec<u8>,
}

/// PEM-encode `der` under `label`, 64 columns, with a trailing newline.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Every PEM block in `text`, in order. Text outside blocks is ignored.
pub(crate) fn decode_all(text: &str) -> Result<Vec<Block>> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let label_end = after
            .find("-----")
            .ok_or_else(|| PkiError::bad("malformed PEM: unterminated BEGIN line"))?;
        let label = &after[..label_end];
        let body_start = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let body_end = body_start
            .find(&end_marker)
            .ok_or_else(|| PkiError::bad(format!("malformed PEM: no END line for {label}")))?;
        let body: String = body_start[..body_end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = B64
            .decode(body.as_bytes())
            .map_err(|_| PkiError::bad(format!("malformed PEM: bad base64 in {label}")))?;
        blocks.push(Block {
            label: label.to_string(),
            der,
        });
        rest = &body_start[body_end + end_marker.len()..];
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_finds_blocks() {
        let der: Vec<u8> = (0..=255).collect();
        let a = encode("CERTIFICATE", &der);
        assert!(a.lines().all(|l| l.len() <= 64));
        let both = format!("junk\n{a}between\n{}", encode("X509 CRL", &[1, 2, 3]));
        let blocks = decode_all(&both).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].der, der);
        assert_eq!(blocks[1].label, "X509 CRL");
        assert!(decode_all("-----BEGIN X-----\n!!\n-----END X-----").is_err());
        assert!(decode_all("-----BEGIN X-----\nAAAA\n").is_err());
    }
}
