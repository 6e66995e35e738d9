//! The Pica-compatible vault API: connections are created, listed, read, changed and deleted
//! per environment, and secrets never come back out.

use crate::common::{Answer, Setup, fake_github};
use reqwest::Method;
use serde_json::{Value, json};
use sluice_fixtures::FakeUpstream;
use sluice_fixtures::gateway::Options;

fn assert_no_secret(answer: &Answer, secret: &str) {
    assert!(
        !answer.body.to_string().contains(secret),
        "a response contained the secret"
    );
}

/// `replace` stores a user's new secret in the connection the user has, instead of a second
/// one that would make calls naming only the identity ambiguous; with none it creates one, and
/// with several it names them rather than choose. An `identityType` narrows the owner.
#[tokio::test(flavor = "multi_thread")]
async fn replace_stores_a_new_secret_in_the_owners_connection() {
    let setup = Setup::new().await;
    let store = |secret: &str, extra: Value| {
        let mut body = json!({
            "platform": "github", "secret": secret, "identity": "rita", "replace": true,
            "baseUrl": setup.upstream.url()
        });
        for (field, value) in extra.as_object().expect("fields") {
            body[field] = value.clone();
        }
        setup.api(Method::POST, "/v1/vault/connections", Some(body))
    };
    let first = store("ghp_ritaFirstSecret1", json!({"identityType": "user"})).await;
    assert_eq!(first.status, 201, "none yet: created {:?}", first.body);
    let second = store("ghp_ritaSecondSecret2", json!({"tags": ["eu"]})).await;
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert_no_secret(&second, "ghp_ritaSecondSecret2");
    assert_eq!(
        (
            &second.body["key"],
            &second.body["identityType"],
            &second.body["tags"]
        ),
        (&first.body["key"], &json!("user"), &json!(["eu"]))
    );
    let answer = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": "acme", "repo": "webapp"}, "identity": "rita"}),
        )
        .await;
    assert_eq!(answer.body["status"], 200, "{:?}", answer.body);
    let sent = setup.upstream_requests().pop().expect("sent");
    assert_eq!(sent.header("authorization"), Some("Bearer ghp_ritaSecondSecret2"));

    // Team rita is another owner (as execute and the connect flow see it): `replace` naming
    // that type makes her a connection of her own and leaves user rita's as it was.
    let team = store("ghp_ritaTeamSecret3", json!({"identityType": "team"})).await;
    assert_eq!(team.status, 201, "{:?}", team.body);
    assert_ne!(team.body["key"], first.body["key"]);
    let user_again = store("ghp_ritaFourthSecret4", json!({"identityType": "user"})).await;
    assert_eq!(
        (user_again.status, &user_again.body["key"]),
        (200, &first.body["key"]),
        "{:?}",
        user_again.body
    );
    // Naming no type, `replace` finds both and does not choose.
    let ambiguous = store("ghp_ritaFifthSecret5", json!({})).await;
    assert_eq!(
        (ambiguous.status, ambiguous.code()),
        (400, "ambiguous_connection"),
        "{:?}",
        ambiguous.body
    );
    assert_eq!(
        ambiguous.body["candidates"].as_array().map(Vec::len),
        Some(2),
        "{:?}",
        ambiguous.body
    );
}

