//! Issuing leaves: `issue/:role`, `sign/:role` and `sign-verbatim`.
//!
//! The flow is Vault's `GenerateCreationBundle` + `signCertificate`: resolve
//! the names (CN and SANs from the request or the CSR), check every one against
//! the role, resolve the validity (TTL → role → mount → 30 days, capped at the
//! role or mount maximum with a warning, refused past the issuer's notAfter),
//! then build our own certificate parameters — key usages, EKUs, subject
//! fields, AKI/SKI, AIA and CRL distribution points — and sign with the issuer.
//! Nothing requested by a CSR beyond its names and key reaches the
//! certificate.
//!
//! The caller supplies the serial number (so it can reserve it in storage
//! first), the mount's TTLs and URLs, and the clock ([`MountContext`]).

use super::clock::Clock;
use super::csr::ParsedCsr;
use super::duration::format_go;
use super::error::{PkiError, Result, SanSource};
use super::issuer::Issuer;
use super::keys::{Format, KeyType, PrivateKey, PrivateKeyFormat};
use super::role::{self, KeySpec, Role, TemplateMetadata, parse_rfc3339};
use super::serial::SerialNumber;
use super::{der, pem};
use rcgen::{
    CertificateParams, CrlDistributionPoint, CustomExtension, DistinguishedName, DnType, DnValue,
    GeneralSubtree, IsCa, NameConstraints, PublicKeyData, SanType,
};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

/// Lifetime used when neither request, role nor mount gives one.
pub const FALLBACK_TTL: Duration = Duration::from_secs(30 * 86_400);

/// The mount's lease settings (`sys/mounts/<path>/tune`). Zero means unset:
/// the default falls back to [`FALLBACK_TTL`], the maximum to no mount cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountTtl {
    /// `default_lease_ttl`.
    pub default_ttl: Duration,
    /// `max_lease_ttl`.
    pub max_ttl: Duration,
}

/// Vault's `config/urls`: written into AIA and CRL distribution points.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlsConfig {
    /// caIssuers URLs (AIA).
    pub issuing_certificates: Vec<String>,
    /// CRL distribution points.
    pub crl_distribution_points: Vec<String>,
    /// OCSP URLs (AIA).
    pub ocsp_servers: Vec<String>,
}

impl UrlsConfig {
    /// No URL configured.
    pub fn is_empty(&self) -> bool {
        self.issuing_certificates.is_empty()
            && self.crl_distribution_points.is_empty()
            && self.ocsp_servers.is_empty()
    }
}

/// Everything an issuing operation needs from its mount.
#[derive(Debug, Clone, Copy)]
pub struct MountContext<'a> {
    /// Mount TTLs.
    pub ttl: MountTtl,
    /// AIA / CRL URLs.
    pub urls: &'a UrlsConfig,
    /// Time.
    pub clock: &'a dyn Clock,
}

/// Subject attributes besides the CN (Vault's `ou`, `organization`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectFields {
    /// O.
    pub organization: Vec<String>,
    /// OU.
    pub ou: Vec<String>,
    /// C.
    pub country: Vec<String>,
    /// L.
    pub locality: Vec<String>,
    /// ST.
    pub province: Vec<String>,
    /// street.
    pub street_address: Vec<String>,
    /// postalCode.
    pub postal_code: Vec<String>,
}

impl From<&Role> for SubjectFields {
    fn from(r: &Role) -> Self {
        SubjectFields {
            organization: r.organization.clone(),
            ou: r.ou.clone(),
            country: r.country.clone(),
            locality: r.locality.clone(),
            province: r.province.clone(),
            street_address: r.street_address.clone(),
            postal_code: r.postal_code.clone(),
        }
    }
}

/// Parameters of `root/generate`, `intermediate/generate` and (inside
/// [`SignIntermediateRequest`]) `root/sign-intermediate`.
#[derive(Debug, Clone)]
pub struct CaRequest {
    /// Subject CN (required).
    pub common_name: String,
    /// DNS and email SANs (emails contain `@`).
    pub alt_names: Vec<String>,
    /// IP SANs.
    pub ip_sans: Vec<String>,
    /// URI SANs.
    pub uri_sans: Vec<String>,
    /// Other SANs: refused when non-empty (not supported).
    pub other_sans: Vec<String>,
    /// Lifetime (`None` = mount default).
    pub ttl: Option<Duration>,
    /// Fixed notAfter (exclusive with `ttl`).
    pub not_after: Option<OffsetDateTime>,
    /// Backdating of notBefore.
    pub not_before_duration: Duration,
    /// Signature hash size (0 = automatic).
    pub signature_bits: u32,
    /// Path length constraint; -1 = none (sign-intermediate: ours minus one).
    pub max_path_length: i32,
    /// Keep the CN out of the SANs.
    pub exclude_cn_from_sans: bool,
    /// Name constraints (permitted DNS subtrees).
    pub permitted_dns_domains: Vec<String>,
    /// Subject attributes.
    pub subject: SubjectFields,
    /// Return the private key (`exported`) or keep it (`internal`).
    pub exported: bool,
    /// Response format.
    pub format: Format,
    /// Private key encoding.
    pub private_key_format: PrivateKeyFormat,
    /// Intermediate CSR only: request `CA:TRUE` in the CSR.
    pub add_basic_constraints: bool,
}

