//! Roles: Vault's certificate profiles, and the deny-by-default name checks.
//!
//! [`Role`] carries every field Vault's `roles/:name` returns, with Vault's
//! defaults, and is stored as-is (serde derive; the storage layer picks the
//! encoding). [`Role::validate`] is the role-write check and normalises
//! `key_bits` and `cn_validations` the way Vault does.
//!
//! Name checks are a port of Vault's `ValidateNames` / `ValidateCommonName` /
//! `ValidateURISAN` (`builtin/logical/pki/issuing/cert_verify.go`): a name passes
//! only if a specific rule allows it (localhost, `allow_any_name`,
//! `allowed_domains` with bare/subdomain/glob matching); each refusal names the
//! rejected value. Differences from Vault, all stricter:
//! - names are ASCII only (no IDNA conversion); non-ASCII is refused;
//! - `allowed_domains_template` / `allowed_uri_sans_template` entries resolve
//!   only `{{identity.entity.metadata.KEY}}` from the request's token metadata;
//!   an entry that does not resolve (or resolves to a value containing `*`) is
//!   skipped, never matched literally;
//! - subdomain suffixes compare case-insensitively (DNS is case-insensitive);
//! - `allow_token_displayname` is stored but grants nothing (deprecated in Vault).

use super::error::{NameKind, PkiError, Result, SanSource};
use super::keys::KeyType;
use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// Token metadata that identity templates resolve against
/// (`{{identity.entity.metadata.KEY}}`).
pub type TemplateMetadata = BTreeMap<String, String>;

/// A PKI role. Field names and defaults are Vault's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Role {
    /// Default leaf lifetime; zero means the mount default.
    #[serde(with = "secs")]
    pub ttl: Duration,
    /// Lifetime cap; zero means the mount maximum.
    #[serde(with = "secs")]
    pub max_ttl: Duration,
    /// Allow `localhost` and `localdomain` (and subdomains with `allow_subdomains`).
    pub allow_localhost: bool,
    /// Domains names are checked against.
    pub allowed_domains: Vec<String>,
    /// Resolve identity templates in `allowed_domains`.
    pub allowed_domains_template: bool,
    /// Allow a name equal to an allowed domain.
    pub allow_bare_domains: bool,
    /// Allow names below an allowed domain (any depth, wildcards included).
    pub allow_subdomains: bool,
    /// Treat `*` in allowed domains as a glob (spanning dots).
    pub allow_glob_domains: bool,
    /// Permit wildcard names at all; takes precedence over `allow_any_name`.
    pub allow_wildcard_certificates: bool,
    /// Allow any name (hostname syntax still enforced with `enforce_hostnames`).
    pub allow_any_name: bool,
    /// Check hostname syntax of CN, DNS SANs and email domains.
    pub enforce_hostnames: bool,
    /// Allow IP SANs.
    pub allow_ip_sans: bool,
    /// Globs URI SANs must match; empty refuses URI SANs.
    pub allowed_uri_sans: Vec<String>,
    /// Resolve identity templates in `allowed_uri_sans`.
    pub allowed_uri_sans_template: bool,
    /// Allowed other SANs (`<oid>;UTF8:<value>`). Stored; other SANs are not issued.
    pub allowed_other_sans: Vec<String>,
    /// Allowed subject serialNumber values. Stored; not issued.
    pub allowed_serial_numbers: Vec<String>,
    /// Allowed subject UIDs. Stored; not issued.
    pub allowed_user_ids: Vec<String>,
    /// EKU serverAuth.
    pub server_flag: bool,
    /// EKU clientAuth.
    pub client_flag: bool,
    /// EKU codeSigning.
    pub code_signing_flag: bool,
    /// EKU emailProtection.
    pub email_protection_flag: bool,
    /// `rsa`, `ec`, `ed25519` or `any`.
    pub key_type: String,
    /// Key size; 0 means the type's default (normalised by [`Role::validate`]).
    pub key_bits: u32,
    /// Signature hash size; 0 means automatic.
    pub signature_bits: u32,
    /// RSA-PSS signatures (refused by [`Role::validate`]: not supported).
    pub use_pss: bool,
    /// Key usages, Go names without the `KeyUsage` prefix, case-insensitive.
    pub key_usage: Vec<String>,
    /// Extended key usages by name (`ServerAuth`, `ClientAuth`, ...).
    pub ext_key_usage: Vec<String>,
    /// Extended key usages by OID.
    pub ext_key_usage_oids: Vec<String>,
    /// Sign: take the CN from the CSR.
    pub use_csr_common_name: bool,
    /// Sign: take the SANs from the CSR.
    pub use_csr_sans: bool,
    /// Subject OU.
    pub ou: Vec<String>,
    /// Subject O.
    pub organization: Vec<String>,
    /// Subject C.
    pub country: Vec<String>,
    /// Subject L.
    pub locality: Vec<String>,
    /// Subject ST.
    pub province: Vec<String>,
    /// Subject street address.
    pub street_address: Vec<String>,
    /// Subject postal code.
    pub postal_code: Vec<String>,
    /// Attach a lease to issued certificates.
    pub generate_lease: bool,
    /// Do not store issued certificates.
    pub no_store: bool,
    /// Require a common name.
    pub require_cn: bool,
    /// What a CN may be: `email`, `hostname`, or `disabled`.
    pub cn_validations: Vec<String>,
    /// Certificate policy OIDs.
    pub policy_identifiers: Vec<String>,
    /// Add `CA:FALSE` basic constraints to leaves.
    pub basic_constraints_valid_for_non_ca: bool,
    /// Backdating of notBefore.
    #[serde(with = "secs")]
    pub not_before_duration: Duration,
    /// Fixed notAfter (RFC 3339), or empty.
    pub not_after: String,
    /// Issuer this role issues from.
    pub issuer_ref: String,
    /// Deprecated; stored and returned, grants nothing.
    pub allow_token_displayname: bool,
    /// Where a subject serialNumber comes from (`json-csr` or `json`).
    pub serial_number_source: String,
}

