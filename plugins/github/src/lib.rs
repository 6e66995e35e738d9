//! GitHub REST API connector: repositories, issues and comments.
//!
//! Authenticates with a bearer token (a personal access token or an app installation token)
//! injected by the gateway. Connections can point at GitHub Enterprise Server by setting their
//! base URL to `https://HOST/api/v3`.

use serde::Deserialize;
use sluice_sdk::http::{self, RequestBuilder, segment};
use sluice_sdk::{Auth, Connector, Endpoint, Error, Manifest, Output, Params, Value, export_connector, json};

struct GitHub;

/// `owner` and `repo` name a repository in every endpoint.
#[derive(Deserialize)]
struct RepoRef {
    owner: String,
    repo: String,
}

impl RepoRef {
    fn path(&self) -> String {
        format!("/repos/{}/{}", segment(&self.owner), segment(&self.repo))
    }
}

#[derive(Deserialize)]
struct ListIssues {
    #[serde(flatten)]
    repo: RepoRef,
    state: Option<String>,
    labels: Option<String>,
    per_page: Option<u32>,
    page: Option<u32>,
}

#[derive(Deserialize)]
struct IssueRef {
    #[serde(flatten)]
    repo: RepoRef,
    issue_number: u64,
}

#[derive(Deserialize)]
struct CreateIssue {
    #[serde(flatten)]
    repo: RepoRef,
    title: String,
    body: Option<String>,
    labels: Option<Vec<String>>,
    assignees: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct CreateComment {
    #[serde(flatten)]
    issue: IssueRef,
    body: String,
}

/// GitHub wants a versioned media type on every call.
fn github(request: RequestBuilder) -> RequestBuilder {
    request
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28")
}

/// Drops `None` fields so GitHub does not see explicit nulls.
fn without_nulls(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
    }
    value
}

impl Connector for GitHub {
    fn describe() -> Manifest {
        let repo_props = json!({
            // `.` and `..` would be dot segments of the upstream path, which the host refuses
            // to send (403 `egress_denied`): they are the caller's mistake, a 400.
            "owner": {
                "type": "string", "minLength": 1, "not": {"enum": [".", ".."]},
                "description": "Login of the user or organization that owns the repository, e.g. `rust-lang`"
            },
            "repo": {
                "type": "string", "minLength": 1, "not": {"enum": [".", ".."]},
                "description": "Repository name without the owner, e.g. `rust`"
            }
        });
        let with_repo = |extra: Value, required: &[&str]| {
            let mut properties = repo_props.clone();
            if let (Value::Object(base), Value::Object(extra)) = (&mut properties, extra) {
                base.extend(extra);
            }
            let mut all_required = vec!["owner", "repo"];
            all_required.extend_from_slice(required);
            json!({"type": "object", "required": all_required, "properties": properties, "additionalProperties": false})
        };
        // GitHub's numbers are 32-bit: a larger one could only fail, after a round trip.
        let issue_number = json!({"issue_number": {
            "type": "integer", "minimum": 1, "maximum": i32::MAX,
            "description": "Number of the issue or pull request in the repository, as in its URL"
        }});

        Manifest::new("github", "GitHub", env!("CARGO_PKG_VERSION"))
            .description("GitHub REST API: repositories, issues and comments")
            .category("developer-tools")
            .icon_url("https://github.githubassets.com/favicons/favicon.svg")
            .base_url("https://api.github.com")
            .auth(Auth::Bearer)
            .endpoint(
                Endpoint::new("get_repo", "GET", "/repos/{owner}/{repo}")
                    .title("Get a repository")
                    .description("Returns a repository's metadata: description, visibility, default branch, counts.")
                    .params_schema(with_repo(json!({}), &[]))
                    .example("The Rust compiler", json!({"owner": "rust-lang", "repo": "rust"})),
            )
            .endpoint(
                Endpoint::new("list_issues", "GET", "/repos/{owner}/{repo}/issues")
                    .title("List repository issues")
                    .description("Lists issues (and pull requests) in a repository, newest first.")
                    .params_schema(with_repo(
                        json!({
                            "state": {
                                "type": "string", "enum": ["open", "closed", "all"], "default": "open",
                                "description": "List open, closed or all issues; defaults to open"
                            },
                            "labels": {
                                "type": "string",
                                "description": "Comma-separated labels an issue must all have, e.g. `bug,ui`"
                            },
                            "per_page": {
                                "type": "integer", "minimum": 1, "maximum": 100, "default": 30,
                                "description": "Issues per page, 1 to 100; defaults to 30"
                            },
                            "page": {
                                "type": "integer", "minimum": 1, "maximum": i32::MAX, "default": 1,
                                "description": "Page of results to return, starting at 1"
                            }
                        }),
                        &[],
                    ))
                    .example("Open bugs", json!({"owner": "acme", "repo": "webapp", "labels": "bug"})),
            )
            .endpoint(
                Endpoint::new("get_issue", "GET", "/repos/{owner}/{repo}/issues/{issue_number}")
                    .title("Get an issue")
                    .description("Returns one issue with its title, body, state, labels and assignees.")
                    .params_schema(with_repo(issue_number.clone(), &["issue_number"]))
                    .example("Issue 7", json!({"owner": "acme", "repo": "webapp", "issue_number": 7})),
            )
            .endpoint(
                Endpoint::new("create_issue", "POST", "/repos/{owner}/{repo}/issues")
                    .title("Create an issue")
                    .description("Opens a new issue. Requires push access to set labels or assignees.")
                    .params_schema(with_repo(
                        json!({
                            "title": {"type": "string", "minLength": 1, "description": "Issue title"},
                            "body": {"type": "string", "description": "Issue text, in GitHub Markdown"},
                            "labels": {
                                "type": "array", "items": {"type": "string"},
                                "description": "Names of labels to add; dropped without push access"
                            },
                            "assignees": {
                                "type": "array", "items": {"type": "string"},
                                "description": "Logins of users to assign; dropped without push access"
                            }
                        }),
                        &["title"],
                    ))
                    .example(
                        "A bug report",
                        json!({"owner": "acme", "repo": "webapp", "title": "Bug report", "body": "Steps to reproduce...", "labels": ["bug"]}),
                    ),
            )
            .endpoint(
                Endpoint::new("create_comment", "POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments")
                    .title("Comment on an issue")
                    .description("Adds a comment to an issue or pull request.")
                    .params_schema(with_repo(
                        {
                            let mut props = issue_number;
                            if let Value::Object(map) = &mut props {
                                let body = json!({
                                    "type": "string", "minLength": 1,
                                    "description": "Comment text, in GitHub Markdown"
                                });
                                map.insert("body".into(), body);
                            }
                            props
                        },
                        &["issue_number", "body"],
                    ))
                    .example("Thank the reporter", json!({"owner": "acme", "repo": "webapp", "issue_number": 7, "body": "Thanks!"})),
            )
    }

