//! Loose parameter coercion, as Vault's framework does: bools, ints and durations
//! may come as JSON strings (`"true"`, `"4096"`, `"2160h0m0s"`, `"30d"`).

use super::error::ApiError;
use serde_json::{Map, Value};

/// An integer parameter (number or numeric string).
pub fn int(data: &Map<String, Value>, key: &str) -> Result<Option<i64>, ApiError> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| bad(key, "an integer")),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| bad(key, "an integer")),
        Some(_) => Err(bad(key, "an integer")),
    }
}

/// A non-negative count that fits in usize.
pub fn count(data: &Map<String, Value>, key: &str) -> Result<Option<usize>, ApiError> {
    match int(data, key)? {
        None => Ok(None),
        Some(n) if (0..=i64::from(u16::MAX)).contains(&n) => Ok(Some(n as usize)),
        Some(_) => Err(bad(key, "a non-negative integer")),
    }
}

/// A duration parameter: integer seconds, a numeric string, a Go duration
/// (`"2160h0m0s"`, `"1h30m"`) or days (`"30d"`).
pub fn duration(
    data: &Map<String, Value>,
    key: &str,
) -> Result<Option<std::time::Duration>, ApiError> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(_)) => match int(data, key)? {
            Some(n) => crate::pki::duration::from_seconds(n)
                .map(Some)
                .map_err(|_| bad(key, "a duration")),
            None => Ok(None),
        },
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => crate::pki::duration::parse(s)
            .map(Some)
            .map_err(|_| bad(key, "a duration")),
        Some(_) => Err(bad(key, "a duration")),
    }
}

/// A boolean parameter (`true`, `"true"`, `"1"`, `1`, ...).
pub fn boolean(data: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(0) => Ok(Some(false)),
            Some(1) => Ok(Some(true)),
            _ => Err(bad(key, "a boolean")),
        },
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "t" => Ok(Some(true)),
            "false" | "0" | "f" | "" => Ok(Some(false)),
            _ => Err(bad(key, "a boolean")),
        },
        Some(_) => Err(bad(key, "a boolean")),
    }
}

/// A string parameter.
pub fn string<'a>(data: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ApiError> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(key, "a string")),
    }
}

/// A map parameter of strings (`options`): non-string values keep their JSON text.
pub fn string_map(
    data: &Map<String, Value>,
    key: &str,
) -> std::collections::BTreeMap<String, String> {
    match data.get(key) {
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect(),
        _ => Default::default(),
    }
}

/// A list parameter: a JSON array of strings or a comma-separated string.
pub fn list(data: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, ApiError> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect(),
        )),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| bad(key, "a list of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad(key, "a list of strings")),
    }
}

fn bad(key: &str, what: &str) -> ApiError {
    ApiError::bad_request(format!(
        "error converting input for field {key:?}: expected {what}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn coercions() {
        let d = m(
            json!({"a": "5", "b": 6, "c": "true", "d": 1, "e": "x", "f": "a, b,,c", "g": ["x"], "h": 1.5}),
        );
        assert_eq!(int(&d, "a").unwrap(), Some(5));
        assert_eq!(int(&d, "b").unwrap(), Some(6));
        assert_eq!(int(&d, "zz").unwrap(), None);
        assert!(int(&d, "e").is_err());
        assert!(int(&d, "h").is_err());
        assert_eq!(boolean(&d, "c").unwrap(), Some(true));
        assert_eq!(boolean(&d, "d").unwrap(), Some(true));
        assert!(boolean(&d, "e").is_err());
        assert_eq!(list(&d, "f").unwrap().unwrap(), vec!["a", "b", "c"]);
        assert_eq!(list(&d, "g").unwrap().unwrap(), vec!["x"]);
        assert!(string(&d, "b").is_err());
        assert!(count(&m(json!({"n": -1})), "n").is_err());
    }
}