/// The whole life of a connection through the API, and its effect on execute.
#[tokio::test(flavor = "multi_thread")]
async fn connection_lifecycle_through_the_vault_api() {
    let setup = Setup::new().await;
    let secret = "ghp_vaultAPIsecret55555";
    let created = setup
        .api(
            Method::POST,
            "/v1/vault/connections",
            Some(json!({
                "platform": "github", "secret": secret, "identity": "bob", "identityType": "user",
                "name": "Bob's GitHub", "tags": ["crm", "eu"], "baseUrl": setup.upstream.url()
            })),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_no_secret(&created, secret);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let key = created.body["key"].as_str().expect("key").to_owned();
    assert!(key.starts_with("test::github::bob::"), "{key}");
    for (field, expected) in [
        ("platform", json!("github")),
        ("environment", json!("test")),
        ("identity", json!("bob")),
        ("identityType", json!("user")),
        ("state", json!("operational")),
        ("active", json!(true)),
        ("tags", json!(["crm", "eu"])),
    ] {
        assert_eq!(created.body[field], expected, "{field}");
    }

    // Execute with the new connection, selected by identity.
    let answer = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": "acme", "repo": "webapp"}, "identity": "bob"}),
        )
        .await;
    assert_eq!(answer.body["status"], 200);
    let sent = setup.upstream_requests().pop().expect("sent");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {secret}").as_str())
    );

    // List with filters and pagination.
    let listed = setup
        .api(
            Method::GET,
            "/v1/vault/connections?platform=github&identity=bob&identityType=user&active=true&tags=crm",
            None,
        )
        .await;
    assert_eq!(listed.body["total"], 1, "{:?}", listed.body);
    assert_eq!(listed.body["rows"][0]["id"], json!(id));
    let page = setup
        .api(Method::GET, "/v1/vault/connections?limit=1&page=2", None)
        .await;
    // The setup made two connections (github, hostile) and this test one more.
    assert_eq!(
        (
            page.body["total"].clone(),
            page.body["pages"].clone(),
            page.body["page"].clone()
        ),
        (json!(3), json!(3), json!(2))
    );
    assert_eq!(page.body["rows"].as_array().map(Vec::len), Some(1));
    // `platform` takes a list too.
    for (platforms, total) in [("github,hostile", 3), ("hostile", 1), ("hostile,echo", 1)] {
        let listed = setup
            .api(
                Method::GET,
                &format!("/v1/vault/connections?platform={platforms}"),
                None,
            )
            .await;
        assert_eq!(listed.body["total"], total, "{platforms}: {:?}", listed.body);
    }
    let none = setup
        .api(Method::GET, "/v1/vault/connections?tags=crm,us", None)
        .await;
    assert_eq!(none.body["total"], 0);

    // Read by id and by key; secrets never appear.
    let by_id = setup
        .api(Method::GET, &format!("/v1/vault/connections/{id}"), None)
        .await;
    assert_eq!(by_id.body["key"], json!(key));
    let by_key = setup
        .api(Method::GET, &format!("/v1/vault/connections/{key}"), None)
        .await;
    assert_eq!(by_key.body["id"], json!(id));
    assert_no_secret(&by_id, secret);
    assert_no_secret(&listed, secret);

    // Deactivate: execute can no longer use it.
    let patched = setup
        .api(
            Method::PATCH,
            &format!("/v1/vault/connections/{id}"),
            Some(json!({"active": false, "name": "Old"})),
        )
        .await;
    assert_eq!(
        (patched.body["active"].clone(), patched.body["name"].clone()),
        (json!(false), json!("Old"))
    );
    let inactive = setup
        .execute(
            "github",
            "get_repo",
            json!({"params": {"owner": "acme", "repo": "webapp"}, "identity": "bob"}),
        )
        .await;
    assert_eq!(inactive.code(), "integration_not_connected");
    // Lists show active connections unless asked otherwise, as Pica's do.
    for (query, listed) in [("", false), ("&active=false", true), ("&active=any", true)] {
        let page = setup
            .api(
                Method::GET,
                &format!("/v1/vault/connections?identity=bob{query}"),
                None,
            )
            .await;
        assert_eq!(
            page.body["total"],
            json!(usize::from(listed)),
            "{query}: {:?}",
            page.body
        );
    }

    // Delete: gone.
    let deleted = setup
        .api(Method::DELETE, &format!("/v1/vault/connections/{id}"), None)
        .await;
    assert_eq!(deleted.body["deleted"], true);
    let gone = setup
        .api(Method::GET, &format!("/v1/vault/connections/{id}"), None)
        .await;
    assert_eq!((gone.status, gone.code()), (404, "not_found"));
    assert!(
        !setup.gateway.output().contains(secret),
        "the secret leaked into the logs"
    );
    setup.assert_secret_not_logged();
}

