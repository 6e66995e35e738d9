//! Gmail API connector: send email, list and read messages, list labels.
//!
//! Connects with OAuth 2.0 (Google). The gateway runs the authorization-code flow with
//! offline access, stores and refreshes the tokens, and injects the access token; this
//! connector never sees it.

mod message;

use serde::Deserialize;
use sluice_sdk::http::{self, segment};
use sluice_sdk::{
    Auth, Connector, Endpoint, Error, Manifest, OAuth2, Output, Params, export_connector, json,
};

struct Gmail;

/// Separates the text and HTML parts; never appears in base64-encoded bodies.
const BOUNDARY: &str = "sluice_=_alternative";

const MESSAGES: &str = "/gmail/v1/users/me/messages";

#[derive(Deserialize)]
struct SendEmail {
    to: Vec<String>,
    #[serde(default)]
    cc: Vec<String>,
    #[serde(default)]
    bcc: Vec<String>,
    from: Option<String>,
    reply_to: Option<String>,
    subject: String,
    text: Option<String>,
    html: Option<String>,
    thread_id: Option<String>,
}

#[derive(Deserialize)]
struct ListMessages {
    q: Option<String>,
    max_results: Option<u32>,
    page_token: Option<String>,
    #[serde(default)]
    label_ids: Vec<String>,
    include_spam_trash: Option<bool>,
}

#[derive(Deserialize)]
struct GetMessage {
    id: String,
    format: Option<String>,
}

fn send_email(params: SendEmail) -> Result<http::RequestBuilder, Error> {
    let draft = message::Draft {
        from: params.from.as_deref(),
        to: &params.to,
        cc: &params.cc,
        bcc: &params.bcc,
        reply_to: params.reply_to.as_deref(),
        subject: &params.subject,
        text: params.text.as_deref(),
        html: params.html.as_deref(),
    };
    let rendered =
        message::render(&draft, BOUNDARY).map_err(|message::Invalid(why)| Error::bad_params(why))?;
    let mut body = json!({"raw": message::raw(&rendered)});
    if let Some(thread) = params.thread_id {
        body["threadId"] = json!(thread);
    }
    http::post(format!("{MESSAGES}/send")).json(&body)
}