impl Default for Role {
    fn default() -> Self {
        Role {
            ttl: Duration::ZERO,
            max_ttl: Duration::ZERO,
            allow_localhost: true,
            allowed_domains: Vec::new(),
            allowed_domains_template: false,
            allow_bare_domains: false,
            allow_subdomains: false,
            allow_glob_domains: false,
            allow_wildcard_certificates: true,
            allow_any_name: false,
            enforce_hostnames: true,
            allow_ip_sans: true,
            allowed_uri_sans: Vec::new(),
            allowed_uri_sans_template: false,
            allowed_other_sans: Vec::new(),
            allowed_serial_numbers: Vec::new(),
            allowed_user_ids: Vec::new(),
            server_flag: true,
            client_flag: true,
            code_signing_flag: false,
            email_protection_flag: false,
            key_type: "rsa".to_string(),
            // Vault's field default; `validate` turns it into 2048 / 256.
            key_bits: 0,
            signature_bits: 0,
            use_pss: false,
            key_usage: vec![
                "DigitalSignature".to_string(),
                "KeyAgreement".to_string(),
                "KeyEncipherment".to_string(),
            ],
            ext_key_usage: Vec::new(),
            ext_key_usage_oids: Vec::new(),
            use_csr_common_name: true,
            use_csr_sans: true,
            ou: Vec::new(),
            organization: Vec::new(),
            country: Vec::new(),
            locality: Vec::new(),
            province: Vec::new(),
            street_address: Vec::new(),
            postal_code: Vec::new(),
            generate_lease: false,
            no_store: false,
            require_cn: true,
            cn_validations: vec!["email".to_string(), "hostname".to_string()],
            policy_identifiers: Vec::new(),
            basic_constraints_valid_for_non_ca: false,
            not_before_duration: Duration::from_secs(30),
            not_after: String::new(),
            issuer_ref: "default".to_string(),
            allow_token_displayname: false,
            serial_number_source: "json-csr".to_string(),
        }
    }
}