/// Whoever may edit a connection may not send its stored credential somewhere else: the base
/// URL moves only together with a secret the caller supplies.
#[tokio::test(flavor = "multi_thread")]
async fn a_connections_credential_cannot_be_redirected_without_its_secret() {
    let setup = Setup::new().await;
    let elsewhere = FakeUpstream::start(fake_github).await;
    let other_key = setup.gateway.create_key("test", "github").await;
    let path = format!("/v1/vault/connections/{}", setup.connection_key);
    let get_repo = json!({"params": {"owner": "acme", "repo": "webapp"}});

    let moved = setup
        .api_as(
            &other_key,
            Method::PATCH,
            &path,
            Some(json!({"baseUrl": elsewhere.url()})),
        )
        .await;
    assert_eq!(
        (moved.status, moved.code()),
        (400, "bad_request"),
        "{:?}",
        moved.body
    );
    assert!(
        moved.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("secret")
    );
    let answer = setup
        .execute_as(&other_key, "github", "get_repo", get_repo.clone())
        .await;
    assert_eq!(answer.body["status"], 200, "{:?}", answer.body);
    assert!(
        elsewhere.requests().is_empty(),
        "the credential reached another host"
    );
    assert_eq!(
        setup.upstream_requests().len(),
        1,
        "the call went where it always did"
    );

    // Repeating the current base URL moves nothing; a new secret may go anywhere its owner says.
    let unchanged = setup
        .api(
            Method::PATCH,
            &path,
            Some(json!({"baseUrl": setup.upstream.url(), "name": "same"})),
        )
        .await;
    assert_eq!(unchanged.status, 200, "{:?}", unchanged.body);
    let replaced = setup
        .api(
            Method::PATCH,
            &path,
            Some(json!({"baseUrl": elsewhere.url(), "secret": "ghp_ownedByTheMover"})),
        )
        .await;
    assert_eq!(replaced.status, 200, "{:?}", replaced.body);
    let answer = setup.execute("github", "get_repo", get_repo).await;
    assert_eq!(answer.body["status"], 200, "{:?}", answer.body);
    let sent = elsewhere.requests().pop().expect("sent to the new base URL");
    assert_eq!(sent.header("authorization"), Some("Bearer ghp_ownedByTheMover"));

    // Going back to the integration's own origin needs no secret.
    let cleared = setup
        .api(Method::PATCH, &path, Some(json!({"baseUrl": null})))
        .await;
    assert_eq!(
        (cleared.status, cleared.body["baseUrl"].clone()),
        (200, Value::Null)
    );
}

/// A base URL receives the credential: outside local development it must be https.
#[tokio::test(flavor = "multi_thread")]
async fn a_base_url_must_be_https_unless_private_upstreams_are_allowed() {
    let setup = Setup::with_options(Options {
        deny_private_upstreams: true,
        ..Options::default()
    })
    .await;
    let create = |base_url: &str| json!({"platform": "github", "secret": "ghp_x123456", "baseUrl": base_url});
    let plain = setup
        .api(
            Method::POST,
            "/v1/vault/connections",
            Some(create("http://github.acme.test")),
        )
        .await;
    assert_eq!(
        (plain.status, plain.code()),
        (400, "bad_request"),
        "{:?}",
        plain.body
    );
    assert!(
        plain.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("https")
    );
    let session = setup
        .api(
            Method::POST,
            "/v1/connect",
            Some(json!({"integration": "github", "baseUrl": "http://github.acme.test"})),
        )
        .await;
    assert_eq!(session.code(), "bad_request", "{:?}", session.body);
    // An https origin the connector does not declare needs the operator's word (`baseUrls`):
    // no API key widens where the gateway sends requests.
    let undeclared = setup
        .api(
            Method::POST,
            "/v1/vault/connections",
            Some(create("https://github.acme.test/api/v3")),
        )
        .await;
    assert_eq!(
        (undeclared.status, undeclared.code()),
        (400, "bad_request"),
        "{:?}",
        undeclared.body
    );
    let says = undeclared.body["message"].as_str().unwrap_or_default();
    assert!(
        says.contains("https://github.acme.test") && says.contains("`baseUrls` for `github`"),
        "{says}"
    );
    let declared = setup
        .api(
            Method::POST,
            "/v1/vault/connections",
            Some(create("https://api.github.com/v3")),
        )
        .await;
    assert_eq!(declared.status, 201, "{:?}", declared.body);
}

