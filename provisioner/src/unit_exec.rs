//! Run a rendered systemd service here: the local target starts etcd from the
//! very `etcd-member.service` the etcd nodes get, with its paths remapped to
//! the local folder. Only what those units use is understood: `[Service]`'s
//! `ExecStart=` (with `\` continuations), `Environment=` and
//! `EnvironmentFile=`, and `${VAR}` / `$VAR` expansion as systemd does it
//! (`${VAR}` one word, `$VAR` split on whitespace).

use anyhow::{Context, bail};
use std::collections::BTreeMap;

/// The parts of a service unit that decide the process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Service {
    /// `ExecStart=` split into words (not yet expanded).
    pub exec_start: Vec<String>,
    /// `Environment=` assignments, in order.
    pub environment: Vec<(String, String)>,
    /// `EnvironmentFile=` paths, in order.
    pub environment_files: Vec<String>,
}

/// Parse a unit file's `[Service]` section.
pub fn parse(text: &str) -> anyhow::Result<Service> {
    let mut joined = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if let Some(head) = line.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
        } else {
            cur.push_str(line);
            joined.push(std::mem::take(&mut cur));
        }
    }
    let mut svc = Service::default();
    let mut section = String::new();
    for line in joined {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        if section != "[Service]" {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "ExecStart" => svc.exec_start = words(v)?,
            "Environment" => {
                for w in words(v)? {
                    let (k, v) = w
                        .split_once('=')
                        .with_context(|| format!("Environment word {w:?} has no ="))?;
                    svc.environment.push((k.into(), v.into()));
                }
            }
            "EnvironmentFile" => svc.environment_files.push(v.trim().to_string()),
            _ => {}
        }
    }
    if svc.exec_start.is_empty() {
        bail!("the unit has no ExecStart=");
    }
    Ok(svc)
}

/// Split on whitespace, honouring double and single quotes.
fn words(s: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if quote.is_some() {
        bail!("unbalanced quote in {s:?}");
    }
    if any {
        out.push(cur);
    }
    Ok(out)
}

/// Read an environment file (`KEY=VALUE` lines, `#` comments).
pub fn read_env_file(path: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect())
}

/// Expand `${VAR}` (one word) and `$VAR` (split on whitespace) in the words.
pub fn expand(words: &[String], env: &BTreeMap<String, String>) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for w in words {
        if let Some(name) = w.strip_prefix('$').filter(|n| !n.starts_with('{')) {
            let v = env
                .get(name)
                .with_context(|| format!("${name} is not set"))?;
            out.extend(v.split_whitespace().map(str::to_string));
            continue;
        }
        let mut s = String::new();
        let mut rest = w.as_str();
        while let Some(i) = rest.find("${") {
            s.push_str(&rest[..i]);
            let end = rest[i..]
                .find('}')
                .with_context(|| format!("unclosed ${{ in {w:?}"))?;
            let name = &rest[i + 2..i + end];
            s.push_str(
                env.get(name)
                    .with_context(|| format!("${{{name}}} is not set"))?,
            );
            rest = &rest[i + end + 1..];
        }
        s.push_str(rest);
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_continuations_environment_and_expands_like_systemd() {
        let svc = parse(
            "[Unit]\nDescription=x\n\n[Service]\nEnvironmentFile=/run/a.env\nEnvironment=A=1 \"B=two words\"\nExecStart=/bin/x \\\n  --a=${A} \\\n  $B\n",
        )
        .expect("parse");
        assert_eq!(svc.environment_files, ["/run/a.env"]);
        assert_eq!(
            svc.environment,
            [("A".into(), "1".into()), ("B".into(), "two words".into())]
        );
        let env: BTreeMap<String, String> = svc.environment.iter().cloned().collect();
        let argv = expand(&svc.exec_start, &env).expect("expand");
        assert_eq!(argv, ["/bin/x", "--a=1", "two", "words"]);
        assert!(expand(&["${NOPE}".to_string()], &env).is_err());
    }
}