impl Default for CaRequest {
    fn default() -> Self {
        CaRequest {
            common_name: String::new(),
            alt_names: Vec::new(),
            ip_sans: Vec::new(),
            uri_sans: Vec::new(),
            other_sans: Vec::new(),
            ttl: None,
            not_after: None,
            not_before_duration: Duration::from_secs(30),
            signature_bits: 0,
            max_path_length: -1,
            exclude_cn_from_sans: false,
            permitted_dns_domains: Vec::new(),
            subject: SubjectFields::default(),
            exported: false,
            format: Format::Pem,
            private_key_format: PrivateKeyFormat::Der,
            add_basic_constraints: false,
        }
    }
}

/// Parameters of `root/sign-intermediate`.
#[derive(Debug, Clone, Default)]
pub struct SignIntermediateRequest {
    /// Subject, SANs, TTL, path length, format (`exported` is ignored).
    pub ca: CaRequest,
    /// Take subject and SANs from the CSR instead of `ca`.
    pub use_csr_values: bool,
}

/// Parameters of `issue/:role` and `sign/:role`.
#[derive(Debug, Clone, Default)]
pub struct IssueRequest {
    /// Subject CN (sign: used when the role ignores or the CSR lacks one).
    pub common_name: String,
    /// DNS and email SANs (emails contain `@`).
    pub alt_names: Vec<String>,
    /// IP SANs.
    pub ip_sans: Vec<String>,
    /// URI SANs.
    pub uri_sans: Vec<String>,
    /// Other SANs: refused when non-empty (not supported).
    pub other_sans: Vec<String>,
    /// Lifetime (`None` or zero = role/mount default).
    pub ttl: Option<Duration>,
    /// Fixed notAfter (exclusive with `ttl`).
    pub not_after: Option<OffsetDateTime>,
    /// Keep the CN out of the SANs.
    pub exclude_cn_from_sans: bool,
    /// Response format.
    pub format: Format,
    /// Private key encoding (issue only).
    pub private_key_format: PrivateKeyFormat,
    /// Drop self-signed certificates from `ca_chain`.
    pub remove_roots_from_chain: bool,
    /// Subject UIDs: accepted and ignored.
    pub user_ids: Vec<String>,
    /// Issue only, honoured when the role's key_type is `any`.
    pub key_type: Option<String>,
    /// Issue only, with `key_type`.
    pub key_bits: Option<u32>,
    /// Token metadata for `allowed_domains_template` / `allowed_uri_sans_template`.
    pub metadata: TemplateMetadata,
}

/// Parameters of `sign-verbatim`.
#[derive(Debug, Clone)]
pub struct VerbatimRequest {
    /// Key usages (Go names).
    pub key_usage: Vec<String>,
    /// Extended key usages by name.
    pub ext_key_usage: Vec<String>,
    /// Extended key usages by OID.
    pub ext_key_usage_oids: Vec<String>,
    /// Lifetime.
    pub ttl: Option<Duration>,
    /// Fixed notAfter.
    pub not_after: Option<OffsetDateTime>,
    /// Response format.
    pub format: Format,
    /// Signature hash size (0 = automatic).
    pub signature_bits: u32,
    /// Drop self-signed certificates from `ca_chain`.
    pub remove_roots_from_chain: bool,
    /// Add `CA:FALSE`.
    pub basic_constraints_valid_for_non_ca: bool,
}

impl Default for VerbatimRequest {
    fn default() -> Self {
        VerbatimRequest {
            key_usage: Role::default().key_usage,
            ext_key_usage: Vec::new(),
            ext_key_usage_oids: Vec::new(),
            ttl: None,
            not_after: None,
            format: Format::Pem,
            signature_bits: 0,
            remove_roots_from_chain: false,
            basic_constraints_valid_for_non_ca: false,
        }
    }
}

