//! HTML for people: escaping, the page frame, the report's login form. A leaf module: the report
//! pages and the auth layer (which answers the login form) both use it.

/// `s` safe in HTML text and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:1rem auto;max-width:1320px;padding:0 1rem;color:#222}\
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}table{border-collapse:collapse;font-size:.9rem}\
td,th{border-bottom:1px solid #ddd;padding:.25rem .6rem;text-align:left;vertical-align:top}\
.v{font-weight:bold;padding:.1rem .4rem;border-radius:3px;color:#fff}.v-GO{background:#1a7f37}\
.v-NO-GO{background:#c62828}.v-PENDING{background:#777}.v-INCONCLUSIVE{background:#b26a00}\
figure{display:inline-block;margin:.4rem .8rem .4rem 0;vertical-align:top}figcaption{font-size:.9rem;font-weight:600}\
.legend{font-size:.8rem}.legend span{margin-right:.8rem;white-space:nowrap}.legend svg{vertical-align:middle;margin-right:.2rem}\
code{font-size:.85rem}.err{color:#c62828}.muted{color:#666}";

/// A whole page.
pub(crate) fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{} · meshgate</title><style>{CSS}</style></head><body>{body}</body></html>",
        esc(title)
    )
}

/// The login form for `/report` under `[auth]`, with an error line when `error` is set; after
/// logging in the browser goes to `next` (a `/report` path, checked by the caller).
pub(crate) fn login_page(error: Option<&str>, next: &str) -> String {
    page(
        "log in",
        &format!(
            "<h1>meshgate report</h1><p>This daemon needs a token with the <code>read</code> scope.</p>{}<form method=\"post\" action=\"/report/login\"><input type=\"hidden\" name=\"next\" value=\"{}\"><label>Token <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required></label> <button id=\"login\" type=\"submit\">Log in</button></form>",
            error
                .map(|e| format!("<p id=\"login-error\" class=\"err\">{}</p>", esc(e)))
                .unwrap_or_default(),
            esc(next)
        ),
    )
}
