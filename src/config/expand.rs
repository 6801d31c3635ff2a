//! `${VAR}` and `${VAR:-default}` expansion in config string values.
//!
//! Hand-written rather than taken from `shellexpand`: that crate also expands bare `$VAR` and
//! `~`, which would silently rewrite regular expressions and tokens that contain `$`. Here only
//! the braced forms expand, and `$${` writes a literal `${`.

/// Expands `${VAR}` and `${VAR:-default}` in `input`, looking variables up with `lookup`.
///
/// `${VAR}` with `VAR` unset is an error; `${VAR:-default}` uses `default` when `VAR` is unset
/// or empty (as in POSIX shells). The default is taken literally.
pub fn expand_env(input: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    if !input.contains('$') {
        return Ok(input.to_string());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(literal) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = literal;
        } else if let Some(body) = after.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in {input:?}; close it with `}}`"))?;
            let (name, default) = match body[..end].split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (&body[..end], None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid variable name {name:?} in `${{...}}`"));
            }
            match (lookup(name).filter(|v| !v.is_empty() || default.is_none()), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (write `${{{name}:-default}}` to give a default)"
                    ))
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand_env;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("backend".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands() {
        assert_eq!(
            expand_env("http://${HOST}:80", env).unwrap(),
            "http://backend:80"
        );
        assert_eq!(
            expand_env("${NOPE:-127.0.0.1:8080}", env).unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(expand_env("${EMPTY:-d}", env).unwrap(), "d");
        assert_eq!(expand_env("${EMPTY}", env).unwrap(), "");
        assert_eq!(
            expand_env("^a$ and $${HOST}", env).unwrap(),
            "^a$ and ${HOST}"
        );
        assert_eq!(
            expand_env("${HOST:-x}${HOST}", env).unwrap(),
            "backendbackend"
        );
    }

    #[test]
    fn errors() {
        assert!(expand_env("${NOPE}", env)
            .unwrap_err()
            .contains("NOPE is not set"));
        assert!(expand_env("${HOST", env)
            .unwrap_err()
            .contains("unterminated"));
        assert!(expand_env("${a b}", env)
            .unwrap_err()
            .contains("invalid variable name"));
    }
}
