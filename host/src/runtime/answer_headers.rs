//! The upstream response headers an action's caller needs to act on its answer: when to retry
//! (`Retry-After`), where the next page is (`Link`, `X-Total-Count`), how much of the upstream's
//! own rate limit is left (`X-RateLimit-*`, `RateLimit-*`) and the id to quote to the
//! upstream's support (`X-Request-Id` and the like).
//!
//! A connector returns only a status and a body, so the host keeps these headers from the last
//! upstream answer the connector got, and the envelope carries them when the connector reports
//! that answer's status (it passed the answer on). Nothing else is told: cookies, caching and
//! framing headers are the gateway's business, not the caller's.

use super::bindings::Response;

/// No more than this many headers, and this many bytes of names and values, are kept from one
/// answer: an upstream that sends hundreds of rate-limit headers, or a `Link` of megabytes,
/// does not grow every envelope without bound. Headers past the budget are left out whole.
const MAX_HEADERS: usize = 32;
const MAX_BYTES: usize = 16 << 10;

/// The headers of one upstream answer that its caller may need, by lower-case name, values
/// of a repeated header joined with `, ` (as HTTP allows for list headers such as `Link`).
#[derive(Debug, Default)]
pub struct AnswerHeaders {
    status: u16,
    headers: Vec<(String, String)>,
}

impl AnswerHeaders {
    /// What the caller may need from `response` (already scrubbed of the credential).
    pub fn of(response: &Response) -> Self {
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut bytes = 0;
        for header in &response.headers {
            let name = header.name.as_str();
            if !is_for_the_caller(name) {
                continue;
            }
            bytes += name.len() + header.value.len();
            if bytes > MAX_BYTES {
                break;
            }
            let full = headers.len() == MAX_HEADERS;
            match headers.last_mut() {
                // A header's values come one after another. A list (`Link`, the structured
                // `RateLimit` fields) is joined; of another, such as `Retry-After` (an HTTP
                // date has a comma of its own), the first value stands.
                Some((last, value)) if last.eq_ignore_ascii_case(name) => {
                    if is_list(name) {
                        value.push_str(", ");
                        value.push_str(&header.value);
                    }
                }
                _ if full => break,
                _ => headers.push((name.to_ascii_lowercase(), header.value.clone())),
            }
        }
        Self {
            status: response.status,
            headers,
        }
    }

    /// The headers, if the connector reported this answer's `status` (so it passed the answer
    /// on); none otherwise, since the caller's answer is then the connector's own.
    pub fn for_status(self, status: u16) -> Vec<(String, String)> {
        if status == self.status {
            self.headers
        } else {
            Vec::new()
        }
    }
}

/// Whether the caller of an action needs the upstream response header `name` (lower case, as
/// the host hands headers over): the standard ones and the vendors' spellings of rate limits
/// (`x-ratelimit-remaining`, `x-hubspot-ratelimit-daily`, `x-rate-limit-reset`) and request
/// ids (`x-github-request-id`, `x-slack-req-id`, `x-amzn-requestid`, `x-correlation-id`).
fn is_for_the_caller(name: &str) -> bool {
    matches!(name, "retry-after" | "link" | "x-total-count")
        || name.contains("ratelimit")
        || name.contains("rate-limit")
        || ["request-id", "requestid", "req-id", "correlation-id"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

/// Whether HTTP lets the values of header `name` be joined into one list.
fn is_list(name: &str) -> bool {
    name == "link" || name.starts_with("ratelimit")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bindings::Header;

    fn response(status: u16, headers: &[(&str, &str)]) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(name, value)| Header {
                    name: (*name).to_owned(),
                    value: (*value).to_owned(),
                })
                .collect(),
            body: Vec::new(),
        }
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn keeps_what_a_caller_acts_on_and_nothing_else() {
        let answer = response(
            429,
            &[
                ("content-type", "application/json"),
                ("retry-after", "7"),
                ("set-cookie", "session=abc"),
                ("x-hubspot-ratelimit-daily-remaining", "249000"),
                ("x-slack-req-id", "a1b2"),
                ("x-amzn-requestid", "r-9"),
                ("x-envoy-upstream-service-time", "12"),
                ("x-ratelimit-remaining", "0"),
                ("ratelimit-policy", "100;w=60"),
                ("x-github-request-id", "C0DE:1"),
                ("cache-control", "no-store"),
                ("link", "<https://api.example.com/items?page=2>; rel=\"next\""),
            ],
        );
        assert_eq!(
            AnswerHeaders::of(&answer).for_status(429),
            owned(&[
                ("retry-after", "7"),
                ("x-hubspot-ratelimit-daily-remaining", "249000"),
                ("x-slack-req-id", "a1b2"),
                ("x-amzn-requestid", "r-9"),
                ("x-ratelimit-remaining", "0"),
                ("ratelimit-policy", "100;w=60"),
                ("x-github-request-id", "C0DE:1"),
                ("link", "<https://api.example.com/items?page=2>; rel=\"next\""),
            ])
        );
    }

    #[test]
    fn only_for_the_status_the_connector_reported() {
        let answer = || AnswerHeaders::of(&response(429, &[("retry-after", "7")]));
        assert!(answer().for_status(200).is_empty());
        assert_eq!(answer().for_status(429), owned(&[("retry-after", "7")]));
    }

    #[test]
    fn lists_are_joined_other_repeats_keep_their_first_value_and_the_number_is_capped() {
        let answer = response(
            200,
            &[
                ("link", "<a>; rel=\"next\""),
                ("link", "<b>; rel=\"last\""),
                ("x-total-count", "40"),
                ("retry-after", "Wed, 21 Oct 2026 07:28:00 GMT"),
                ("retry-after", "120"),
            ],
        );
        assert_eq!(
            AnswerHeaders::of(&answer).for_status(200),
            owned(&[
                ("link", "<a>; rel=\"next\", <b>; rel=\"last\""),
                ("x-total-count", "40"),
                ("retry-after", "Wed, 21 Oct 2026 07:28:00 GMT"),
            ])
        );
        let huge = "l".repeat(MAX_BYTES);
        let over_budget = response(200, &[("retry-after", "1"), ("link", &huge)]);
        assert_eq!(
            AnswerHeaders::of(&over_budget).for_status(200),
            owned(&[("retry-after", "1")])
        );
        let names: Vec<String> = (0..100).map(|i| format!("x-ratelimit-{i}")).collect();
        let many: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), "1")).collect();
        assert_eq!(
            AnswerHeaders::of(&response(200, &many)).for_status(200).len(),
            MAX_HEADERS
        );
    }
}