/// Every field is validated with a message that names it.
#[tokio::test(flavor = "multi_thread")]
async fn bad_vault_input_is_rejected_naming_the_field() {
    let setup = Setup::new().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"platform": "nope", "secret": "ghp_x12345"}), "platform"),
        (
            json!({"platform": "github", "secret": "ghp_x12345", "identityType": "robot"}),
            "identityType",
        ),
        (
            json!({"platform": "github", "secret": "ghp_x12345", "identityType": "user"}),
            "identityType",
        ),
        (json!({"platform": "github"}), "secret"),
        (json!({"platform": "github", "secret": "  "}), "secret"),
        // Too short to tell apart from other text when scrubbing it from upstream answers.
        (json!({"platform": "github", "secret": "abcd"}), "secret"),
        // Connectors' paths are appended to it: a query or fragment would swallow them.
        (
            json!({"platform": "github", "secret": "ghp_x12345", "baseUrl": "https://ghe.acme.test/api?x=1"}),
            "baseUrl",
        ),
        // A copied token with its newline would make every later call fail upstream-side.
        (json!({"platform": "github", "secret": "ghp_token\n"}), "secret"),
        (
            json!({"platform": "github", "secret": "ghp_x12345", "tags": "crm"}),
            "tags",
        ),
        (
            json!({"platform": "github", "secret": "ghp_x12345", "baseUrl": "ftp://x"}),
            "baseUrl",
        ),
        // A base URL is shown wherever the connection is: it may hold no credential itself.
        (
            json!({"platform": "github", "secret": "ghp_x12345", "baseUrl": "https://u:pw@ghe.acme.test"}),
            "baseUrl",
        ),
        // An identity becomes part of the connection key that apps print and log.
        (
            json!({"platform": "github", "secret": "ghp_x12345", "identity": "alice\tadmin"}),
            "identity",
        ),
        (
            json!({"platform": "github", "secret": "ghp_x12345", "identity": ""}),
            "identity",
        ),
        // A serialiser's `null` for a user id it lost is not "the key owner's own connection".
        (
            json!({"platform": "github", "secret": "ghp_x12345", "identity": null}),
            "identity",
        ),
        (
            json!({"platform": "github", "secret": "ghp_x12345", "colour": "red"}),
            "colour",
        ),
        (json!({"platform": "echo", "secret": "ghp_x12345"}), "platform"),
        (json!({"secret": "ghp_x12345"}), "platform"),
    ];
    for (body, field) in cases {
        let answer = setup
            .api(Method::POST, "/v1/vault/connections", Some(body.clone()))
            .await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, "bad_request"),
            "{body}: {:?}",
            answer.body
        );
        let message = answer.body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(field),
            "{body}: message `{message}` should name `{field}`"
        );
    }
    for query in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "page=0",
        "active=maybe",
        "identityType=robot",
        "state=broken",
        // A misspelt filter is refused, not ignored (which would list every connection).
        "platfrom=github",
        // So is an empty identity (`?identity=${user}` with no user): not every tenant's rows.
        "identity=",
        "identityType=",
        "key=",
        "_id=,",
    ] {
        let answer = setup
            .api(Method::GET, &format!("/v1/vault/connections?{query}"), None)
            .await;
        assert_eq!((answer.status, answer.code()), (400, "bad_request"), "{query}");
        let field = query.split('=').next().unwrap_or_default();
        assert!(
            answer.body["message"]
                .as_str()
                .unwrap_or_default()
                .contains(field),
            "{query}"
        );
    }
    let malformed = setup
        .client
        .post(format!("{}/v1/vault/connections", setup.gateway.url))
        .bearer_auth(&setup.key)
        .header("content-type", "application/json")
        .body("{");
    let malformed = crate::common::send(malformed).await;
    assert_eq!((malformed.status, malformed.code()), (400, "bad_request"));
    let missing = setup
        .api(Method::GET, "/v1/vault/connections/conn_99999", None)
        .await;
    assert_eq!((missing.status, missing.code()), (404, "not_found"));
    let unauthenticated = crate::common::send(
        setup
            .client
            .get(format!("{}/v1/vault/connections", setup.gateway.url)),
    )
    .await;
    assert_eq!(
        (unauthenticated.status, unauthenticated.code()),
        (401, "unauthorized")
    );
}