/// A signed certificate and Vault's response fields.
pub struct Issued {
    /// `certificate`: PEM, base64 DER, or (pem_bundle) key + cert + chain.
    pub certificate: String,
    /// `issuing_ca`.
    pub issuing_ca: String,
    /// `ca_chain`: the issuer and its parents.
    pub ca_chain: Vec<String>,
    /// `private_key` (issue and exported CAs only).
    pub private_key: Option<Zeroizing<String>>,
    /// `private_key_type` (with `private_key`).
    pub private_key_type: Option<&'static str>,
    /// `serial_number` (use [`SerialNumber::colon_hex`]).
    pub serial_number: SerialNumber,
    /// `expiration`: notAfter in Unix seconds.
    pub expiration: i64,
    /// The certificate DER, for storage under `certs/<serial>`.
    pub der: Vec<u8>,
    /// Response warnings.
    pub warnings: Vec<String>,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("serial_number", &self.serial_number)
            .field("expiration", &self.expiration)
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("private_key_type", &self.private_key_type)
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// Build the response fields for `der`, signed by `issuer`.
    pub(crate) fn assemble(
        der: Vec<u8>,
        issuer: &Issuer,
        remove_roots: bool,
        format: Format,
        key: Option<(Zeroizing<String>, &'static str)>,
        warnings: Vec<String>,
    ) -> Result<Issued> {
        let (_, x) = X509Certificate::from_der(&der).map_err(PkiError::encoding)?;
        let serial_number = SerialNumber::from_bytes(x.raw_serial())?;
        let expiration = x.validity().not_after.timestamp();
        let own = match format {
            Format::Der => format.encode("CERTIFICATE", &der),
            Format::Pem | Format::PemBundle => {
                pem::encode("CERTIFICATE", &der).trim_end().to_string()
            }
        };
        let chain: Vec<String> = issuer
            .ca_chain(remove_roots)
            .into_iter()
            .map(|c| c.encode(format))
            .collect();
        let self_issued = issuer.certificate_der() == der.as_slice();
        let certificate = if format == Format::PemBundle {
            let mut parts: Vec<&str> = Vec::new();
            if let Some((k, _)) = &key {
                parts.push(k.as_str());
            }
            parts.push(&own);
            if !self_issued {
                parts.extend(chain.iter().map(String::as_str));
            }
            parts.join("\n")
        } else {
            own
        };
        let (private_key, private_key_type) = match key {
            Some((k, t)) => (Some(k), Some(t)),
            None => (None, None),
        };
        Ok(Issued {
            certificate,
            issuing_ca: issuer.certificate().encode(format),
            ca_chain: chain,
            private_key,
            private_key_type,
            serial_number,
            expiration,
            der,
            warnings,
        })
    }
}

/// The names going into a certificate, already checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Names {
    pub cn: Option<String>,
    pub dns: Vec<String>,
    pub emails: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub uris: Vec<String>,
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// Split `alt_names` into DNS names and emails; a non-email that is not
/// hostname syntax is refused (Vault drops it silently).
fn split_alt_names(alt: &[String], dns: &mut Vec<String>, emails: &mut Vec<String>) -> Result<()> {
    for a in alt.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
        if a.contains('@') {
            push_unique(emails, a.to_string());
        } else if role::is_hostname(a) {
            push_unique(dns, a.to_string());
        } else {
            return Err(PkiError::NameNotAllowed {
                kind: super::error::NameKind::AltName,
                name: a.to_string(),
            });
        }
    }
    Ok(())
}

fn add_cn_to_sans(cn: &str, dns: &mut Vec<String>, emails: &mut Vec<String>) {
    if cn.contains('@') {
        push_unique(emails, cn.to_string());
    } else if role::is_hostname(cn) {
        push_unique(dns, cn.to_string());
    }
}

fn parse_ips(raw: &[String]) -> Result<Vec<IpAddr>> {
    raw.iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| PkiError::InvalidIp(s.to_string())))
        .collect()
}

/// A URI SAN: ASCII, no whitespace, `scheme:rest` with an RFC 3986 scheme.
fn check_uri(u: &str) -> Result<()> {
    let ok = u.is_ascii()
        && !u
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        && u.split_once(':').is_some_and(|(scheme, rest)| {
            !rest.is_empty()
                && scheme
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic())
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        });
    if ok {
        Ok(())
    } else {
        Err(PkiError::InvalidUri(u.to_string()))
    }
}

