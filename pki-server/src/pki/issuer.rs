//! Issuers: a CA certificate with its key and the chain above it, and the
//! operations that make one (root generation, intermediate CSR + set-signed)
//! or that an issuer performs for another CA (sign-intermediate).

use super::csr::ParsedCsr;
use super::error::{PkiError, Result};
use super::issue::{self, CaRequest, Issued, MountContext, Names, SignIntermediateRequest};
use super::keys::{Format, PrivateKey};
use super::pem;
use super::serial::SerialNumber;
use rcgen::{BasicConstraints, IsCa, KeyUsagePurpose};
use std::fmt;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

/// One certificate of a chain, in both encodings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainCert {
    /// DER.
    pub der: Vec<u8>,
    /// PEM without trailing newline.
    pub pem: String,
    /// Subject equals issuer (a root).
    pub self_signed: bool,
}

impl ChainCert {
    fn from_der(der: Vec<u8>) -> Result<Self> {
        let (_, cert) = X509Certificate::from_der(&der)
            .map_err(|e| PkiError::bad(format!("could not parse certificate: {e}")))?;
        let self_signed = cert.subject().as_raw() == cert.issuer().as_raw();
        let pem = pem::encode("CERTIFICATE", &der).trim_end().to_string();
        Ok(ChainCert {
            der,
            pem,
            self_signed,
        })
    }

    /// This certificate in a response `format` (PEM, or base64 DER).
    pub fn encode(&self, format: Format) -> String {
        match format {
            Format::Der => format.encode("CERTIFICATE", &self.der),
            Format::Pem | Format::PemBundle => self.pem.clone(),
        }
    }
}

/// A CA that can sign: certificate, private key and parents.
#[derive(Clone)]
pub struct Issuer {
    cert: ChainCert,
    key: PrivateKey,
    parents: Vec<ChainCert>,
    serial: SerialNumber,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    /// `None`: no path length constraint.
    path_len: Option<u32>,
    common_name: String,
    subject_key_id: Option<Vec<u8>>,
    /// rcgen signers by `signature_bits`, made on first use: building one
    /// parses the CA certificate and loads the key (ring checks the key pair
    /// with a scalar multiplication), work that would otherwise repeat for
    /// every certificate this CA signs.
    signers: Arc<Mutex<SignerCache>>,
}

/// A ready rcgen signer for this issuer.
pub(crate) type Signer = rcgen::Issuer<'static, rcgen::KeyPair>;
/// Signers by `signature_bits`.
type SignerCache = Vec<(u32, Arc<Signer>)>;

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("common_name", &self.common_name)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("key", &self.key)
            .field("parents", &self.parents.len())
            .finish()
    }
}