/// A key sees only its own environment, and only integrations in its scope.
#[tokio::test(flavor = "multi_thread")]
async fn keys_see_only_their_environment_and_scope() {
    let setup = Setup::new().await;
    let live = setup.gateway.create_key("live", "*").await;
    let listed = setup
        .api_as(&live, Method::GET, "/v1/vault/connections", None)
        .await;
    assert_eq!(
        listed.body["total"], 0,
        "test connections are invisible to live keys"
    );
    let hidden = setup
        .api_as(
            &live,
            Method::GET,
            &format!("/v1/vault/connections/{}", setup.connection_key),
            None,
        )
        .await;
    assert_eq!(hidden.code(), "not_found");
    let slack_only = setup.gateway.create_key("test", "slack").await;
    let scoped = setup
        .api_as(
            &slack_only,
            Method::GET,
            &format!("/v1/vault/connections/{}", setup.connection_key),
            None,
        )
        .await;
    assert_eq!(scoped.code(), "not_found");
    let create = setup
        .api_as(
            &slack_only,
            Method::POST,
            "/v1/vault/connections",
            Some(json!({"platform": "github", "secret": "ghp_x12345"})),
        )
        .await;
    assert_eq!((create.status, create.code()), (403, "scope_not_allowed"));

    // Listing counts only what the scope shows: the setup's two connections (github, hostile)
    // are invisible to a github-only key but one of them, and so are their log rows.
    let github_only = setup.gateway.create_key("test", "github").await;
    let answer = setup
        .execute("hostile", "call", json!({"params": {"url": "/text"}}))
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let listed = setup
        .api_as(&github_only, Method::GET, "/v1/vault/connections?limit=1", None)
        .await;
    assert_eq!(
        (listed.body["total"].clone(), listed.body["pages"].clone()),
        (json!(1), json!(1)),
        "{:?}",
        listed.body
    );
    assert_eq!(listed.body["rows"][0]["platform"], "github");
    // A list naming an integration outside the scope is refused, not quietly narrowed.
    let outside = setup
        .api_as(
            &github_only,
            Method::GET,
            "/v1/vault/connections?platform=github,hostile",
            None,
        )
        .await;
    assert_eq!((outside.status, outside.code()), (403, "scope_not_allowed"));
    let both = format!("/v1/vault/connections?key={},nope", setup.connection_key);
    let by_keys = setup.api(Method::GET, &both, None).await;
    assert_eq!(by_keys.body["total"], 1, "{:?}", by_keys.body);
    assert!(
        setup.log_row_where("").await.is_some(),
        "the log writer has flushed"
    );
    let logs = setup.api_as(&github_only, Method::GET, "/v1/logs", None).await;
    assert_eq!(logs.body["total"], 0, "{:?}", logs.body);
}

/// Pica's `x-pica-secret` header works in place of the bearer key, and the `Bearer` scheme's
/// name is case-insensitive, as HTTP has it.
#[tokio::test(flavor = "multi_thread")]
async fn pica_secret_header_is_an_alias() {
    let setup = Setup::new().await;
    let url = format!("{}/v1/vault/connections", setup.gateway.url);
    let answer = crate::common::send(setup.client.get(&url).header("x-pica-secret", &setup.key)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["total"], 2);
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let answer = crate::common::send(
            setup
                .client
                .get(&url)
                .header("authorization", format!("{scheme} {}", setup.key)),
        )
        .await;
        assert_eq!(answer.status, 200, "{scheme}: {:?}", answer.body);
    }
}

/// Creating past the environment's connection limit is `plan_limit_reached`.
#[tokio::test(flavor = "multi_thread")]
async fn connection_limit_is_plan_limit_reached() {
    let setup = Setup::with_options(Options {
        extra_args: vec!["--max-connections-per-env".into(), "3".into()],
        ..Options::default()
    })
    .await;
    let body = json!({"platform": "github", "secret": "ghp_x123456"});
    let third = setup
        .api(Method::POST, "/v1/vault/connections", Some(body.clone()))
        .await;
    assert_eq!(third.status, 201, "{:?}", third.body);
    let fourth = setup.api(Method::POST, "/v1/vault/connections", Some(body)).await;
    assert_eq!((fourth.status, fourth.code()), (403, "plan_limit_reached"));
}