fn nonempty(v: &[String]) -> Vec<String> {
    v.iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn refuse_other_sans(other: &[String]) -> Result<()> {
    if nonempty(other).is_empty() {
        Ok(())
    } else {
        Err(PkiError::bad("other_sans are not supported by this server"))
    }
}

impl Names {
    /// CA requests: no role, CN required.
    pub(crate) fn for_ca(req: &CaRequest) -> Result<Names> {
        refuse_other_sans(&req.other_sans)?;
        let cn = req.common_name.trim();
        if cn.is_empty() {
            return Err(PkiError::bad("the common_name field is required"));
        }
        let mut n = Names {
            cn: Some(cn.to_string()),
            ..Names::default()
        };
        if !req.exclude_cn_from_sans {
            add_cn_to_sans(cn, &mut n.dns, &mut n.emails);
        }
        split_alt_names(&req.alt_names, &mut n.dns, &mut n.emails)?;
        n.ips = parse_ips(&req.ip_sans)?;
        n.uris = nonempty(&req.uri_sans);
        n.uris.iter().try_for_each(|u| check_uri(u))?;
        Ok(n)
    }

    /// Everything from the CSR, unchecked (sign-verbatim, use_csr_values).
    pub(crate) fn from_csr_verbatim(csr: &ParsedCsr) -> Names {
        Names {
            cn: csr.common_name().map(str::to_string),
            dns: csr.dns_names().to_vec(),
            emails: csr.emails().to_vec(),
            ips: csr.ip_sans().to_vec(),
            uris: csr.uri_sans().to_vec(),
        }
    }

    /// Vault's name resolution for issue/sign, with every name checked by `role`.
    fn for_leaf(
        role: &Role,
        req: &IssueRequest,
        csr: Option<&ParsedCsr>,
        warnings: &mut Vec<String>,
    ) -> Result<Names> {
        refuse_other_sans(&req.other_sans)?;
        let meta = &req.metadata;
        let mut n = Names::default();
        let csr_sans = csr.filter(|_| role.use_csr_sans);
        let mut cn = csr
            .filter(|_| role.use_csr_common_name)
            .and_then(ParsedCsr::common_name)
            .unwrap_or_default()
            .to_string();
        if cn.is_empty() {
            cn = req.common_name.trim().to_string();
            if cn.is_empty() && role.require_cn {
                return Err(PkiError::CommonNameRequired);
            }
        }
        if let Some(c) = csr_sans {
            n.dns = c.dns_names().to_vec();
            n.emails = c.emails().to_vec();
            if c.other_san_count() > 0 {
                return Err(PkiError::bad(
                    "other SANs in the CSR are not supported by this server",
                ));
            }
            if !(nonempty(&req.alt_names).is_empty()
                && nonempty(&req.ip_sans).is_empty()
                && nonempty(&req.uri_sans).is_empty())
            {
                warnings.push("alt_names, ip_sans and uri_sans were ignored: the role takes SANs from the CSR (use_csr_sans)".to_string());
            }
        }
        if !cn.is_empty() && !req.exclude_cn_from_sans {
            add_cn_to_sans(&cn, &mut n.dns, &mut n.emails);
        }
        if csr_sans.is_none() {
            split_alt_names(&req.alt_names, &mut n.dns, &mut n.emails)?;
        }
        if !cn.is_empty() {
            role.check_common_name(&cn, meta)?;
            n.cn = Some(cn);
        }
        role.check_dns_names(&n.dns, meta)?;
        role.check_emails(&n.emails, meta)?;
        match csr_sans {
            Some(c) => {
                role.check_ip_sans(c.ip_sans(), SanSource::Csr)?;
                n.ips = c.ip_sans().to_vec();
                role.check_uri_sans(c.uri_sans(), SanSource::Csr, meta)?;
                n.uris = c.uri_sans().to_vec();
            }
            None => {
                let raw = nonempty(&req.ip_sans);
                if !raw.is_empty() && !role.allow_ip_sans {
                    return Err(PkiError::NameNotAllowed {
                        kind: super::error::NameKind::IpSan(SanSource::Api),
                        name: format!("[{}]", raw.join(" ")),
                    });
                }
                n.ips = parse_ips(&raw)?;
                let uris = nonempty(&req.uri_sans);
                role.check_uri_sans(&uris, SanSource::Api, meta)?;
                uris.iter().try_for_each(|u| check_uri(u))?;
                n.uris = uris;
            }
        }
        Ok(n)
    }
}

/// The lifetime inputs of one request.
struct Lifetime {
    ttl: Option<Duration>,
    not_after: Option<OffsetDateTime>,
    role_ttl: Duration,
    role_max_ttl: Duration,
    not_before_duration: Duration,
    /// `not_after` was chosen by the requester (not the role): it may not
    /// reach past the role's (or the mount's) `max_ttl`.
    bounded_not_after: bool,
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

fn add(t: OffsetDateTime, d: Duration) -> Result<OffsetDateTime> {
    time::Duration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d))
        .ok_or_else(|| PkiError::bad("ttl is too large"))
}