/// What key a role asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// `key_type=any`: sign accepts any supported key; issue needs a request key type.
    Any,
    /// A specific type; for sign, `key_bits` is a minimum.
    Exact(KeyType),
}

impl Role {
    /// Vault's role-write checks; normalises `key_bits` (0 → type default) and
    /// an empty `cn_validations` (→ `email,hostname`).
    pub fn validate(&mut self) -> Result<()> {
        if !self.max_ttl.is_zero() && self.ttl > self.max_ttl {
            return Err(PkiError::bad(
                r#""ttl" value must be less than "max_ttl" value"#,
            ));
        }
        match self.key_spec()? {
            KeySpec::Any => self.key_bits = 0,
            KeySpec::Exact(kt) => self.key_bits = kt.bits(),
        }
        if !matches!(self.signature_bits, 0 | 256 | 384 | 512) {
            return Err(PkiError::bad(format!(
                "unsupported signature_bits: {}",
                self.signature_bits
            )));
        }
        if self.use_pss {
            return Err(PkiError::bad("use_pss is not supported by this server"));
        }
        self.key_usages()?;
        self.ext_key_usages()?;
        for oid in &self.policy_identifiers {
            parse_oid(oid)
                .ok_or_else(|| PkiError::bad(format!("invalid policy identifier {oid:?}")))?;
        }
        if self.cn_validations.is_empty() {
            self.cn_validations = vec!["email".to_string(), "hostname".to_string()];
        }
        let disabled = self.cn_validations.iter().any(|v| v == "disabled");
        if (disabled && self.cn_validations.len() != 1)
            || self
                .cn_validations
                .iter()
                .any(|v| !matches!(v.as_str(), "email" | "hostname" | "disabled"))
        {
            return Err(PkiError::bad("cn_validations value incorrect"));
        }
        if !self.not_after.is_empty() {
            parse_rfc3339(&self.not_after)?;
        }
        if !matches!(self.serial_number_source.as_str(), "" | "json-csr" | "json") {
            return Err(PkiError::bad("invalid value for serial_number_source"));
        }
        if self.issuer_ref.is_empty() {
            self.issuer_ref = "default".to_string();
        }
        Ok(())
    }

    /// The key this role asks for.
    pub fn key_spec(&self) -> Result<KeySpec> {
        if self.key_type == "any" {
            return Ok(KeySpec::Any);
        }
        KeyType::from_vault(&self.key_type, self.key_bits).map(KeySpec::Exact)
    }

    /// The role's key usages (unknown names are refused).
    pub fn key_usages(&self) -> Result<Vec<KeyUsagePurpose>> {
        parse_key_usages(&self.key_usage)
    }