/// Repeated upstream 401s degrade and then fail the connection; a success restores it.
#[tokio::test(flavor = "multi_thread")]
async fn connection_state_follows_upstream_auth_failures() {
    let setup = Setup::new().await;
    let revoked = json!({"params": {"owner": "acme", "repo": "revoked"}});
    let answer = setup.execute("github", "get_repo", revoked.clone()).await;
    assert_eq!(answer.body["status"], 401, "the upstream 401 is passed through");
    assert_eq!(
        setup.wait_for_state(&setup.connection_key, "degraded").await,
        "degraded"
    );
    for _ in 0..2 {
        setup.execute("github", "get_repo", revoked.clone()).await;
    }
    assert_eq!(
        setup.wait_for_state(&setup.connection_key, "failed").await,
        "failed"
    );
    // The app finds the connections whose users must connect again.
    for (state, listed) in [("failed", true), ("operational", false)] {
        let page = setup
            .api(Method::GET, &format!("/v1/vault/connections?state={state}"), None)
            .await;
        let keys: Vec<&str> = page.body["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|row| row["key"].as_str())
            .collect();
        assert_eq!(
            keys.contains(&setup.connection_key.as_str()),
            listed,
            "{state}: {keys:?}"
        );
    }
    // The operator hears of it: a warning naming the connection, and a counter to alert on.
    setup
        .gateway
        .output_with_line(&["connection failed", &setup.connection_key])
        .await;
    let metrics = setup.gateway.metrics().await;
    assert!(
        metrics.contains(r#"sluice_connections_failed_total{integration="github"} 1"#),
        "{metrics}"
    );
    // Before it failed, a 401 carried no link; now the answer says where to reconnect it.
    assert!(answer.body.get("action_url").is_none(), "{:?}", answer.body);
    let refused = setup.execute("github", "get_repo", revoked.clone()).await;
    assert_eq!(refused.body["status"], 401, "still the upstream's answer");
    let link = refused.body["action_url"].as_str().expect("action_url");
    assert!(link.contains("/connect/cst_"), "{link}");
    let session = refused.body["connect_session_id"]
        .as_str()
        .expect("connect_session_id");
    let status = setup
        .api(reqwest::Method::GET, &format!("/v1/connect/{session}"), None)
        .await;
    assert_eq!(
        (&status.body["status"], &status.body["integration"]),
        (&json!("pending"), &json!("github")),
        "{:?}",
        status.body
    );
    // A passthrough call on it says the same in headers (its body is the upstream's).
    let passthrough = setup
        .client
        .get(format!("{}/v1/passthrough/repos/acme/revoked", setup.gateway.url))
        .bearer_auth(&setup.key)
        .header("x-sluice-connection-key", &setup.connection_key)
        .send()
        .await
        .expect("passthrough");
    assert_eq!(passthrough.status(), 401);
    let header = |name: &str| {
        passthrough
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert!(
        header("x-sluice-action-url").is_some_and(|url| url.contains("/connect/cst_")),
        "{:?}",
        passthrough.headers()
    );
    assert!(header("x-sluice-connect-session-id").is_some_and(|id| id.starts_with("cs_")));
    setup.get_repo().await;
    assert_eq!(
        setup.wait_for_state(&setup.connection_key, "operational").await,
        "operational"
    );
    setup
        .gateway
        .output_with_line(&["connection works again", &setup.connection_key])
        .await;
    setup.assert_secret_not_logged();
}

/// A basic-auth connection's secret is `user:password` however it is given: POST takes the two
/// fields, and PATCH refuses a secret without the colon (which would fail every call upstream
/// with a 401) as POST does.
#[tokio::test(flavor = "multi_thread")]
async fn a_basic_auth_secret_is_checked_alike_on_create_and_patch() {
    use sluice_fixtures::{Gateway, guests};
    let gateway = Gateway::start(
        std::path::Path::new(crate::common::SLUICE),
        &[guests::BASIC_AUTH],
        Options::default(),
    )
    .await;
    let key = gateway.create_key("test", "*").await;
    let api = |method: Method, path: String, body: Value| {
        let request = reqwest::Client::new()
            .request(method, format!("{}{path}", gateway.url))
            .bearer_auth(&key)
            .json(&body);
        crate::common::send(request)
    };
    let created = api(
        Method::POST,
        "/v1/vault/connections".into(),
        json!({"platform": "versioned", "username": "ann", "password": "first-password"}),
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let path = format!(
        "/v1/vault/connections/{}",
        created.body["key"].as_str().expect("key")
    );

    let no_colon = api(Method::PATCH, path.clone(), json!({"secret": "second-password"})).await;
    assert_eq!(
        (no_colon.status, no_colon.code()),
        (400, "bad_request"),
        "{:?}",
        no_colon.body
    );
    let says = no_colon.body["message"].as_str().unwrap_or_default();
    assert!(
        says.contains("basic auth") && says.contains("user:password"),
        "{says}"
    );
    assert_no_secret(&no_colon, "second-password");

    let with_colon = api(Method::PATCH, path, json!({"secret": "ann:third-password"})).await;
    assert_eq!(with_colon.status, 200, "{:?}", with_colon.body);
}
