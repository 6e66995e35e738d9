//! RFC 2822 / MIME messages as the Gmail API's `raw` field wants them: the whole message,
//! base64url-encoded.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};

/// What a caller asks to send.
#[derive(Debug, Default)]
pub struct Draft<'a> {
    pub from: Option<&'a str>,
    pub to: &'a [String],
    pub cc: &'a [String],
    pub bcc: &'a [String],
    pub reply_to: Option<&'a str>,
    pub subject: &'a str,
    pub text: Option<&'a str>,
    pub html: Option<&'a str>,
}

/// Why a draft cannot become a message.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid(pub String);

/// A header value must stay on its line: a CR or LF would let a caller add headers (`Bcc:`)
/// or start the body early.
fn single_line<'a>(field: &str, value: &'a str) -> Result<&'a str, Invalid> {
    if value.contains(['\r', '\n']) {
        return Err(Invalid(format!("`{field}` must not contain line breaks")));
    }
    Ok(value)
}

fn address_list(field: &str, addresses: &[String]) -> Result<Option<String>, Invalid> {
    if addresses.is_empty() {
        return Ok(None);
    }
    for address in addresses {
        single_line(field, address)?;
        if !address.contains('@') {
            return Err(Invalid(format!("`{field}`: `{address}` is not an email address")));
        }
    }
    Ok(Some(addresses.join(", ")))
}

/// RFC 2047 encoded word for non-ASCII header text.
fn header_text(text: &str) -> String {
    if text.is_ascii() {
        text.to_owned()
    } else {
        format!("=?UTF-8?B?{}?=", STANDARD.encode(text))
    }
}

/// Base64 body wrapped at 76 characters, as MIME requires.
fn body_part(content_type: &str, text: &str) -> String {
    let encoded = STANDARD.encode(text);
    let mut wrapped = String::with_capacity(encoded.len() + encoded.len() / 76 * 2);
    for chunk in encoded.as_bytes().chunks(76) {
        wrapped.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        wrapped.push_str("\r\n");
    }
    format!(
        "Content-Type: {content_type}; charset=\"UTF-8\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{wrapped}"
    )
}

/// The message text (CRLF line ends), with `boundary` separating text and HTML parts.
pub fn render(draft: &Draft<'_>, boundary: &str) -> Result<String, Invalid> {
    let to = address_list("to", draft.to)?;
    if to.is_none() {
        return Err(Invalid("`to` needs at least one address".into()));
    }
    let mut message = String::new();
    let mut header = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            message.push_str(&format!("{name}: {value}\r\n"));
        }
    };
    header(
        "From",
        draft
            .from
            .map(|v| single_line("from", v))
            .transpose()?
            .map(str::to_owned),
    );
    header("To", to);
    header("Cc", address_list("cc", draft.cc)?);
    header("Bcc", address_list("bcc", draft.bcc)?);
    header(
        "Reply-To",
        draft
            .reply_to
            .map(|v| single_line("reply_to", v))
            .transpose()?
            .map(str::to_owned),
    );
    header(
        "Subject",
        Some(header_text(single_line("subject", draft.subject)?)),
    );
    header("MIME-Version", Some("1.0".into()));
    match (draft.text, draft.html) {
        (None, None) => return Err(Invalid("give `text`, `html` or both".into())),
        (Some(text), None) => message.push_str(&body_part("text/plain", text)),
        (None, Some(html)) => message.push_str(&body_part("text/html", html)),
        (Some(text), Some(html)) => {
            message.push_str(&format!(
                "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n"
            ));
            message.push_str(&format!("--{boundary}\r\n{}", body_part("text/plain", text)));
            message.push_str(&format!("--{boundary}\r\n{}", body_part("text/html", html)));
            message.push_str(&format!("--{boundary}--\r\n"));
        }
    }
    Ok(message)
}

/// The Gmail API's `raw`: the message in base64url.
pub fn raw(message: &str) -> String {
    URL_SAFE.encode(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft<'a>(to: &'a [String]) -> Draft<'a> {
        Draft {
            to,
            subject: "Quarterly report",
            text: Some("Hello,\nsee attached."),
            ..Draft::default()
        }
    }

    #[test]
    fn a_plain_text_message_has_headers_and_a_base64_body() {
        let to = vec!["bob@example.com".to_owned(), "carol@example.com".to_owned()];
        let message = render(&draft(&to), "b").expect("message");
        assert!(
            message.starts_with("To: bob@example.com, carol@example.com\r\nSubject: Quarterly report\r\n")
        );
        assert!(message.contains("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=\"UTF-8\"\r\n"));
        assert!(message.contains(&STANDARD.encode("Hello,\nsee attached.")));
        let decoded = URL_SAFE.decode(raw(&message)).expect("base64url");
        assert_eq!(decoded, message.as_bytes());
    }

    #[test]
    fn non_ascii_subjects_are_encoded_words() {
        let to = vec!["bob@example.com".to_owned()];
        let mut d = draft(&to);
        d.subject = "Grüße";
        let message = render(&d, "b").expect("message");
        assert!(message.contains(&format!("Subject: =?UTF-8?B?{}?=\r\n", STANDARD.encode("Grüße"))));
    }

    #[test]
    fn text_and_html_become_alternatives() {
        let to = vec!["bob@example.com".to_owned()];
        let mut d = draft(&to);
        d.html = Some("<p>Hello</p>");
        let message = render(&d, "XYZ").expect("message");
        assert!(message.contains("multipart/alternative; boundary=\"XYZ\""));
        assert_eq!(message.matches("--XYZ\r\n").count(), 2);
        assert!(message.ends_with("--XYZ--\r\n"));
    }

    #[test]
    fn header_injection_and_missing_parts_are_refused() {
        let to = vec!["bob@example.com".to_owned()];
        let mut d = draft(&to);
        d.subject = "Hi\r\nBcc: eve@example.com";
        assert!(render(&d, "b").is_err());
        let sneaky = vec!["bob@example.com\nBcc: eve@example.com".to_owned()];
        assert!(render(&draft(&sneaky), "b").is_err());
        assert!(render(&draft(&[]), "b").is_err());
        let mut empty = draft(&to);
        empty.text = None;
        assert_eq!(
            render(&empty, "b"),
            Err(Invalid("give `text`, `html` or both".into()))
        );
    }
}