    /// EKUs from the four flags, `ext_key_usage` names and `ext_key_usage_oids`.
    pub fn ext_key_usages(&self) -> Result<Vec<ExtendedKeyUsagePurpose>> {
        let mut out = Vec::new();
        let mut push = |p: ExtendedKeyUsagePurpose| {
            if !out.contains(&p) {
                out.push(p);
            }
        };
        if self.server_flag {
            push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if self.client_flag {
            push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        if self.code_signing_flag {
            push(ExtendedKeyUsagePurpose::CodeSigning);
        }
        if self.email_protection_flag {
            push(ExtendedKeyUsagePurpose::EmailProtection);
        }
        for name in &self.ext_key_usage {
            push(parse_ext_key_usage(name)?);
        }
        for oid in &self.ext_key_usage_oids {
            let arcs = parse_oid(oid).ok_or_else(|| {
                PkiError::bad(format!(
                    "{oid:?} could not be parsed as a valid oid for an extended key usage"
                ))
            })?;
            push(ExtendedKeyUsagePurpose::Other(arcs));
        }
        Ok(out)
    }

    /// Vault's `ValidateCommonName`: the CN rules, then `cn_validations`.
    pub fn check_common_name(&self, cn: &str, meta: &TemplateMetadata) -> Result<()> {
        let refuse = || PkiError::NameNotAllowed {
            kind: NameKind::CommonName,
            name: cn.to_string(),
        };
        if self.cn_validations.len() == 1 && self.cn_validations[0] == "disabled" {
            return Ok(());
        }
        if !self.name_allowed(cn, meta) {
            return Err(refuse());
        }
        if self.cn_validations.is_empty() {
            return Ok(());
        }
        let needed = if cn.contains('@') {
            "email"
        } else {
            "hostname"
        };
        if self.cn_validations.iter().any(|v| v == needed) {
            Ok(())
        } else {
            Err(refuse())
        }
    }

    /// Check DNS SANs; the first refused one is named.
    pub fn check_dns_names(&self, names: &[String], meta: &TemplateMetadata) -> Result<()> {
        self.check_all(names, meta, NameKind::AltName)
    }

    /// Check email SANs; the first refused one is named.
    pub fn check_emails(&self, emails: &[String], meta: &TemplateMetadata) -> Result<()> {
        self.check_all(emails, meta, NameKind::Email)
    }

    fn check_all(&self, names: &[String], meta: &TemplateMetadata, kind: NameKind) -> Result<()> {
        // Ours, beyond Vault: a role whose CN may not be an email address
        // (`cn_validations` without `email`) issues no email-form name at all,
        // so `x@<allowed name>` cannot ride in as a SAN either.
        let no_email = !self.cn_validations.is_empty()
            && !self
                .cn_validations
                .iter()
                .any(|v| v == "email" || v == "disabled");
        let refused = |n: &&String| (no_email && n.contains('@')) || !self.name_allowed(n, meta);
        match names.iter().find(refused) {
            Some(bad) => Err(PkiError::NameNotAllowed {
                kind,
                name: bad.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Check IP SANs against `allow_ip_sans`. From the API, the refusal lists
    /// every requested address as Vault prints them (`[a b]`).
    pub fn check_ip_sans(&self, ips: &[IpAddr], source: SanSource) -> Result<()> {
        if ips.is_empty() || self.allow_ip_sans {
            return Ok(());
        }
        let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
        Err(PkiError::NameNotAllowed {
            kind: NameKind::IpSan(source),
            name: format!("[{}]", list.join(" ")),
        })
    }

    /// Check URI SANs against `allowed_uri_sans` (globs, optional templates).
    pub fn check_uri_sans(
        &self,
        uris: &[String],
        source: SanSource,
        meta: &TemplateMetadata,
    ) -> Result<()> {
        let Some(first) = uris.first() else {
            return Ok(());
        };
        if self.allowed_uri_sans.iter().all(String::is_empty) {
            return Err(PkiError::NameNotAllowed {
                kind: NameKind::UriSanNotAllowed(source),
                name: first.clone(),
            });
        }
        for uri in uris {
            let ok = self.allowed_uri_sans.iter().any(|pattern| {
                resolve(pattern, self.allowed_uri_sans_template, meta)
                    .is_some_and(|p| !p.is_empty() && glob(&p, uri))
            });
            if !ok {
                return Err(PkiError::NameNotAllowed {
                    kind: NameKind::UriSan(source),
                    name: uri.clone(),
                });
            }
        }
        Ok(())
    }

    /// Vault's `ValidateNames` for one name (DNS name, wildcard, or email).
    pub fn name_allowed(&self, name: &str, meta: &TemplateMetadata) -> bool {
        if name.is_empty() || !name.is_ascii() {
            return false;
        }
        let mut reduced = name;
        let mut email_domain = name;
        let mut is_email = false;
        if name.contains('@') {
            let parts: Vec<&str> = name.split('@').collect();
            if parts.len() != 2 {
                return false;
            }
            reduced = parts[1];
            email_domain = parts[1];
            is_email = true;
        }
        let mut wildcard_label = "";
        let is_wildcard = reduced.contains('*');
        if is_wildcard {
            if !self.allow_wildcard_certificates {
                return false;
            }
            if reduced.matches('*').count() > 1 {
                return false;
            }
            match reduced.split_once('.') {
                None => {
                    wildcard_label = reduced;
                    reduced = "";
                }
                Some((label, rest)) => {
                    if rest.contains('*') {
                        return false;
                    }
                    wildcard_label = label;
                    reduced = rest;
                }
            }
        }
        if is_email && is_wildcard {
            return false;
        }
        if self.enforce_hostnames {
            if !reduced.is_empty() && !is_hostname(reduced) {
                return false;
            }
            if is_wildcard && !is_wildcard_label(wildcard_label) {
                return false;
            }
        }
        if self.allow_any_name {
            return true;
        }
        if self.allow_localhost {
            if reduced == "localhost" || reduced == "localdomain" {
                return true;
            }
            if is_email && (email_domain == "localhost" || email_domain == "localdomain") {
                return true;
            }
            if self.allow_subdomains {
                for base in ["localhost", "localdomain"] {
                    if ends_with_label(reduced, base) || (is_wildcard && reduced == base) {
                        return true;
                    }
                }
            }
        }
        self.allowed_domains.iter().any(|entry| {
            let Some(domain) = resolve(entry, self.allowed_domains_template, meta) else {
                return false;
            };
            if domain.is_empty() {
                return false;
            }
            if self.allow_bare_domains
                && (name.eq_ignore_ascii_case(&domain)
                    || (is_email && email_domain.eq_ignore_ascii_case(&domain)))
            {
                return true;
            }
            if self.allow_subdomains
                && (ends_with_label(reduced, &domain)
                    || (is_wildcard && reduced.eq_ignore_ascii_case(&domain)))
            {
                return true;
            }
            self.allow_glob_domains
                && domain.contains('*')
                && glob(&domain.to_ascii_lowercase(), &name.to_ascii_lowercase())
        })
    }
}

/// `name` ends with `.base` (ASCII case-insensitive).
fn ends_with_label(name: &str, base: &str) -> bool {
    name.len() > base.len() + 1
        && name.is_char_boundary(name.len() - base.len() - 1)
        && name[name.len() - base.len()..].eq_ignore_ascii_case(base)
        && name.as_bytes()[name.len() - base.len() - 1] == b'.'
}

/// Resolve an allowed-domain entry: as-is, or with identity templates filled
/// from `meta` when `templating` is on. `None` = unresolvable (skip the entry).
pub fn resolve(entry: &str, templating: bool, meta: &TemplateMetadata) -> Option<String> {
    if !templating || !entry.contains("{{") {
        return Some(entry.to_string());
    }
    let mut out = String::new();
    let mut rest = entry;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}")?;
        let key = after[..end]
            .trim()
            .strip_prefix("identity.entity.metadata.")?;
        let value = meta.get(key)?;
        if value.is_empty() || value.contains('*') || value.contains("{{") {
            return None;
        }
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Some(out)
}

/// `github.com/ryanuber/go-glob`: `*` matches any run of characters (dots too).
pub fn glob(pattern: &str, subject: &str) -> bool {
    if pattern.is_empty() {
        return subject.is_empty();
    }
    if pattern == "*" {
        return true;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return subject == pattern;
    }
    let leading = pattern.starts_with('*');
    let trailing = pattern.ends_with('*');
    let end = parts.len() - 1;
    let mut subj = subject;
    for (i, part) in parts.iter().enumerate().take(end) {
        match subj.find(part) {
            Some(idx) if i > 0 || leading || idx == 0 => subj = &subj[idx + part.len()..],
            _ => return false,
        }
    }
    trailing || subj.ends_with(parts[end])
}

/// A DNS label: `[a-zA-Z0-9]` or `[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`, ≤ 63.
fn is_label(l: &str) -> bool {
    let b = l.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// Vault's `hostnameRegex` (`^(\*\.)?(label\.)*label\.?$`) plus DNS length limits.
pub fn is_hostname(name: &str) -> bool {
    let n = name.strip_prefix("*.").unwrap_or(name);
    let n = n.strip_suffix('.').unwrap_or(n);
    !n.is_empty() && n.len() <= 253 && n.split('.').all(is_label)
}

/// Vault's `leftWildLabelRegex`: `*`, `*label`, `label*` or `label*label`.
fn is_wildcard_label(l: &str) -> bool {
    match l.split_once('*') {
        Some((a, b)) => (a.is_empty() || is_label(a)) && (b.is_empty() || is_label(b)),
        None => false,
    }
}

/// Go's `x509.KeyUsage` names (case-insensitive, optional `KeyUsage` prefix).
pub fn parse_key_usages(names: &[String]) -> Result<Vec<KeyUsagePurpose>> {
    let mut out = Vec::new();
    for name in names {
        let n = name.trim().to_ascii_lowercase();
        if n.is_empty() {
            continue;
        }
        let n = n.strip_prefix("keyusage").unwrap_or(&n);
        let ku = match n {
            "digitalsignature" => KeyUsagePurpose::DigitalSignature,
            "contentcommitment" => KeyUsagePurpose::ContentCommitment,
            "keyencipherment" => KeyUsagePurpose::KeyEncipherment,
            "dataencipherment" => KeyUsagePurpose::DataEncipherment,
            "keyagreement" => KeyUsagePurpose::KeyAgreement,
            "certsign" => KeyUsagePurpose::KeyCertSign,
            "crlsign" => KeyUsagePurpose::CrlSign,
            "encipheronly" => KeyUsagePurpose::EncipherOnly,
            "decipheronly" => KeyUsagePurpose::DecipherOnly,
            _ => return Err(PkiError::bad(format!("unknown key usage {name:?}"))),
        };
        if !out.contains(&ku) {
            out.push(ku);
        }
    }
    Ok(out)
}

/// Go's `x509.ExtKeyUsage` names (case-insensitive, optional `ExtKeyUsage` prefix).
pub fn parse_ext_key_usage(name: &str) -> Result<ExtendedKeyUsagePurpose> {
    let n = name.trim().to_ascii_lowercase();
    let n = n.strip_prefix("extkeyusage").unwrap_or(&n);
    let other = |s: &str| ExtendedKeyUsagePurpose::Other(parse_oid(s).unwrap_or_default());
    Ok(match n {
        "any" => ExtendedKeyUsagePurpose::Any,
        "serverauth" => ExtendedKeyUsagePurpose::ServerAuth,
        "clientauth" => ExtendedKeyUsagePurpose::ClientAuth,
        "codesigning" => ExtendedKeyUsagePurpose::CodeSigning,
        "emailprotection" => ExtendedKeyUsagePurpose::EmailProtection,
        "timestamping" => ExtendedKeyUsagePurpose::TimeStamping,
        "ocspsigning" => ExtendedKeyUsagePurpose::OcspSigning,
        "ipsecendsystem" => other("1.3.6.1.5.5.7.3.5"),
        "ipsectunnel" => other("1.3.6.1.5.5.7.3.6"),
        "ipsecuser" => other("1.3.6.1.5.5.7.3.7"),
        "microsoftservergatedcrypto" => other("1.3.6.1.4.1.311.10.3.3"),
        "netscapeservergatedcrypto" => other("2.16.840.1.113730.4.1"),
        "microsoftcommercialcodesigning" => other("1.3.6.1.4.1.311.2.1.22"),
        "microsoftkernelcodesigning" => other("1.3.6.1.4.1.311.61.1.1"),
        _ => {
            return Err(PkiError::bad(format!(
                "unknown extended key usage {name:?}"
            )));
        }
    })
}

/// A dotted OID with at least two arcs, first arc 0–2.
pub fn parse_oid(s: &str) -> Option<Vec<u64>> {
    let arcs: Vec<u64> = s
        .trim()
        .split('.')
        .map(|a| {
            if a.is_empty() || !a.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                a.parse().ok()
            }
        })
        .collect::<Option<_>>()?;
    (arcs.len() >= 2 && arcs[0] <= 2 && (arcs[0] == 2 || arcs[1] < 40)).then_some(arcs)
}

/// RFC 3339 timestamp, as Vault's `not_after` parameters.
pub fn parse_rfc3339(s: &str) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| PkiError::bad(format!("parsing time {s:?} as RFC3339: {e}")))
}

/// Durations stored as integer seconds (Vault returns them that way too).
mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests;