    fn invoke(endpoint: &str, params: Params) -> Result<Output, Error> {
        let request = match endpoint {
            "get_repo" => http::get(params.parse::<RepoRef>()?.path()),
            "list_issues" => {
                let p: ListIssues = params.parse()?;
                http::get(format!("{}/issues", p.repo.path()))
                    .query_opt("state", p.state)
                    .query_opt("labels", p.labels)
                    .query_opt("per_page", p.per_page)
                    .query_opt("page", p.page)
            }
            "get_issue" => {
                let p: IssueRef = params.parse()?;
                http::get(format!("{}/issues/{}", p.repo.path(), p.issue_number))
            }
            "create_issue" => {
                let p: CreateIssue = params.parse()?;
                let body = without_nulls(json!({
                    "title": p.title,
                    "body": p.body,
                    "labels": p.labels,
                    "assignees": p.assignees,
                }));
                http::post(format!("{}/issues", p.repo.path())).json(&body)?
            }
            "create_comment" => {
                let p: CreateComment = params.parse()?;
                http::post(format!(
                    "{}/issues/{}/comments",
                    p.issue.repo.path(),
                    p.issue.issue_number
                ))
                .json(&json!({"body": p.body}))?
            }
            other => return Err(Error::unknown_endpoint(other)),
        };
        Ok(github(request).send()?.into())
    }
}

export_connector!(GitHub);

/// Unit tests against a fake GitHub with `sluice_sdk::testing`, natively (`cargo test`).
#[cfg(test)]
mod tests {
    use super::GitHub;
    use sluice_sdk::testing::{self, Reply, run};
    use sluice_sdk::{Error, json};

    #[test]
    fn a_name_cannot_leave_its_path_segment() {
        let run = run::<GitHub>("get_repo", json!({"owner": "acme", "repo": "../../user"}), |_| {
            Reply::json(404, json!({"message": "Not Found"}))
        });
        assert_eq!(run.sent[0].path(), "/repos/acme/..%2F..%2Fuser");
        assert_eq!(run.status(), 404, "the upstream's status passes through");
    }

    #[test]
    fn list_issues_sends_only_the_filters_given_with_githubs_media_type() {
        let run = run::<GitHub>(
            "list_issues",
            json!({"owner": "acme", "repo": "webapp", "state": "open", "per_page": 5}),
            |_| Reply::json(200, json!([{"number": 7}])),
        );
        let sent = &run.sent[0];
        assert_eq!(sent.path(), "/repos/acme/webapp/issues");
        assert_eq!(
            (sent.query("state"), sent.query("per_page"), sent.query("labels")),
            (Some("open".into()), Some("5".into()), None)
        );
        assert_eq!(sent.header("accept"), Some("application/vnd.github+json"));
        assert_eq!(run.data(), json!([{"number": 7}]));
    }

    #[test]
    fn create_issue_leaves_out_what_the_caller_did_not_give() {
        let run = run::<GitHub>(
            "create_issue",
            json!({"owner": "acme", "repo": "webapp", "title": "Bug", "labels": ["bug"]}),
            |request| Reply::json(201, json!({"number": 8, "title": request.json()["title"]})),
        );
        let sent = &run.sent[0];
        assert_eq!(
            (sent.method.as_str(), sent.path()),
            ("POST", "/repos/acme/webapp/issues")
        );
        assert_eq!(sent.json(), json!({"title": "Bug", "labels": ["bug"]}));
        assert_eq!((run.status(), run.data()["number"].as_u64()), (201, Some(8)));
    }

    /// The examples callers and agents are shown each make one request of their endpoint.
    #[test]
    fn every_example_sends_one_request() {
        let examples = testing::examples::<GitHub>();
        assert_eq!(examples.len(), 5);
        for (endpoint, title, params) in examples {
            let run = run::<GitHub>(&endpoint, params, |_| Reply::json(200, json!({})));
            assert_eq!((run.status(), run.sent.len()), (200, 1), "{endpoint}: {title}");
            assert!(run.sent[0].path().starts_with("/repos/"), "{endpoint}: {title}");
        }
    }

    #[test]
    fn a_wrong_params_type_is_bad_params_and_sends_nothing() {
        let run = run::<GitHub>(
            "get_issue",
            json!({"owner": "acme", "repo": "webapp", "issue_number": "seven"}),
            |_| panic!("nothing should be sent"),
        );
        assert!(
            matches!(run.error(), Error::BadParams(m) if m.contains("issue_number")),
            "{:?}",
            run.result
        );
        assert!(run.sent.is_empty());
    }
}
