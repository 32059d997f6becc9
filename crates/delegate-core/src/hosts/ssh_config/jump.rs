//! ProxyJump lists as written in ssh_config or the inventory.

/// One `[user@]host[:port]` of a ProxyJump list, as written (the host is a name to look up
/// in ssh_config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHop {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// OpenSSH's parse_jump: a comma-separated list of `[user@]host[:port]` or
/// `ssh://[user@]host[:port]` (IPv6 addresses in brackets). `none` is handled by callers.
pub fn parse_jump(s: &str) -> std::result::Result<Vec<JumpHop>, String> {
    s.split(',').map(parse_hop).collect()
}

fn parse_hop(s: &str) -> std::result::Result<JumpHop, String> {
    let bad = |why: &str| format!("\"{s}\": {why}");
    let (user, rest, uri) = match s.strip_prefix("ssh://") {
        // parse_uri: the user ends at the first '@', and ";params" after it are ignored.
        Some(uri) => match uri.split_once('@') {
            Some((u, rest)) => (Some(u.split(';').next().unwrap_or_default()), rest, true),
            None => (None, uri, true),
        },
        // parse_user_host_port: the user ends at the last '@'.
        None => match s.rsplit_once('@') {
            Some((u, rest)) => (Some(u), rest, false),
            None => (None, s, false),
        },
    };
    if user == Some("") {
        return Err(bad("empty user name"));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        match after {
            "" => (host, None),
            a if a.starts_with(':') || a.starts_with('/') => (host, Some(&a[1..])),
            _ => return Err(bad("junk after ]")),
        }
    } else {
        match rest.find([':', '/']) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        None | Some("") => None,
        // An ssh:// URI may not carry a path.
        Some(p) if uri && p.contains('/') => return Err(bad("a path is not allowed")),
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad("bad port"))?),
    };
    Ok(JumpHop { user: user.map(str::to_string), host: host.to_string(), port })
}