impl Issuer {
    /// Rebuild an issuer from stored parts: its certificate (PEM; more blocks
    /// after the first are taken as the chain above it, before `parents`), its
    /// key, and the parents' PEM. Refuses a non-CA certificate or one whose
    /// public key is not `key`'s.
    pub fn from_parts(cert_pem: &str, key: PrivateKey, parents_pem: &[String]) -> Result<Self> {
        let mut certs = pem::decode_all(cert_pem)?
            .into_iter()
            .filter(|b| b.label == "CERTIFICATE")
            .map(|b| b.der);
        let der = certs
            .next()
            .ok_or_else(|| PkiError::bad("no certificate found in PEM"))?;
        let mut parents = Vec::new();
        for d in certs {
            parents.push(ChainCert::from_der(d)?);
        }
        for p in parents_pem {
            for b in pem::decode_all(p)? {
                if b.label == "CERTIFICATE" {
                    parents.push(ChainCert::from_der(b.der)?);
                }
            }
        }
        let cert = ChainCert::from_der(der)?;
        let (_, x) = X509Certificate::from_der(&cert.der)
            .map_err(|e| PkiError::bad(format!("could not parse certificate: {e}")))?;
        let bc = x
            .basic_constraints()
            .map_err(|e| PkiError::bad(format!("could not parse certificate: {e}")))?
            .map(|e| e.value.clone());
        let path_len = match bc {
            Some(bc) if bc.ca => bc.path_len_constraint,
            _ => {
                return Err(PkiError::bad(
                    "the given certificate is not marked for CA use and cannot be used with this backend",
                ));
            }
        };
        if x.public_key().subject_public_key.data.as_ref() != key.public_key_raw()?.as_slice() {
            return Err(PkiError::KeyMismatch);
        }
        let serial = SerialNumber::from_bytes(x.raw_serial())?;
        let subject_key_id = x
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                    Some(k.0.to_vec())
                }
                _ => None,
            });
        let common_name = x
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(Issuer {
            not_before: x.validity().not_before.to_datetime(),
            not_after: x.validity().not_after.to_datetime(),
            cert,
            key,
            parents,
            serial,
            path_len,
            common_name,
            subject_key_id,
            signers: Arc::default(),
        })
    }

    /// Vault's `intermediate/set-signed`: `bundle` is the signed certificate,
    /// optionally followed by its chain; `key` is the key the CSR was made with.
    pub fn set_signed(key: PrivateKey, bundle: &str) -> Result<Self> {
        Self::from_parts(bundle, key, &[])
    }

    /// The CA certificate.
    pub fn certificate(&self) -> &ChainCert {
        &self.cert
    }

    /// The CA certificate PEM (no trailing newline).
    pub fn certificate_pem(&self) -> &str {
        &self.cert.pem
    }

    /// The CA certificate DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert.der
    }

    /// The private key (store it behind the barrier; never log it).
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// The certificates above this one, parent first.
    pub fn parents(&self) -> &[ChainCert] {
        &self.parents
    }

    /// Vault's `ca_chain`: this certificate then its parents; roots dropped
    /// when `remove_roots` (`remove_roots_from_chain`).
    pub fn ca_chain(&self, remove_roots: bool) -> Vec<&ChainCert> {
        std::iter::once(&self.cert)
            .chain(self.parents.iter())
            .filter(|c| !(remove_roots && c.self_signed))
            .collect()
    }

    /// The CA certificate's serial number.
    pub fn serial_number(&self) -> &SerialNumber {
        &self.serial
    }

    /// The CA certificate's subject CN (empty if none).
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// Start of validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// End of validity: no leaf may outlive it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The path length constraint (`None` = unconstrained).
    pub fn path_len(&self) -> Option<u32> {
        self.path_len
    }

    /// The CA certificate's SubjectKeyIdentifier, if it has one.
    pub fn subject_key_id(&self) -> Option<&[u8]> {
        self.subject_key_id.as_deref()
    }

    /// Whether the certificate is self-signed (a root).
    pub fn is_root(&self) -> bool {
        self.cert.self_signed
    }

    /// An rcgen signer bound to this issuer's subject and key identifier
    /// (cached per `signature_bits`).
    pub(crate) fn signer(&self, signature_bits: u32) -> Result<Arc<Signer>> {
        let cached = |v: &SignerCache| {
            v.iter()
                .find(|(b, _)| *b == signature_bits)
                .map(|(_, s)| s.clone())
        };
        if let Some(s) = cached(&self.signers.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(s);
        }
        let kp = self.key.key_pair(signature_bits)?;
        let der = rustls::pki_types::CertificateDer::from(self.cert.der.as_slice());
        let signer = Arc::new(rcgen::Issuer::from_ca_cert_der(&der, kp).map_err(PkiError::crypto)?);
        let mut v = self.signers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = cached(&v) {
            return Ok(s);
        }
        v.push((signature_bits, signer.clone()));
        Ok(signer)
    }
}

/// A new root: the issuer to store and the response fields.
#[derive(Debug)]
pub struct GeneratedRoot {
    /// The new issuer.
    pub issuer: Issuer,
    /// `certificate`, `issuing_ca` (itself), `serial_number`, `expiration`,
    /// `private_key` (exported only), `warnings`.
    pub issued: Issued,
}

/// Vault's `root/generate/:type`. `key` is the new CA key (from
/// [`PrivateKey::generate`], or an existing one); it is returned in
/// `issued.private_key` only if `req.exported`.
pub fn generate_root(
    ctx: &MountContext<'_>,
    req: &CaRequest,
    key: PrivateKey,
    serial: &SerialNumber,
) -> Result<GeneratedRoot> {
    let names = Names::for_ca(req)?;
    let mut warnings = Vec::new();
    let (not_before, not_after) = issue::ca_validity(ctx, req, None, &mut warnings)?;
    let mut params = issue::base_params(&names, &req.subject, serial, not_before, not_after)?;
    params.is_ca = ca_constraint(req.max_path_length, &mut warnings)?;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    issue::apply_name_constraints(&mut params, &req.permitted_dns_domains)?;
    issue::apply_urls(&mut params, ctx.urls)?;
    if ctx.urls.is_empty() {
        warnings.push(AIA_WARNING.to_string());
    }
    let kp = key.key_pair(req.signature_bits)?;
    let cert = params.self_signed(&kp).map_err(PkiError::crypto)?;
    let issuer = Issuer::from_parts(&cert.pem(), key, &[])?;
    let private_key = if req.exported {
        Some(issuer.key.encode(req.private_key_format, req.format)?)
    } else {
        None
    };
    let key_type = issuer.key.private_key_type();
    let issued = Issued::assemble(
        cert.der().to_vec(),
        &issuer,
        false,
        req.format,
        private_key.map(|k| (k, key_type)),
        warnings,
    )?;
    Ok(GeneratedRoot { issuer, issued })
}

