//! `config/urls` and `config/crl`.

use crate::api::error::ApiError;
use crate::api::params;
use crate::api::request::{Operation, Request};
use crate::api::response::Reply;
use crate::engine::{CrlConfig, Engine};
use crate::pki::UrlsConfig;
use serde_json::{Map, Value, json};

/// The `config/urls` answer (read and write).
fn urls_data(u: &UrlsConfig) -> Map<String, Value> {
    let mut d = Map::new();
    d.insert("issuing_certificates".into(), json!(u.issuing_certificates));
    d.insert(
        "crl_distribution_points".into(),
        json!(u.crl_distribution_points),
    );
    d.insert("delta_crl_distribution_points".into(), json!([]));
    d.insert("ocsp_servers".into(), json!(u.ocsp_servers));
    d.insert("enable_templating".into(), json!(false));
    d
}

/// The `config/crl` answer (read and write). Only `expiry` and `disable` are
/// settable; the rest are the fixed behaviour of this server.
fn crl_data(c: &CrlConfig) -> Map<String, Value> {
    let mut d = Map::new();
    d.insert(
        "expiry".into(),
        json!(crate::pki::duration::format_go(
            std::time::Duration::from_secs(c.expiry)
        )),
    );
    d.insert("disable".into(), json!(c.disable));
    d.insert("ocsp_disable".into(), json!(false));
    d.insert("ocsp_expiry".into(), json!("12h"));
    d.insert("auto_rebuild".into(), json!(false));
    d.insert("auto_rebuild_grace_period".into(), json!("12h"));
    d.insert("enable_delta".into(), json!(false));
    d.insert("delta_rebuild_interval".into(), json!("15m"));
    d.insert("cross_cluster_revocation".into(), json!(false));
    d.insert("unified_crl".into(), json!(false));
    d.insert("unified_crl_on_existing_paths".into(), json!(false));
    // OpenBao's switch; false is what revoke does here (an expired
    // certificate is not added to the CRL, with a warning).
    d.insert("allow_expired_cert_revocation".into(), json!(false));
    d
}

/// `GET|POST config/urls`.
pub async fn urls(engine: &Engine<'_>, req: &Request) -> Result<Reply, ApiError> {
    match req.op {
        Operation::Read => Ok(Reply::data(urls_data(&*engine.urls().await?))),
        Operation::Update => {
            let cur = engine.urls().await?;
            let pick = |k: &str, old: &Vec<String>| -> Result<Vec<String>, ApiError> {
                Ok(params::list(&req.data, k)?.unwrap_or_else(|| old.clone()))
            };
            let u = UrlsConfig {
                issuing_certificates: pick("issuing_certificates", &cur.issuing_certificates)?,
                crl_distribution_points: pick(
                    "crl_distribution_points",
                    &cur.crl_distribution_points,
                )?,
                ocsp_servers: pick("ocsp_servers", &cur.ocsp_servers)?,
            };
            for url in u
                .issuing_certificates
                .iter()
                .chain(&u.crl_distribution_points)
                .chain(&u.ocsp_servers)
            {
                if !(url.starts_with("http://")
                    || url.starts_with("https://")
                    || url.starts_with("ldap://"))
                {
                    return Err(ApiError::bad_request(format!("invalid URL: {url}")));
                }
            }
            let d = urls_data(&u);
            engine.set_urls(u).await?;
            // Vault (1.12+) and OpenBao answer a write with the stored config.
            Ok(Reply::data(d))
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// `GET|POST config/crl`.
pub async fn crl(engine: &Engine<'_>, req: &Request) -> Result<Reply, ApiError> {
    match req.op {
        Operation::Read => Ok(Reply::data(crl_data(&engine.crl_config().await?))),
        Operation::Update => {
            let mut c = engine.crl_config().await?;
            if let Some(e) = params::duration(&req.data, "expiry")? {
                if e.is_zero() {
                    return Err(ApiError::bad_request("expiry must be positive"));
                }
                c.expiry = e.as_secs();
            }
            if let Some(d) = params::boolean(&req.data, "disable")? {
                c.disable = d;
            }
            if params::boolean(&req.data, "auto_rebuild")? == Some(true)
                || params::boolean(&req.data, "enable_delta")? == Some(true)
            {
                return Err(ApiError::bad_request(
                    "auto_rebuild and delta CRLs are not supported by this server",
                ));
            }
            if params::boolean(&req.data, "allow_expired_cert_revocation")? == Some(true) {
                return Err(ApiError::bad_request(
                    "revoking expired certificates is not supported by this server",
                ));
            }
            engine.set_crl_config(&CrlConfig { ..c }).await?;
            // Vault (1.12+) and OpenBao answer a write with the stored config.
            Ok(Reply::data(crl_data(&c)))
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}