/// Vault's `GetCertificateNotAfter` + `ApplyIssuerLeafNotAfterBehavior` (err).
fn resolve_validity(
    ctx: &MountContext<'_>,
    l: &Lifetime,
    ca_not_after: Option<OffsetDateTime>,
    warnings: &mut Vec<String>,
) -> Result<(OffsetDateTime, OffsetDateTime)> {
    let now = whole_seconds(ctx.clock.now());
    let req_ttl = l.ttl.filter(|d| !d.is_zero());
    if req_ttl.is_some() && l.not_after.is_some() {
        return Err(PkiError::TtlAndNotAfter);
    }
    let mut ttl = [req_ttl.unwrap_or_default(), l.role_ttl, ctx.ttl.default_ttl]
        .into_iter()
        .find(|d| !d.is_zero())
        .unwrap_or(FALLBACK_TTL);
    let max = if l.role_max_ttl.is_zero() {
        ctx.ttl.max_ttl
    } else {
        l.role_max_ttl
    };
    if !max.is_zero() && ttl > max {
        warnings.push(format!(
            "TTL {:?} is longer than permitted maxTTL {:?}, so maxTTL is being used",
            format_go(ttl),
            format_go(max)
        ));
        ttl = max;
    }
    let not_after = match l.not_after {
        Some(t) => whole_seconds(t),
        None => add(now, ttl)?,
    };
    // A deliberate difference from Vault, which lets `not_after` ignore
    // `max_ttl`: refused, so a role's max_ttl is a real bound on lifetimes.
    if l.bounded_not_after && l.not_after.is_some() && !max.is_zero() {
        let limit = add(now, max)?;
        if not_after > limit {
            return Err(PkiError::bad(format!(
                "cannot satisfy request, as the requested not_after {} is beyond the max_ttl of {} (latest {})",
                crate::pki::error::rfc3339_nano(not_after),
                format_go(max),
                crate::pki::error::rfc3339_nano(limit)
            )));
        }
    }
    if let Some(ca) = ca_not_after
        && not_after > ca
    {
        return Err(PkiError::TtlPastCaExpiry {
            not_after,
            ca_not_after: ca,
        });
    }
    let back = time::Duration::try_from(l.not_before_duration)
        .map_err(|_| PkiError::bad("not_before_duration is too large"))?;
    let not_before = now.checked_sub(back).unwrap_or(now);
    if not_after <= not_before {
        return Err(PkiError::bad(
            "the requested notAfter is not after notBefore",
        ));
    }
    Ok((not_before, not_after))
}

/// Validity for CA requests (roots: no issuer bound).
pub(crate) fn ca_validity(
    ctx: &MountContext<'_>,
    req: &CaRequest,
    ca_not_after: Option<OffsetDateTime>,
    warnings: &mut Vec<String>,
) -> Result<(OffsetDateTime, OffsetDateTime)> {
    let l = Lifetime {
        ttl: req.ttl,
        not_after: req.not_after,
        role_ttl: Duration::ZERO,
        role_max_ttl: Duration::ZERO,
        not_before_duration: req.not_before_duration,
        bounded_not_after: false,
    };
    resolve_validity(ctx, &l, ca_not_after, warnings)
}

/// Push up to two values of one attribute type (rcgen keys its DN by type; the
/// second value goes in under the same OID as a custom type).
fn push_attr(
    dn: &mut DistinguishedName,
    ty: DnType,
    arcs: &[u64],
    values: &[String],
    what: &str,
) -> Result<()> {
    let values: Vec<&String> = values.iter().filter(|v| !v.trim().is_empty()).collect();
    if values.len() > 2 {
        return Err(PkiError::bad(format!(
            "at most two {what} values are supported in a certificate subject"
        )));
    }
    for (i, v) in values.into_iter().enumerate() {
        let value = if ty == DnType::CountryName {
            rcgen::string::PrintableString::try_from(v.as_str())
                .map(DnValue::PrintableString)
                .unwrap_or_else(|_| DnValue::Utf8String(v.clone()))
        } else {
            DnValue::Utf8String(v.clone())
        };
        if i == 0 {
            dn.push(ty.clone(), value);
        } else {
            dn.push(DnType::CustomDnType(arcs.to_vec()), value);
        }
    }
    Ok(())
}

fn subject_dn(cn: Option<&str>, s: &SubjectFields) -> Result<DistinguishedName> {
    // Go's pkix.Name order: C, ST, L, street, postalCode, O, OU, CN.
    let mut dn = DistinguishedName::new();
    push_attr(
        &mut dn,
        DnType::CountryName,
        &[2, 5, 4, 6],
        &s.country,
        "country",
    )?;
    push_attr(
        &mut dn,
        DnType::StateOrProvinceName,
        &[2, 5, 4, 8],
        &s.province,
        "province",
    )?;
    push_attr(
        &mut dn,
        DnType::LocalityName,
        &[2, 5, 4, 7],
        &s.locality,
        "locality",
    )?;
    push_attr(
        &mut dn,
        DnType::CustomDnType(vec![2, 5, 4, 9]),
        &[2, 5, 4, 9],
        &s.street_address,
        "street_address",
    )?;
    push_attr(
        &mut dn,
        DnType::CustomDnType(vec![2, 5, 4, 17]),
        &[2, 5, 4, 17],
        &s.postal_code,
        "postal_code",
    )?;
    push_attr(
        &mut dn,
        DnType::OrganizationName,
        &[2, 5, 4, 10],
        &s.organization,
        "organization",
    )?;
    push_attr(
        &mut dn,
        DnType::OrganizationalUnitName,
        &[2, 5, 4, 11],
        &s.ou,
        "ou",
    )?;
    if let Some(cn) = cn {
        dn.push(DnType::CommonName, DnValue::Utf8String(cn.to_string()));
    }
    Ok(dn)
}