/// Vault's warning on roots made while `config/urls` is empty.
pub const AIA_WARNING: &str = "This mount hasn't configured any authority information access (AIA) fields; this may make it harder for systems to find missing certificates in the chain or to validate revocation status of certificates. Consider updating /config/urls or the newly generated issuer with this information.";

fn ca_constraint(max_path_length: i32, warnings: &mut Vec<String>) -> Result<IsCa> {
    match max_path_length {
        n if n < 0 => Ok(IsCa::Ca(BasicConstraints::Unconstrained)),
        0 => {
            warnings.push("Max path length of the generated certificate is zero. This certificate cannot be used to issue intermediate CA certificates.".to_string());
            Ok(IsCa::Ca(BasicConstraints::Constrained(0)))
        }
        n => u8::try_from(n)
            .map(|n| IsCa::Ca(BasicConstraints::Constrained(n)))
            .map_err(|_| PkiError::bad(format!("max_path_length {n} is too large"))),
    }
}

/// An intermediate CSR and the response's key fields.
#[derive(Debug)]
pub struct IntermediateCsr {
    /// The CSR in the request's `format` (PEM or base64 DER).
    pub csr: String,
    /// `private_key`, for `exported` only.
    pub private_key: Option<Zeroizing<String>>,
    /// `private_key_type`.
    pub private_key_type: &'static str,
}

/// Vault's `intermediate/generate/:type`: a CSR for `key` with the request's
/// subject and SANs. Keep `key` (behind the barrier) for [`Issuer::set_signed`].
pub fn generate_intermediate_csr(req: &CaRequest, key: &PrivateKey) -> Result<IntermediateCsr> {
    let names = Names::for_ca(req)?;
    // Validity and serial are not part of a CSR; base_params needs placeholders.
    let placeholder = SerialNumber::from_bytes(&[1])?;
    let mut params = issue::base_params(
        &names,
        &req.subject,
        &placeholder,
        OffsetDateTime::UNIX_EPOCH,
        OffsetDateTime::UNIX_EPOCH,
    )?;
    params.serial_number = None;
    if req.add_basic_constraints {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    let kp = key.key_pair(req.signature_bits)?;
    let csr = params.serialize_request(&kp).map_err(PkiError::crypto)?;
    let private_key = if req.exported {
        Some(key.encode(req.private_key_format, req.format)?)
    } else {
        None
    };
    Ok(IntermediateCsr {
        csr: req.format.encode("CERTIFICATE REQUEST", csr.der()),
        private_key,
        private_key_type: key.private_key_type(),
    })
}

/// Vault's `root/sign-intermediate`: sign another CA's CSR as a CA
/// (`CA:TRUE`, path length from the request or one less than ours).
pub fn sign_intermediate(
    ctx: &MountContext<'_>,
    issuer: &Issuer,
    csr: &ParsedCsr,
    req: &SignIntermediateRequest,
    serial: &SerialNumber,
) -> Result<Issued> {
    if issuer.path_len == Some(0) {
        return Err(PkiError::bad(
            "signing certificate has a max path length of zero, and cannot issue further CA certificates",
        ));
    }
    let mut warnings = Vec::new();
    let names = if req.use_csr_values {
        Names::from_csr_verbatim(csr)
    } else {
        Names::for_ca(&req.ca)?
    };
    let (not_before, not_after) =
        issue::ca_validity(ctx, &req.ca, Some(issuer.not_after), &mut warnings)?;
    let mut params = if req.use_csr_values {
        let mut p = issue::base_params(
            &names,
            &issue::SubjectFields::default(),
            serial,
            not_before,
            not_after,
        )?;
        p.distinguished_name = issue::csr_subject(csr)?;
        p
    } else {
        issue::base_params(&names, &req.ca.subject, serial, not_before, not_after)?
    };
    let max_path = if req.ca.max_path_length >= 0 {
        req.ca.max_path_length
    } else {
        match issuer.path_len {
            None => -1,
            Some(n) => i32::try_from(n).unwrap_or(i32::MAX) - 1,
        }
    };
    params.is_ca = ca_constraint(max_path, &mut warnings)?;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    issue::apply_name_constraints(&mut params, &req.ca.permitted_dns_domains)?;
    issue::apply_urls(&mut params, ctx.urls)?;
    let spki = csr.public_key()?;
    let signer = issuer.signer(req.ca.signature_bits)?;
    let cert = params.signed_by(&spki, &signer).map_err(PkiError::crypto)?;
    Issued::assemble(
        cert.der().to_vec(),
        issuer,
        false,
        req.ca.format,
        None,
        warnings,
    )
}

#[cfg(test)]
mod tests;
