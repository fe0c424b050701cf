//! `sys/policy`, `sys/policies/acl` and `sys/capabilities-self`.

use crate::api::error::ApiError;
use crate::api::params;
use crate::api::request::{Operation, Request};
use crate::api::response::Reply;
use crate::auth::policy::{Acl, Policy};
use crate::seal::Barrier;
use crate::state::AppState;
use serde_json::{Map, Value, json};

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `sys/policy[/:name]` (legacy, `rules`) and `sys/policies/acl[/:name]` (`policy`).
pub async fn handle(state: &AppState, barrier: &Barrier, req: &Request) -> Result<Reply, ApiError> {
    let (legacy, rest) = if let Some(r) = req.path.strip_prefix("sys/policies/acl") {
        (false, r)
    } else {
        (true, req.path.strip_prefix("sys/policy").unwrap_or(""))
    };
    let name = rest.trim_start_matches('/');
    if name.is_empty() {
        if !(req.op == Operation::List || (legacy && req.op == Operation::Read)) {
            return Err(ApiError::unsupported_operation());
        }
        let names = crate::auth::list_policies(barrier).await?;
        let mut d = Map::new();
        d.insert("keys".into(), json!(names));
        if legacy {
            d.insert("policies".into(), json!(names));
        }
        return Ok(Reply::sys_data(d));
    }
    let lower = name.to_ascii_lowercase();
    if !valid_name(&lower) {
        return Err(ApiError::bad_request(format!(
            "invalid policy name {name:?}"
        )));
    }
    match req.op {
        Operation::Read => {
            let text = if lower == "root" {
                String::new()
            } else {
                crate::auth::policy_text(barrier, &lower)
                    .await?
                    .ok_or_else(ApiError::not_found)?
            };
            let mut d = Map::new();
            d.insert("name".into(), json!(lower));
            d.insert(if legacy { "rules" } else { "policy" }.into(), json!(text));
            Ok(Reply::sys_data(d))
        }
        Operation::Update => {
            let mut warnings = Vec::new();
            let text = match params::string(&req.data, "policy")? {
                Some(t) if !t.trim().is_empty() => t.to_string(),
                _ => match params::string(&req.data, "rules")? {
                    Some(t) if !t.trim().is_empty() => {
                        warnings
                            .push("'rules' is deprecated, please use 'policy' instead".to_string());
                        t.to_string()
                    }
                    _ => {
                        return Err(ApiError::bad_request(
                            "'policy' parameter not supplied or empty",
                        ));
                    }
                },
            };
            if lower == "root" {
                return Err(ApiError::bad_request("cannot update \"root\" policy"));
            }
            Policy::parse(&text).map_err(|e| ApiError::bad_request(e.to_string()))?;
            if lower != name {
                warnings.push(format!("policy name was converted to {lower}"));
            }
            crate::auth::put_policy(barrier, &lower, &text).await?;
            state.invalidate_policies();
            Ok(if warnings.is_empty() {
                Reply::NoContent
            } else {
                Reply::data_with_warnings(Map::new(), warnings)
            })
        }
        Operation::Delete => {
            match lower.as_str() {
                "root" => return Err(ApiError::bad_request("cannot delete \"root\" policy")),
                "default" => return Err(ApiError::bad_request("cannot delete default policy")),
                _ => {}
            }
            crate::auth::delete_policy(barrier, &lower).await?;
            state.invalidate_policies();
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

/// `POST sys/capabilities-self` with `paths` (or legacy `path`).
pub async fn capabilities_self(acl: &Acl, req: &Request) -> Result<Reply, ApiError> {
    if req.op != Operation::Update {
        return Err(ApiError::unsupported_operation());
    }
    let paths = params::list(&req.data, "paths")?
        .or(params::list(&req.data, "path")?)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing paths"))?;
    let mut d = Map::new();
    for p in &paths {
        let caps: Vec<&str> = if acl.is_root() {
            vec!["root"]
        } else {
            acl.capabilities(p.trim_start_matches('/')).names()
        };
        d.insert(p.clone(), json!(caps));
    }
    if paths.len() == 1
        && let Some(v) = d.get(&paths[0]).cloned()
    {
        d.insert("capabilities".into(), v);
    }
    Ok(Reply::sys_data(
        d.into_iter().collect::<Map<String, Value>>(),
    ))
}