impl Connector for Gmail {
    fn describe() -> Manifest {
        let address = json!({
            "type": "string", "minLength": 3, "pattern": "^[^\\r\\n]*@[^\\r\\n]*$",
            "description": "An email address, optionally with a name: `Bob <bob@example.com>`"
        });
        let address_list =
            |description: &str| json!({"type": "array", "items": address, "description": description});
        Manifest::new("gmail", "Gmail", env!("CARGO_PKG_VERSION"))
            .description("Gmail API: send email, search and read messages, list labels")
            .category("communication")
            .icon_url("https://ssl.gstatic.com/ui/v1/icons/mail/rfr/gmail.ico")
            .base_url("https://gmail.googleapis.com")
            .auth(Auth::OAuth2(OAuth2 {
                authorize_url: "https://accounts.google.com/o/oauth2/v2/auth".into(),
                token_url: "https://oauth2.googleapis.com/token".into(),
                scopes: vec![
                    "https://www.googleapis.com/auth/gmail.send".into(),
                    "https://www.googleapis.com/auth/gmail.readonly".into(),
                ],
                // A refresh token only comes with offline access, and only on consent.
                authorize_params: vec![
                    ("access_type".into(), "offline".into()),
                    ("prompt".into(), "consent".into()),
                ],
            }))
            .endpoint(
                Endpoint::new("send_email", "POST", "/gmail/v1/users/me/messages/send")
                    .title("Send an email")
                    .description("Sends an email from the connected account. Give `text`, `html` or both (sent as alternatives).")
                    .params_schema(json!({
                        "type": "object",
                        "required": ["to", "subject"],
                        "additionalProperties": false,
                        "properties": {
                            "to": {
                                "description": "Recipients (To), 1 to 100 addresses",
                                "minItems": 1, "maxItems": 100, "type": "array", "items": address
                            },
                            "cc": address_list("Copy recipients (Cc)"),
                            "bcc": address_list("Blind copy recipients (Bcc), not shown to the others"),
                            "from": {
                                "type": "string", "pattern": "^[^\\r\\n]+$",
                                "description": "A send-as alias of the account; defaults to the account"
                            },
                            "reply_to": {
                                "type": "string", "pattern": "^[^\\r\\n]+$",
                                "description": "Where replies should go (Reply-To), if not to the sender"
                            },
                            "subject": {
                                "type": "string", "maxLength": 998, "pattern": "^[^\\r\\n]*$",
                                "description": "Subject line, one line of text"
                            },
                            "text": {"type": "string", "description": "Plain-text body"},
                            "html": {"type": "string", "description": "HTML body"},
                            "thread_id": {
                                "type": "string",
                                "description": "Thread to add the message to: a message's `threadId`"
                            }
                        },
                        "anyOf": [{"required": ["text"]}, {"required": ["html"]}]
                    }))
                    .example(
                        "A short note",
                        json!({"to": ["bob@example.com"], "subject": "Lunch?", "text": "Noon at the usual place?"}),
                    ),
            )
            .endpoint(
                Endpoint::new("list_messages", "GET", "/gmail/v1/users/me/messages")
                    .title("List or search messages")
                    .description("Lists message ids, newest first, optionally filtered by a Gmail search query and labels. Page with `page_token` from `nextPageToken`.")
                    .params_schema(json!({
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "q": {"type": "string", "description": "Gmail search, e.g. `from:bob is:unread`"},
                            "max_results": {
                                "type": "integer", "minimum": 1, "maximum": 500, "default": 100,
                                "description": "Message ids per page, 1 to 500; defaults to 100"
                            },
                            "page_token": {
                                "type": "string",
                                "description": "`nextPageToken` of the previous page, to get the next one"
                            },
                            "label_ids": {
                                "type": "array", "items": {"type": "string"},
                                "description": "Only messages with all these label IDs, e.g. `UNREAD`"
                            },
                            "include_spam_trash": {
                                "type": "boolean", "default": false,
                                "description": "Also list messages in Spam and Trash; defaults to false"
                            }
                        }
                    }))
                    .example("Unread from Bob", json!({"q": "from:bob@example.com is:unread", "max_results": 10})),
            )
            .endpoint(
                Endpoint::new("get_message", "GET", "/gmail/v1/users/me/messages/{id}")
                    .title("Get a message")
                    .description("Returns one message: headers, snippet and body parts (`format` full), or less.")
                    .params_schema(json!({
                        "type": "object",
                        "required": ["id"],
                        "additionalProperties": false,
                        "properties": {
                            // `.` and `..` would be dot segments of the upstream path.
                            "id": {
                                "type": "string", "minLength": 1, "not": {"enum": [".", ".."]},
                                "description": "Message ID, as returned by list_messages"
                            },
                            "format": {
                                "type": "string", "enum": ["full", "metadata", "minimal", "raw"],
                                "default": "full",
                                "description": "How much to return: full, metadata (headers), minimal or raw"
                            }
                        }
                    }))
                    .example("Headers only", json!({"id": "18c2f0a1b2c3d4e5", "format": "metadata"})),
            )
            .endpoint(
                Endpoint::new("list_labels", "GET", "/gmail/v1/users/me/labels")
                    .title("List labels")
                    .description("Lists the account's system and user labels.")
                    .params_schema(json!({"type": "object", "additionalProperties": false, "properties": {}}))
                    .example("All labels", json!({})),
            )
    }

    fn invoke(endpoint: &str, params: Params) -> Result<Output, Error> {
        let request = match endpoint {
            "send_email" => send_email(params.parse()?)?,
            "list_messages" => {
                let p: ListMessages = params.parse()?;
                let mut request = http::get(MESSAGES)
                    .query_opt("q", p.q)
                    .query_opt("maxResults", p.max_results)
                    .query_opt("pageToken", p.page_token)
                    .query_opt("includeSpamTrash", p.include_spam_trash);
                for label in &p.label_ids {
                    request = request.query("labelIds", label);
                }
                request
            }
            "get_message" => {
                let p: GetMessage = params.parse()?;
                http::get(format!("{MESSAGES}/{}", segment(&p.id))).query_opt("format", p.format)
            }
            "list_labels" => http::get("/gmail/v1/users/me/labels"),
            other => return Err(Error::unknown_endpoint(other)),
        };
        Ok(request.header("accept", "application/json").send()?.into())
    }
}

export_connector!(Gmail);
