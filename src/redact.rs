//! Removing passwords from anything that may reach a log, an error body or a
//! run record.

/// `scheme://user:secret@host/db?password=x` → `scheme://user:***@host/db?password=***`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k.eq_ignore_ascii_case("password") {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => redact_text(url),
    }
}

/// Masks URL credentials and `password=` values wherever they occur in text.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.contains("://") {
            out.push_str(&mask_userinfo(word));
        } else if let Some(pos) = word.to_ascii_lowercase().find("password=") {
            out.push_str(&word[..pos + "password=".len()]);
            out.push_str("***");
        } else {
            out.push_str(word);
        }
    }
    out
}

fn mask_userinfo(word: &str) -> String {
    let Some(scheme_end) = word.find("://") else {
        return word.to_string();
    };
    let rest = &word[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            let tail = redact_text_query(&rest[at..]);
            format!("{}{}{}", &word[..scheme_end + 3], masked, tail)
        }
        None => format!("{}{}", &word[..scheme_end + 3], redact_text_query(rest)),
    }
}

fn redact_text_query(s: &str) -> String {
    match s.to_ascii_lowercase().find("password=") {
        Some(pos) => {
            let end = s[pos..].find('&').map_or(s.len(), |e| pos + e);
            format!("{}password=***{}", &s[..pos], &s[end..])
        }
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords() {
        let r = redact_url("postgres://app:s3cret@db:5432/x?sslmode=require&password=p2");
        assert!(!r.contains("s3cret") && !r.contains("p2"), "{r}");
        assert!(r.contains("app:***@db"), "{r}");
        let t = redact_text("could not connect to postgres://u:hunter2@h/db: refused password=abc");
        assert!(!t.contains("hunter2") && !t.contains("abc"), "{t}");
    }
}
