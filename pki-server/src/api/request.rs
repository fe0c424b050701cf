//! A Vault "logical request" built from an HTTP request.
//!
//! Methods map to operations (PUT = POST = update, LIST or `GET ?list=true` =
//! list); the body is a JSON object, and an empty body or `null` counts as `{}`.

use super::error::ApiError;
use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// The operation a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// GET.
    Read,
    /// LIST, or GET with `?list=true`.
    List,
    /// PUT or POST.
    Update,
    /// DELETE.
    Delete,
    /// HEAD (sys/health only).
    Head,
}

/// A parsed request.
pub struct Request {
    /// The operation.
    pub op: Operation,
    /// Path below `/v1/`, without a trailing slash.
    pub path: String,
    /// Body parameters (JSON object).
    pub data: Map<String, Value>,
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// Client token from `X-Vault-Token` or `Authorization: Bearer`.
    pub token: Option<String>,
    /// The calling token's metadata (filled after authentication), for role templates.
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Bodies may carry unseal keys; tokens are secrets.
        f.debug_struct("Request")
            .field("op", &self.op)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    fn hexval(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                match (
                    b.get(i + 1).copied().and_then(hexval),
                    b.get(i + 2).copied().and_then(hexval),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decode a request path once, as Go's `net/http` (and so Vault) does before
/// routing: `%XX` becomes its byte (`%2F` a `/`), `+` stays `+`. Malformed
/// escapes, invalid UTF-8 and control characters are refused (400), so the
/// ACL check and the router always see the same, plain path.
fn decode_path(raw: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("invalid request path: {why}"));
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .filter(|_| b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit())
                .ok_or_else(|| bad("malformed percent-encoding"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| bad("not UTF-8"))?;
    if s.chars().any(char::is_control) {
        return Err(bad("control character"));
    }
    Ok(s)
}

fn token_from(headers: &HeaderMap) -> Option<String> {
    if let Some(t) = headers.get("x-vault-token").and_then(|v| v.to_str().ok()) {
        let t = t.trim();
        if !t.is_empty() {
            return Some(t.to_string());
        }
    }
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

impl Request {
    /// Build from the HTTP parts and the (size-limited) body.
    pub fn parse(
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Self, ApiError> {
        let path = decode_path(path)?;
        let rest = path
            .strip_prefix("/v1/")
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unsupported path"))?;
        if rest.contains("//")
            || rest.split('/').any(|s| s == ".." || s == ".")
            || rest.ends_with('.')
        {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "unsupported path"));
        }
        let query = parse_query(query);
        let list_q = query
            .get("list")
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        let op = match method.as_str() {
            "GET" if list_q => Operation::List,
            "GET" => Operation::Read,
            "LIST" => Operation::List,
            "PUT" | "POST" => Operation::Update,
            "DELETE" => Operation::Delete,
            "HEAD" => Operation::Head,
            _ => return Err(ApiError::unsupported_operation()),
        };
        let data = if op == Operation::Update {
            parse_body(body)?
        } else {
            Map::new()
        };
        Ok(Self {
            op,
            path: rest.trim_end_matches('/').to_string(),
            data,
            query,
            token: token_from(headers),
            metadata: Default::default(),
        })
    }
}

fn parse_body(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(ApiError::bad_request(
            "failed to parse JSON input: request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "failed to parse JSON input: {}",
            // serde_json's message names a position and a category, not the input.
            e
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(m: &str, p: &str, q: Option<&str>, body: &str) -> Result<Request, ApiError> {
        Request::parse(
            &Method::from_bytes(m.as_bytes()).unwrap(),
            p,
            q,
            &HeaderMap::new(),
            body.as_bytes(),
        )
    }

    #[test]
    fn methods_map_to_operations() {
        assert_eq!(parse("GET", "/v1/a", None, "").unwrap().op, Operation::Read);
        assert_eq!(
            parse("GET", "/v1/a/", Some("list=true"), "").unwrap().op,
            Operation::List
        );
        assert_eq!(
            parse("GET", "/v1/a", Some("list=True"), "").unwrap().op,
            Operation::List
        );
        assert_eq!(parse("LIST", "/v1/a/", None, "").unwrap().path, "a");
        assert_eq!(
            parse("PUT", "/v1/a", None, "").unwrap().op,
            Operation::Update
        );
        assert_eq!(
            parse("POST", "/v1/a", None, "null").unwrap().op,
            Operation::Update
        );
        assert!(parse("PATCH", "/v1/a", None, "").is_err());
        assert!(parse("GET", "/v2/a", None, "").is_err());
        assert!(parse("GET", "/v1/a/../b", None, "").is_err());
    }

    #[test]
    fn bodies_parse_loosely() {
        let r = parse("PUT", "/v1/a", None, r#"{"a":1,"b":null}"#).unwrap();
        assert_eq!(r.data.len(), 1);
        assert!(parse("PUT", "/v1/a", None, "{").is_err());
        assert!(parse("PUT", "/v1/a", None, "[1]").is_err());
        assert!(parse("PUT", "/v1/a", None, "  ").unwrap().data.is_empty());
    }

    #[test]
    fn paths_are_decoded_once_before_routing() {
        let path = |p: &str| parse("GET", p, None, "").map(|r| r.path);
        // hvac's read_certificate: colons percent-encoded.
        assert_eq!(
            path("/v1/pki/cert/0a%3A1b%3Ac2").unwrap(),
            "pki/cert/0a:1b:c2"
        );
        assert_eq!(path("/v1/pki%2Fcert/x").unwrap(), "pki/cert/x");
        assert_eq!(path("/v1/a+b").unwrap(), "a+b");
        assert_eq!(path("/v1/%2525").unwrap(), "%25", "decoded once, not twice");
        // What decoding reveals is checked like the plain form.
        for p in [
            "/v1/a/%2e%2e/b",
            "/v1/a/%2E%2E/sys",
            "/v1/a%2F%2Fb",
            "/v1/a/%2e",
        ] {
            assert_eq!(path(p).unwrap_err().status, StatusCode::NOT_FOUND, "{p}");
        }
        for p in [
            "/v1/a%zz",
            "/v1/a%4",
            "/v1/a%",
            "/v1/a%ff",
            "/v1/a%00b",
            "/v1/a%0a",
        ] {
            assert_eq!(path(p).unwrap_err().status, StatusCode::BAD_REQUEST, "{p}");
        }
    }

    #[test]
    fn query_is_decoded() {
        let q = parse_query(Some("a=1&sealedcode=299&x=%41+b"));
        assert_eq!(q["sealedcode"], "299");
        assert_eq!(q["x"], "A b");
    }
}
