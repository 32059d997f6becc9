//! Checks of the inventory's `[notify]` tables when it loads: a mistake is named with its
//! key and the fix, and nothing that looks like a secret is accepted in a plain value.

use super::{NotifySettings, PLACEHOLDERS};

/// What is wrong with one `[notify]` table (`key` names it, like `notify` or
/// `brothers.oppy.notify`), as a message naming the key and the fix.
pub fn check(key: &str, s: &NotifySettings) -> std::result::Result<(), String> {
    if let Some(argv) = &s.command {
        if argv.first().is_some_and(|p| p.is_empty()) {
            return Err(format!("{key}.command: the first element must name a program"));
        }
        for arg in argv {
            check_placeholders(arg).map_err(|m| format!("{key}.command: {m}"))?;
        }
    }
    match &s.webhook {
        Some(url) if !url.is_empty() => check_url(url).map_err(|m| format!("{key}.webhook: {m}"))?,
        _ => {
            if s.webhook_token_env.is_some() || s.webhook_token_file.is_some() || s.format.is_some() {
                return Err(format!(
                    "{key}: webhook_token_env, webhook_token_file and format belong to a webhook; add webhook = \"URL\""
                ));
            }
        }
    }
    if s.webhook_token_env.is_some() && s.webhook_token_file.is_some() {
        return Err(format!("{key}: give webhook_token_env or webhook_token_file, not both"));
    }
    if let Some(name) = &s.webhook_token_env {
        let ok = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(format!(
                "{key}.webhook_token_env = {name:?}: name an environment variable (letters, digits, _), not the token"
            ));
        }
    }
    if s.webhook_token_file.as_ref().is_some_and(|f| f.is_empty()) {
        return Err(format!("{key}.webhook_token_file: name a file holding the token"));
    }
    Ok(())
}

/// `{name}` placeholders must be known ones: a typo would otherwise be sent literally.
fn check_placeholders(arg: &str) -> std::result::Result<(), String> {
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { return Ok(()) };
        let name = &after[..close];
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !PLACEHOLDERS.contains(&name)
        {
            return Err(format!(
                "unknown placeholder {{{name}}}: use {}",
                PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(" ")
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

/// Query parameters that carry a credential by their name.
const SECRET_PARAMS: [&str; 8] = ["token", "key", "secret", "password", "passwd", "auth", "sig", "signature"];

/// A webhook URL must be http(s), carry no credentials (user:password@ or a token-like
/// query parameter: those go in webhook_token_env or webhook_token_file) and no control
/// characters.
fn check_url(url: &str) -> std::result::Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    if url.len() > 2048 || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("the URL must be one line of at most 2048 characters without spaces".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if authority.contains('@') {
        return Err("the URL carries credentials (user:password@): put the token in an environment variable and \
                    name it with webhook_token_env (or webhook_token_file)"
            .into());
    }
    let query = rest.split_once('?').map(|(_, q)| q.split('#').next().unwrap_or("")).unwrap_or("");
    for pair in query.split('&') {
        let name = pair.split('=').next().unwrap_or("").to_ascii_lowercase();
        if SECRET_PARAMS.iter().any(|s| name.contains(s)) {
            return Err(format!(
                "the URL carries a credential in its query ({name}=...): the inventory holds no secrets; put the \
                 token in an environment variable and name it with webhook_token_env (or webhook_token_file)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_url_with_credentials_is_refused_naming_the_token_keys() {
        for url in ["https://u:p@hooks.example/x", "https://h.example/x?token=abc", "https://h.example/?API_KEY=1&a=b"]
        {
            let err = check_url(url).unwrap_err();
            assert!(err.contains("webhook_token_env"), "{url}: {err}");
        }
        assert!(check_url("ftp://h/x").is_err());
        assert!(check_url("https://h.example/x y").is_err());
        check_url("https://ntfy.sh/my-topic?priority=high").unwrap();
        check_url("http://127.0.0.1:8080/hook").unwrap();
    }

    #[test]
    fn unknown_placeholders_are_refused_and_json_braces_are_not_placeholders() {
        assert!(check_placeholders("{subjet}").unwrap_err().contains("{subject}"));
        check_placeholders("{task} on {brother}: {summary}").unwrap();
        check_placeholders(r#"{"a": 1}"#).unwrap();
    }
}
