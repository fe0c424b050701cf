//! The few DER encodings rcgen has no field for: Authority Information Access,
//! Subject Key Identifier on leaves, and Certificate Policies. Hand-written so
//! the core needs no ASN.1 dependency of its own; tests read them back with
//! x509-parser.

/// A TLV with a definite length.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// An OBJECT IDENTIFIER (arcs already validated: ≥ 2 arcs, first ≤ 2).
pub(crate) fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    let first = arcs.first().copied().unwrap_or(0) * 40 + arcs.get(1).copied().unwrap_or(0);
    for arc in std::iter::once(first).chain(arcs.iter().skip(2).copied()) {
        let mut groups = vec![(arc & 0x7f) as u8];
        let mut v = arc >> 7;
        while v > 0 {
            groups.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        groups.reverse();
        body.extend_from_slice(&groups);
    }
    tlv(0x06, &body)
}

pub(crate) fn sequence(items: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &items.concat())
}

/// `id-pe-authorityInfoAccess` (1.3.6.1.5.5.7.1.1).
pub(crate) const OID_AIA: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
/// `id-ce-subjectKeyIdentifier` (2.5.29.14).
pub(crate) const OID_SKI: &[u64] = &[2, 5, 29, 14];
/// `id-ce-certificatePolicies` (2.5.29.32).
pub(crate) const OID_CERT_POLICIES: &[u64] = &[2, 5, 29, 32];
const OID_AD_OCSP: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1];
const OID_AD_CA_ISSUERS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 2];

/// AuthorityInfoAccessSyntax with OCSP and caIssuers URIs.
pub(crate) fn authority_info_access(ocsp: &[String], ca_issuers: &[String]) -> Vec<u8> {
    let desc = |method: &[u64], url: &String| {
        // uniformResourceIdentifier [6] IMPLICIT IA5String
        sequence(&[oid(method), tlv(0x86, url.as_bytes())])
    };
    let items: Vec<Vec<u8>> = ocsp
        .iter()
        .map(|u| desc(OID_AD_OCSP, u))
        .chain(ca_issuers.iter().map(|u| desc(OID_AD_CA_ISSUERS, u)))
        .collect();
    sequence(&items)
}

/// SubjectKeyIdentifier: an OCTET STRING.
pub(crate) fn subject_key_identifier(id: &[u8]) -> Vec<u8> {
    tlv(0x04, id)
}

/// CertificatePolicies: one PolicyInformation per OID, no qualifiers.
pub(crate) fn certificate_policies(oids: &[Vec<u64>]) -> Vec<u8> {
    let items: Vec<Vec<u8>> = oids.iter().map(|o| sequence(&[oid(o)])).collect();
    sequence(&items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_known_vectors() {
        assert_eq!(
            oid(&[1, 2, 840, 113549]),
            vec![0x06, 0x06, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]
        );
        assert_eq!(oid(&[2, 5, 29, 14]), vec![0x06, 0x03, 0x55, 0x1d, 0x0e]);
        let long = tlv(0x04, &[0u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(tlv(0x04, &[1]), vec![0x04, 0x01, 0x01]);
    }
}
