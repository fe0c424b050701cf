//! `auth/<aws mount>/`: `config/client`, `role/<name>`, `login` (Vault's AWS
//! method, IAM flavour; hvac's `iam_login` and `vault login -method=aws` send
//! these fields).

use crate::api::auth_method::{self, apply_token_params, show_token_params};
use crate::api::error::ApiError;
use crate::api::params;
use crate::api::request::{Operation, Request};
use crate::api::response::Reply;
use crate::auth::aws::{self, AwsConfig, AwsRole, IamRequest};
use crate::auth::methods::AuthMount;
use crate::auth::{Login, TokenParams};
use crate::seal::Barrier;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

/// Dispatch an authenticated request.
pub async fn handle(
    barrier: &Barrier,
    m: &AuthMount,
    rest: &str,
    req: &Request,
) -> Result<Reply, ApiError> {
    match rest {
        "config/client" => config(barrier, m, req).await,
        "role" => auth_method::roles(barrier, m, "", req, apply_role, show_role).await,
        r if r.starts_with("role/") => {
            let name = r.strip_prefix("role/").unwrap_or("");
            auth_method::roles(barrier, m, name, req, apply_role, show_role).await
        }
        "login" => Err(ApiError::unsupported_operation()),
        _ => Err(ApiError::unsupported_path(&req.path)),
    }
}

async fn config(barrier: &Barrier, m: &AuthMount, req: &Request) -> Result<Reply, ApiError> {
    match req.op {
        Operation::Read => {
            let c: AwsConfig = auth_method::get(barrier, m, "config/client")
                .await?
                .ok_or_else(ApiError::not_found)?;
            let mut d = Map::new();
            d.insert("sts_endpoint".into(), json!(c.sts_endpoint));
            d.insert("sts_region".into(), json!(c.sts_region));
            d.insert(
                "iam_server_id_header_value".into(),
                json!(c.iam_server_id_header_value),
            );
            d.insert("endpoint".into(), json!(c.ec2_endpoint));
            d.insert("ec2_endpoint".into(), json!(c.ec2_endpoint));
            d.insert("access_key".into(), json!(c.access_key));
            Ok(Reply::data(d))
        }
        Operation::Update => {
            let d = &req.data;
            let mut c: AwsConfig = auth_method::get(barrier, m, "config/client")
                .await?
                .unwrap_or_default();
            let set = |field: &mut String, key: &str| -> Result<(), ApiError> {
                if let Some(v) = params::string(d, key)? {
                    *field = v.to_string();
                }
                Ok(())
            };
            set(&mut c.sts_endpoint, "sts_endpoint")?;
            set(&mut c.sts_region, "sts_region")?;
            set(
                &mut c.iam_server_id_header_value,
                "iam_server_id_header_value",
            )?;
            // Vault calls the EC2 endpoint override `endpoint`.
            set(&mut c.ec2_endpoint, "endpoint")?;
            set(&mut c.ec2_endpoint, "ec2_endpoint")?;
            set(&mut c.access_key, "access_key")?;
            set(&mut c.secret_key, "secret_key")?;
            c.validate()?;
            auth_method::put(barrier, m, "config/client", &c).await?;
            Ok(Reply::NoContent)
        }
        Operation::Delete => {
            use crate::storage::Storage as _;
            barrier
                .delete(&format!("{}config/client", m.storage_prefix()))
                .await?;
            Ok(Reply::NoContent)
        }
        _ => Err(ApiError::unsupported_operation()),
    }
}

fn apply_role(r: &mut AwsRole, d: &Map<String, Value>) -> Result<(), ApiError> {
    if let Some(t) = params::string(d, "auth_type")? {
        r.auth_type = t.to_string();
    }
    if let Some(a) = params::list(d, "bound_iam_principal_arn")? {
        r.bound_iam_principal_arn = a;
    }
    if let Some(a) = params::list(d, "bound_account_id")? {
        r.bound_account_id = a;
    }
    if let Some(t) = params::string(d, "inferred_entity_type")? {
        r.inferred_entity_type = t.to_string();
    }
    if let Some(t) = params::string(d, "inferred_aws_region")? {
        r.inferred_aws_region = t.to_string();
    }
    apply_token_params(&mut r.token, d)?;
    Ok(r.validate()?)
}