fn ia5(s: &str) -> Result<rcgen::string::Ia5String> {
    rcgen::string::Ia5String::try_from(s)
        .map_err(|_| PkiError::bad(format!("{s:?} is not a valid IA5 string")))
}

/// Subject, SANs, serial and validity: common to every certificate we make.
pub(crate) fn base_params(
    names: &Names,
    subject: &SubjectFields,
    serial: &SerialNumber,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams> {
    let mut p = CertificateParams::default();
    p.distinguished_name = subject_dn(names.cn.as_deref(), subject)?;
    p.not_before = not_before;
    p.not_after = not_after;
    p.serial_number = Some(serial.to_rcgen());
    let mut sans = Vec::new();
    for d in &names.dns {
        sans.push(SanType::DnsName(ia5(d)?));
    }
    for e in &names.emails {
        sans.push(SanType::Rfc822Name(ia5(e)?));
    }
    sans.extend(names.ips.iter().copied().map(SanType::IpAddress));
    for u in &names.uris {
        sans.push(SanType::URI(ia5(u)?));
    }
    p.subject_alt_names = sans;
    Ok(p)
}

/// AIA (caIssuers + OCSP) and CRL distribution points from `config/urls`.
pub(crate) fn apply_urls(p: &mut CertificateParams, urls: &UrlsConfig) -> Result<()> {
    let all = urls
        .issuing_certificates
        .iter()
        .chain(&urls.ocsp_servers)
        .chain(&urls.crl_distribution_points);
    for u in all {
        check_uri(u)?;
    }
    if !urls.issuing_certificates.is_empty() || !urls.ocsp_servers.is_empty() {
        p.custom_extensions.push(CustomExtension::from_oid_content(
            der::OID_AIA,
            der::authority_info_access(&urls.ocsp_servers, &urls.issuing_certificates),
        ));
    }
    if !urls.crl_distribution_points.is_empty() {
        p.crl_distribution_points = vec![CrlDistributionPoint {
            uris: urls.crl_distribution_points.clone(),
        }];
    }
    Ok(())
}

pub(crate) fn apply_name_constraints(p: &mut CertificateParams, domains: &[String]) -> Result<()> {
    let domains = nonempty(domains);
    if domains.is_empty() {
        return Ok(());
    }
    p.name_constraints = Some(NameConstraints {
        permitted_subtrees: domains.into_iter().map(GeneralSubtree::DnsName).collect(),
        excluded_subtrees: Vec::new(),
    });
    Ok(())
}

/// A leaf ready to sign, minus its public key.
struct LeafPlan {
    params: CertificateParams,
    warnings: Vec<String>,
    format: Format,
    remove_roots: bool,
    signature_bits: u32,
}

/// The role's usages, policies and constraints on top of the names.
fn leaf_params(
    role: &Role,
    names: &Names,
    serial: &SerialNumber,
    nb: OffsetDateTime,
    na: OffsetDateTime,
    urls: &UrlsConfig,
) -> Result<CertificateParams> {
    let mut p = base_params(names, &SubjectFields::from(role), serial, nb, na)?;
    p.key_usages = role.key_usages()?;
    p.extended_key_usages = role.ext_key_usages()?;
    if role.basic_constraints_valid_for_non_ca {
        p.is_ca = IsCa::ExplicitNoCa;
    }
    let policies = role
        .policy_identifiers
        .iter()
        .map(|o| {
            role::parse_oid(o)
                .ok_or_else(|| PkiError::bad(format!("invalid policy identifier {o:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    if !policies.is_empty() {
        p.custom_extensions.push(CustomExtension::from_oid_content(
            der::OID_CERT_POLICIES,
            der::certificate_policies(&policies),
        ));
    }
    p.use_authority_key_identifier_extension = true;
    apply_urls(&mut p, urls)?;
    Ok(p)
}

fn role_lifetime(
    role: Option<&Role>,
    ttl: Option<Duration>,
    not_after: Option<OffsetDateTime>,
) -> Result<Lifetime> {
    let default = Role::default();
    let r = role.unwrap_or(&default);
    let role_not_after = if r.not_after.is_empty() {
        None
    } else {
        Some(parse_rfc3339(&r.not_after)?)
    };
    Ok(Lifetime {
        ttl,
        bounded_not_after: role_not_after.is_none(),
        not_after: role_not_after.or(not_after),
        role_ttl: r.ttl,
        role_max_ttl: r.max_ttl,
        not_before_duration: r.not_before_duration,
    })
}

fn plan_leaf(
    ctx: &MountContext<'_>,
    issuer: &Issuer,
    role: &Role,
    req: &IssueRequest,
    csr: Option<&ParsedCsr>,
    mut warnings: Vec<String>,
) -> Result<LeafPlan> {
    if role.use_pss {
        return Err(PkiError::bad("use_pss is not supported by this server"));
    }
    let names = Names::for_leaf(role, req, csr, &mut warnings)?;
    let l = role_lifetime(Some(role), req.ttl, req.not_after)?;
    let (nb, na) = resolve_validity(ctx, &l, Some(issuer.not_after()), &mut warnings)?;
    let serial = SerialNumber::from_bytes(&[1])?; // replaced by the caller's in finish()
    let params = leaf_params(role, &names, &serial, nb, na, ctx.urls)?;
    Ok(LeafPlan {
        params,
        warnings,
        format: req.format,
        remove_roots: req.remove_roots_from_chain,
        signature_bits: role.signature_bits,
    })
}

/// Sign `plan` for `public_key`: adds the serial and the leaf's SKI.
fn finish(
    mut plan: LeafPlan,
    issuer: &Issuer,
    serial: &SerialNumber,
    public_key: &impl PublicKeyData,
    key: Option<(Zeroizing<String>, &'static str)>,
) -> Result<Issued> {
    plan.params.serial_number = Some(serial.to_rcgen());
    if plan.params.is_ca == IsCa::NoCa {
        // rcgen writes a SubjectKeyIdentifier only with basic constraints.
        let id = plan.params.key_identifier(public_key);
        plan.params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                der::OID_SKI,
                der::subject_key_identifier(&id),
            ));
    }
    let signer = issuer.signer(plan.signature_bits)?;
    let cert = plan
        .params
        .signed_by(public_key, &signer)
        .map_err(PkiError::crypto)?;
    Issued::assemble(
        cert.der().to_vec(),
        issuer,
        plan.remove_roots,
        plan.format,
        key,
        plan.warnings,
    )
}

/// The key type `issue` generates for `role` and `req`, with Vault's warning
/// when request key parameters are ignored.
pub fn issue_key_type(role: &Role, req: &IssueRequest) -> Result<(KeyType, Vec<String>)> {
    let req_type = req.key_type.as_deref().filter(|t| !t.is_empty());
    match role.key_spec()? {
        KeySpec::Exact(kt) => {
            let mut warnings = Vec::new();
            if req_type.is_some() || req.key_bits.is_some_and(|b| b != 0) {
                warnings.push(
                    "parameters key_type and key_bits ignored as role had specific values"
                        .to_string(),
                );
            }
            Ok((kt, warnings))
        }
        KeySpec::Any => match req_type {
            None | Some("any") => Err(PkiError::AnyKeyTypeForIssue),
            Some(t) => Ok((
                KeyType::from_vault(t, req.key_bits.unwrap_or(0))?,
                Vec::new(),
            )),
        },
    }
}

/// Vault's `issue/:role`: check names and TTL, generate a key of the role's
/// type, sign. `serial` must be unused (the caller reserves it in storage).
pub fn issue(
    ctx: &MountContext<'_>,
    issuer: &Issuer,
    role: &Role,
    req: &IssueRequest,
    serial: &SerialNumber,
) -> Result<Issued> {
    let (kt, warnings) = issue_key_type(role, req)?;
    // Check everything before paying for key generation.
    let plan = plan_leaf(ctx, issuer, role, req, None, warnings)?;
    let key = PrivateKey::generate(kt)?;
    finish_with_key(plan, issuer, serial, &key, req)
}

/// [`issue`] with a key the caller generated (tests, pre-generated key pools).
/// The key must be of the type [`issue_key_type`] gives.
pub fn issue_with_key(
    ctx: &MountContext<'_>,
    issuer: &Issuer,
    role: &Role,
    req: &IssueRequest,
    serial: &SerialNumber,
    key: &PrivateKey,
) -> Result<Issued> {
    let (kt, warnings) = issue_key_type(role, req)?;
    if key.key_type() != kt {
        return Err(PkiError::KeyTypeNotAllowed(kt.name().to_string()));
    }
    let plan = plan_leaf(ctx, issuer, role, req, None, warnings)?;
    finish_with_key(plan, issuer, serial, key, req)
}

fn finish_with_key(
    plan: LeafPlan,
    issuer: &Issuer,
    serial: &SerialNumber,
    key: &PrivateKey,
    req: &IssueRequest,
) -> Result<Issued> {
    let encoded = key.encode(req.private_key_format, req.format)?;
    let public_key = key.public_key()?;
    finish(
        plan,
        issuer,
        serial,
        &public_key,
        Some((encoded, key.private_key_type())),
    )
}

/// Check a CSR's key against the role (`role requires keys of type ...`).
fn check_csr_key(role: &Role, csr: &ParsedCsr) -> Result<()> {
    let k = csr.key();
    if k.key_type == "rsa" && k.bits < 2048 {
        return Err(PkiError::bad(
            "RSA keys < 2048 bits are unsafe and not supported",
        ));
    }
    match role.key_spec()? {
        KeySpec::Any => Ok(()),
        KeySpec::Exact(kt) => {
            if k.key_type != kt.name() {
                return Err(PkiError::KeyTypeNotAllowed(kt.name().to_string()));
            }
            if k.bits < kt.bits() {
                return Err(PkiError::KeyTooSmall {
                    required: kt.bits(),
                    actual: k.bits,
                });
            }
            Ok(())
        }
    }
}

/// Vault's `sign/:role`: the CSR supplies the key and (per `use_csr_common_name`
/// / `use_csr_sans`) the names; the role's rules apply to every name either way.
pub fn sign(
    ctx: &MountContext<'_>,
    issuer: &Issuer,
    role: &Role,
    csr: &ParsedCsr,
    req: &IssueRequest,
    serial: &SerialNumber,
) -> Result<Issued> {
    check_csr_key(role, csr)?;
    let spki = csr.public_key()?;
    let plan = plan_leaf(ctx, issuer, role, req, Some(csr), Vec::new())?;
    finish(plan, issuer, serial, &spki, None)
}

/// The CSR's subject, attribute by attribute (at most two values per type).
pub(crate) fn csr_subject(csr: &ParsedCsr) -> Result<DistinguishedName> {
    let mut dn = DistinguishedName::new();
    let mut seen: Vec<Vec<u64>> = Vec::new();
    for (arcs, value) in csr.subject() {
        let ty = if seen.contains(arcs) {
            DnType::CustomDnType(arcs.clone())
        } else {
            DnType::from_oid(arcs)
        };
        if dn.get(&ty).is_some() {
            return Err(PkiError::bad(
                "at most two values of one subject attribute are supported",
            ));
        }
        seen.push(arcs.clone());
        dn.push(ty, DnValue::Utf8String(value.clone()));
    }
    Ok(dn)
}

/// Vault's `sign-verbatim[/:role]`: subject and SANs copied from the CSR
/// unchecked; usages from the request; an optional role contributes only its
/// TTLs and `not_before_duration`. A privileged operation: gate it by policy.
pub fn sign_verbatim(
    ctx: &MountContext<'_>,
    issuer: &Issuer,
    role: Option<&Role>,
    csr: &ParsedCsr,
    req: &VerbatimRequest,
    serial: &SerialNumber,
) -> Result<Issued> {
    if csr.other_san_count() > 0 {
        return Err(PkiError::bad(
            "other SANs in the CSR are not supported by this server",
        ));
    }
    let k = csr.key();
    if k.key_type == "rsa" && k.bits < 2048 {
        return Err(PkiError::bad(
            "RSA keys < 2048 bits are unsafe and not supported",
        ));
    }
    let spki = csr.public_key()?;
    let mut warnings = Vec::new();
    let l = role_lifetime(role, req.ttl, req.not_after)?;
    let (nb, na) = resolve_validity(ctx, &l, Some(issuer.not_after()), &mut warnings)?;
    let names = Names::from_csr_verbatim(csr);
    let mut p = base_params(&names, &SubjectFields::default(), serial, nb, na)?;
    p.distinguished_name = csr_subject(csr)?;
    p.key_usages = role::parse_key_usages(&req.key_usage)?;
    let eku_role = Role {
        server_flag: false,
        client_flag: false,
        ext_key_usage: req.ext_key_usage.clone(),
        ext_key_usage_oids: req.ext_key_usage_oids.clone(),
        ..Role::default()
    };
    p.extended_key_usages = eku_role.ext_key_usages()?;
    if req.basic_constraints_valid_for_non_ca {
        p.is_ca = IsCa::ExplicitNoCa;
    }
    p.use_authority_key_identifier_extension = true;
    apply_urls(&mut p, ctx.urls)?;
    let plan = LeafPlan {
        params: p,
        warnings,
        format: req.format,
        remove_roots: req.remove_roots_from_chain,
        signature_bits: req.signature_bits,
    };
    finish(plan, issuer, serial, &spki, None)
}

#[cfg(test)]
mod tests;