fn show_role(r: &AwsRole) -> Map<String, Value> {
    let mut d = Map::new();
    d.insert("auth_type".into(), json!(r.auth_type));
    d.insert(
        "bound_iam_principal_arn".into(),
        json!(r.bound_iam_principal_arn),
    );
    d.insert("bound_account_id".into(), json!(r.bound_account_id));
    d.insert("inferred_entity_type".into(), json!(r.inferred_entity_type));
    d.insert("inferred_aws_region".into(), json!(r.inferred_aws_region));
    d.insert("resolve_aws_unique_ids".into(), json!(false));
    show_token_params(&r.token, &mut d);
    d
}

fn b64_field(d: &Map<String, Value>, key: &str) -> Result<String, ApiError> {
    let v =
        params::string(d, key)?.ok_or_else(|| ApiError::bad_request(format!("missing {key}")))?;
    let bytes = B64
        .decode(v.trim())
        .map_err(|_| ApiError::bad_request(format!("failed to base64 decode {key}")))?;
    String::from_utf8(bytes).map_err(|_| ApiError::bad_request(format!("{key} is not UTF-8")))
}

/// `iam_request_headers`: base64 of a JSON object (hvac: string values; Go's
/// `http.Header`: lists of strings), or that JSON object itself.
fn headers(d: &Map<String, Value>) -> Result<Vec<(String, String)>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "iam_request_headers must be a JSON map of strings or lists of strings",
        )
    };
    let obj = match d.get("iam_request_headers") {
        Some(Value::Object(o)) => o.clone(),
        Some(Value::String(_)) => match serde_json::from_str(&b64_field(d, "iam_request_headers")?)
        {
            Ok(Value::Object(o)) => o,
            _ => return Err(bad()),
        },
        _ => return Err(ApiError::bad_request("missing iam_request_headers")),
    };
    let mut out = Vec::new();
    for (k, v) in obj {
        match v {
            Value::String(s) => out.push((k, s)),
            Value::Array(a) => {
                for x in a {
                    out.push((k.clone(), x.as_str().ok_or_else(bad)?.to_string()));
                }
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// `login`: check, forward to STS, look the instance up, match the role.
pub async fn login(
    barrier: &Barrier,
    m: &AuthMount,
    req: &Request,
) -> Result<(Login, TokenParams), ApiError> {
    let d = &req.data;
    let iam = IamRequest {
        method: params::string(d, "iam_http_request_method")?
            .ok_or_else(|| ApiError::bad_request("missing iam_http_request_method"))?
            .to_string(),
        url: b64_field(d, "iam_request_url")?,
        body: b64_field(d, "iam_request_body")?,
        headers: headers(d)?,
    };
    let config: AwsConfig = auth_method::get(barrier, m, "config/client")
        .await?
        .unwrap_or_default();
    // Find the role before talking to AWS when it is named.
    let named = params::string(d, "role")?
        .filter(|r| !r.is_empty())
        .map(String::from);
    let url = aws::check_request(&config, &iam)?;
    let caller = aws::call_sts(url, &iam).await?;
    let principal = aws::parse_arn(&caller.arn)?;
    let role_name = match named {
        Some(r) => r,
        // Vault's default: the role named like the caller's IAM role or user.
        None => principal
            .canonical
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string(),
    };
    let role: AwsRole = auth_method::get(
        barrier,
        m,
        &format!("role/{}", auth_method::role_name(&role_name)?),
    )
    .await?
    .ok_or_else(|| ApiError::bad_request(format!("entry for role {role_name:?} not found")))?;
    // Account and ARN first: only a caller the role could accept makes the
    // server call EC2.
    aws::authorize_principal(&role, &caller, &principal)?;
    let instance = match principal.session.as_deref() {
        Some(s) if principal.kind == "assumed-role" && aws::is_instance_id(s) => {
            let region = [&role.inferred_aws_region, &config.sts_region]
                .into_iter()
                .find(|r| !r.is_empty())
                .map_or("us-east-1", |r| r.as_str());
            let i = aws::describe_instance(&config, region, s)
                .await?
                .ok_or_else(|| ApiError::from(aws::no_such_instance(s, &principal.account)))?;
            Some((s.to_string(), region.to_string(), i))
        }
        _ => None,
    };
    let login = aws::authorize(
        &role,
        &caller,
        &principal,
        instance
            .as_ref()
            .map(|(id, r, i)| (id.as_str(), r.as_str(), i)),
    )?;
    Ok((login, role.token))
}
