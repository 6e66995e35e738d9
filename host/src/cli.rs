//! What each command does; `main` only parses arguments and calls [`run`].

use crate::cache::ArtifactCache;
use crate::config::{
    Cli, Command, ConnectionsCommand, ConnectorsCommand, KeysCommand, OAuthAppsCommand, ServeArgs, StoreArgs,
    VaultCommand,
};
use crate::egress::AddressPolicy;
use crate::http::vault as vault_api;
use crate::http::{App, AppState};
use crate::policy::{LivePolicy, Policy};
use crate::registry::{self, Loader, Registry};
use crate::reload::Reload;
use crate::runtime::manifest::AuthScheme;
use crate::runtime::{Runtime, RuntimeLimits, SPARE_MAX_IDLE};
use crate::upstream::HttpUpstream;
use crate::vault::api_keys::{Environment, KeyOptions, Revocation, Scope, join_ids, key_name};
use crate::vault::checks;
use crate::vault::connections::{ConnectionFilter, ConnectionPatch, ConnectionRecord, NewConnection};
use crate::vault::oauth_apps::NewOAuthApp;
use crate::vault::{KeySource, Vault};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

/// `text` as one word of a shell command line, quoted only where it needs to be, so that a
/// printed command can be pasted as it is.
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:@,%".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Run a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args, None).await,
        Command::Dev(mut args) => {
            // A connector author wants to see each call as it happens.
            args.serve.access_log = true;
            let builds = crate::dev::BuildFailures::default();
            // Held for the life of the process: dropping it stops rebuilding on save.
            let _sources = crate::dev::start(&args.sources, &args.serve.plugins, builds.clone()).await?;
            serve(args.serve, Some(builds)).await
        }
        Command::New { name, dir, lang, sdk } => {
            let scaffolded = crate::dev::scaffold(&dir, &name, lang, sdk.as_deref())?;
            let created = scaffolded.dir;
            println!("{}", created.display());
            for note in &scaffolded.notes {
                eprintln!("note: {note}");
            }
            // `sluice dev` looks in `plugins` unless told otherwise.
            let dev = if dir == std::path::Path::new("plugins") {
                "sluice dev".to_owned()
            } else {
                format!("sluice dev --sources {}", shell_word(&dir.display().to_string()))
            };
            eprintln!("created {}; `{dev}` builds and serves it", created.display());
            // The templates' actions take a bearer token: the first call needs a connection,
            // stored where `sluice dev` publishes the components.
            eprintln!(
                "its actions take a bearer token: `sluice connections add {name} --secret … \
                 --plugins target/sluice-dev/connectors` stores one for the calls"
            );
            Ok(())
        }
        Command::Keys(KeysCommand::Create {
            environment,
            scope,
            name,
            expires_in_days,
            daily_quota,
            per_minute,
            max_in_flight,
            store,
        }) => {
            let vault = open_existing_vault(&store)?;
            let options = KeyOptions {
                environment: environment.parse()?,
                scope: Scope::parse_for_new_key(&scope)?,
                name: key_name(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?,
                expires_at: expires_in_days.map(|days| crate::vault::now() + i64::from(days) * 86_400),
                daily_quota,
                per_minute_limit: per_minute,
                max_in_flight,
            };
            // A typo in the scope makes a key that can call nothing it was meant for. Connectors
            // that ever loaded on this gateway have their hosts approved: warn of other names (a
            // key may still be made before its connector is installed).
            if let Scope::Only(ids) = &options.scope {
                for id in ids {
                    if vault.approved_hosts(id)?.is_none() {
                        eprintln!(
                            "warning: no connector `{id}` has loaded on this gateway yet; check the scope for \
                             a typo (the key is created all the same)"
                        );
                    }
                }
            }
            let created = vault.create_api_key(&options)?;
            println!("{}", created.key);
            eprintln!(
                "created {} key {}… with scope {} (shown once; store it now)",
                created.record.environment, created.record.prefix, created.record.scope
            );
            Ok(())
        }
        Command::Keys(KeysCommand::List { store }) => {
            let vault = open_existing_vault(&store)?;
            let now = crate::vault::now();
            let mut out = String::new();
            let limit = |value: Option<u32>| value.map_or_else(|| "-".to_owned(), |n| n.to_string());
            for key in vault.list_api_keys()? {
                let name = cell(key.name.as_deref().unwrap_or("-"));
                let expires = key
                    .expires_at
                    .map_or_else(|| "never".to_owned(), crate::http::timestamps::rfc3339);
                out += &format!(
                    "{}\tid={}\t{}\t{}\tscope={}\texpires={expires}\tdaily={}\tper_minute={}\tin_flight={}\t{name}\n",
                    key.prefix,
                    key.id,
                    key.environment,
                    key.status(now),
                    key.scope,
                    limit(key.daily_quota),
                    limit(key.per_minute_limit),
                    limit(key.max_in_flight),
                );
            }
            print_out(&out)
        }
        Command::Keys(KeysCommand::Revoke { key, store }) => {
            let vault = open_existing_vault(&store)?;
            // A whole key, pasted as printed at creation, names its row.
            let prefix_or_id = match vault.find_api_key(&key)? {
                Some(found) => found.id.to_string(),
                None => key,
            };
            match vault.revoke_api_key(&prefix_or_id)? {
                Revocation::Revoked(id) => eprintln!("revoked key {id}"),
                // Not echoed: it may be a mistyped whole key.
                Revocation::NoActiveKey => anyhow::bail!(
                    "no active key matches (give the key, its prefix or its id, as `keys list` shows them)"
                ),
                Revocation::Ambiguous(ids) => anyhow::bail!(
                    "several active keys have that prefix (ids {}); none was revoked: give the id or the key",
                    join_ids(&ids)
                ),
            }
            Ok(())
        }
        Command::Logs {
            environment,
            integrations,
            outcome,
            transaction_key,
            request_id,
            connection_keys,
            since_minutes,
            limit,
            store,
        } => {
            let environment: Option<Environment> = environment.as_deref().map(str::parse).transpose()?;
            if let Some(outcome) = &outcome
                && !crate::error::OUTCOMES.contains(&outcome.as_str())
            {
                anyhow::bail!(
                    "--outcome must be one of {}, not `{outcome}`",
                    crate::error::OUTCOMES.join(", ")
                );
            }
            let filter = crate::vault::logs::LogFilter {
                environment: environment.map(|environment| environment.as_str().to_owned()),
                integrations,
                connection_keys,
                outcome,
                transaction_key,
                request_id,
                since_ms: since_minutes.map(|minutes| (crate::vault::now() - i64::from(minutes) * 60) * 1000),
                ..Default::default()
            };
            let vault = open_existing_vault(&store)?;
            let (rows, total) = vault.list_logs(&filter, 1, limit)?;
            let mut out = String::new();
            for row in &rows {
                let column = |value: Option<&str>| cell(value.unwrap_or("-"));
                out.push_str(&format!(
                    "{}\t{}\t{}\t{}/{}\t{}\t{}\tupstream={}\t{:.1}ms\tkey={}\n",
                    crate::http::timestamps::rfc3339_millis(row.created_at_ms),
                    row.transaction_key,
                    row.outcome,
                    column(row.integration.as_deref()),
                    column(row.endpoint.as_deref()),
                    row.http_status,
                    column(row.connection_key.as_deref()),
                    row.upstream_status
                        .map_or_else(|| "-".to_owned(), |status| status.to_string()),
                    row.duration_us as f64 / 1000.0,
                    column(row.key_prefix.as_deref()),
                ));
            }
            print_out(&out)?;
            eprintln!(
                "{} of {total} matching calls in {}",
                rows.len(),
                environment.map_or("test and live", Environment::as_str)
            );
            Ok(())
        }
        Command::Connectors(ConnectorsCommand::Approve {
            id,
            plugins,
            dry_run,
            file,
            store,
        }) => approve(&id, &plugins, file.as_deref(), dry_run, &store).await,
        Command::Vault(VaultCommand::Backup { to, store }) => {
            let vault = open_existing_vault(&store)?;
            let key_id = vault.back_up(&to)?;
            let key = if store.master_key.is_some() {
                "SLUICE_MASTER_KEY".to_owned()
            } else {
                store.data_dir.join(MASTER_KEY_FILE).display().to_string()
            };
            eprintln!(
                "backed up the vault to {}; its secrets are sealed with master key {key_id}: keep {key} \
                 with it (after `vault rotate-key`, back up again with the new key)",
                to.display()
            );
            Ok(())
        }
        Command::Vault(VaultCommand::RotateKey { new_key, store }) => {
            let vault = open_existing_vault(&store)?;
            let old_key_id = vault.primary_key_id();
            let (key_id, count) = vault.rotate_key(new_key.as_deref())?;
            let secrets = if count == 1 { "secret" } else { "secrets" };
            eprintln!("re-encrypted {count} {secrets} under the new master key (id {key_id})");
            if store.master_key.is_none() {
                let key_file = store.data_dir.join(MASTER_KEY_FILE);
                let retired = crate::vault::retired_keys_file(&key_file, &old_key_id);
                eprintln!(
                    "the old key is in {}: backups made before now open only with it (put it beside \
                     them as master.key, or delete it once you keep none)",
                    retired.display()
                );
            }
            Ok(())
        }
        Command::Connections(ConnectionsCommand::Add {
            integration,
            secret,
            identity,
            identity_type,
            base_url,
            environment,
            plugins,
            allow_private_upstreams,
            replace,
            store,
        }) => {
            // The checks the vault API makes, the cheap ones first.
            let environment = environment.parse()?;
            if let Some(kind) = &identity_type {
                checks::check_identity_type("--identity-type", kind).map_err(anyhow::Error::msg)?;
            }
            if let Some(identity) = &identity {
                checks::check_identity("--identity", identity).map_err(anyhow::Error::msg)?;
            }
            let base_url = base_url
                .map(|raw| connection_base_url(&raw, allow_private_upstreams))
                .transpose()?;
            checks::check_secret("--secret", &secret).map_err(anyhow::Error::msg)?;
            let vault = open_existing_vault(&store)?;
            let address_policy = match allow_private_upstreams {
                true => AddressPolicy::AllowPrivate,
                false => AddressPolicy::PublicOnly,
            };
            let connector =
                installed_connector(&integration, &plugins, &vault, &store, address_policy).await?;
            checks::check_secret_for(&integration, &connector.manifest.auth, "--secret", &secret)
                .map_err(anyhow::Error::msg)?;
            // The gateway's policy file is not read here: where it lists `baseUrls`, the base
            // URL may be fine after all, so this is a warning.
            if let Some(Err(reason)) = base_url.as_ref().map(|url| connector.check_base_url(url)) {
                eprintln!(
                    "warning: {reason}: calls on this connection will be refused with egress_denied \
                     unless the gateway's policy allows it"
                );
            }
            // A second connection for the same owner would make every call that names no
            // connection ambiguous (refused): changing a token is a replacement.
            // Of any identity type: a call that names the identity alone would find them all.
            let existing = vault.owner_connections(&integration, environment, identity.as_deref(), None)?;
            // What --replace may replace: with --identity-type, only that type's (user 42 is
            // not organization 42, as calls naming the type tell them apart).
            let same_owner: Vec<&ConnectionRecord> = existing
                .iter()
                .filter(|c| identity_type.is_none() || c.identity_type == identity_type)
                .collect();
            let owner = identity
                .as_deref()
                .map_or("with no identity".to_owned(), |id| format!("for identity `{id}`"));
            match (same_owner.as_slice(), replace) {
                (_, _) if existing.is_empty() => {}
                ([], true) => eprintln!(
                    "warning: {integration} has an active connection {owner} of another identity type in \
                     {environment}: calls that name the identity without its type will now be refused as ambiguous"
                ),
                ([current], true) => {
                    let patch = ConnectionPatch {
                        secret: Some(secret),
                        base_url: base_url.map(Some),
                        ..ConnectionPatch::default()
                    };
                    vault.update_connection(environment, &current.key, &patch)?;
                    println!("{}", current.key);
                    eprintln!("replaced the secret of {integration} connection {}", current.key);
                    return Ok(());
                }
                (several, true) => anyhow::bail!(
                    "{integration} has {} active connections {owner} in {environment} ({}): --replace \
                     does not know which; remove the others first (`sluice connections remove`)",
                    several.len(),
                    several
                        .iter()
                        .map(|c| c.key.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                (_, false) => eprintln!(
                    "warning: {integration} already has an active connection {owner} in {environment} ({}): \
                     calls that name no connection_key will now be refused as ambiguous. To change a \
                     token, run this with --replace instead (the key stays) and remove the new one; or \
                     give each owner its --identity",
                    existing
                        .iter()
                        .map(|c| c.key.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
            let record = vault.add_connection(
                &NewConnection {
                    platform: integration,
                    environment: Some(environment),
                    identity,
                    identity_type,
                    base_url,
                    secret,
                    ..NewConnection::default()
                },
                None,
            )??;
            println!("{}", record.key);
            Ok(())
        }
        Command::Connections(ConnectionsCommand::List {
            integration,
            identity,
            environment,
            json,
            store,
        }) => {
            let filter = ConnectionFilter {
                platforms: integration.into_iter().collect(),
                identity,
                ..ConnectionFilter::default()
            };
            list_connections(&open_existing_vault(&store)?, environment, &filter, json)
        }
        Command::Connections(ConnectionsCommand::Remove {
            connection,
            environment,
            store,
        }) => remove_connection(&open_existing_vault(&store)?, environment, &connection),
        Command::OauthApps(command) => oauth_apps(command).await,
    }
}

/// The environment `--env` names, or both.
fn environments(chosen: Option<Environment>) -> Vec<Environment> {
    chosen.map_or_else(|| vec![Environment::Test, Environment::Live], |one| vec![one])
}

/// `sluice connections list`: one tab-separated line per connection, or with `json` an array
/// of connections as the vault API shows them. Records never carry a secret in the clear, and
/// none of their sealed secrets is printed.
fn list_connections(
    vault: &Vault,
    environment: Option<Environment>,
    filter: &ConnectionFilter,
    json: bool,
) -> anyhow::Result<()> {
    let mut records = Vec::new();
    for environment in environments(environment) {
        // One page holding every row: a single read, not pages that shift when a connection
        // is added or removed between them.
        records.extend(vault.list_connections(environment, filter, 1, u32::MAX)?.rows);
    }
    let mut out = String::new();
    if json {
        let rows: Vec<_> = records.iter().map(vault_api::view).collect();
        out = serde_json::to_string_pretty(&rows)?;
        out.push('\n');
    } else {
        for record in &records {
            let cells: [&str; 8] = [
                &record.key,
                &record.platform,
                record.environment.as_str(),
                record.identity.as_deref().unwrap_or("-"),
                record.identity_type.as_deref().unwrap_or("-"),
                &record.state,
                if record.active { "active" } else { "inactive" },
                &crate::http::timestamps::rfc3339(record.created_at),
            ];
            out += &cells.map(cell).join("\t");
            out.push('\n');
        }
    }
    print_out(&out)
}

/// A field of a tab-separated line with its control characters escaped: a tab or line break
/// in an identity (free text in the vault API) must not split a connection across columns or
/// lines, nor an escape sequence reach the terminal.
fn cell(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// Write a listing to stdout. A reader that stops early (`| head`) ends the listing quietly,
/// where `println!` would panic.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}

/// `sluice connections remove`: delete the connection `id_or_key` names, in `--env` or in
/// whichever environment holds it (keys and ids are unique across both).
fn remove_connection(vault: &Vault, environment: Option<Environment>, id_or_key: &str) -> anyhow::Result<()> {
    for environment in environments(environment) {
        let Some(record) = vault.get_connection(environment, id_or_key)? else {
            continue;
        };
        // Deleted by its id: the record read is the one removed (or none, if it went meanwhile).
        if vault.delete_connection(environment, &record.public_id())? {
            eprintln!(
                "removed connection {} ({}: {}, {}, identity {})",
                cell(&record.key),
                record.public_id(),
                cell(&record.platform),
                record.environment,
                cell(record.identity.as_deref().unwrap_or("-"))
            );
            return Ok(());
        }
    }
    let place = match environment {
        Some(environment) => format!("the {environment} environment"),
        None => "the test or live environment".into(),
    };
    anyhow::bail!("no connection `{}` in {place}", cell(id_or_key))
}

/// `sluice oauth-apps set | list | remove`.
async fn oauth_apps(command: OAuthAppsCommand) -> anyhow::Result<()> {
    match command {
        OAuthAppsCommand::Set {
            integration,
            client_id,
            client_secret,
            redirect_url,
            scopes,
            authorize_url,
            token_url,
            allow_private_upstreams,
            plugins,
            store,
        } => {
            // As the admin API checks: an app for a connector that does not use OAuth 2.0 (or
            // does not exist) would never be used.
            let vault = open_existing_vault(&store)?;
            let connector =
                installed_connector(&integration, &plugins, &vault, &store, AddressPolicy::PublicOnly)
                    .await?;
            if !matches!(connector.manifest.auth, AuthScheme::OAuth2(_)) {
                anyhow::bail!("`{integration}` does not use OAuth 2.0: it takes no OAuth app");
            }
            // The admin API's checks.
            let url = |flag: &str, value: Option<String>| {
                value
                    .map(|u| checks::parse_oauth_url(&format!("--{flag}"), &u).map_err(anyhow::Error::msg))
                    .transpose()
            };
            let provider_url = |flag: &str, value: Option<String>| {
                value
                    .map(|u| {
                        checks::parse_provider_url(&format!("--{flag}"), &u, allow_private_upstreams)
                            .map_err(anyhow::Error::msg)
                    })
                    .transpose()
            };
            if client_id.trim().is_empty() {
                anyhow::bail!("--client-id must not be empty");
            }
            checks::check_secret("--client-secret", &client_secret).map_err(anyhow::Error::msg)?;
            for scope in &scopes {
                checks::check_oauth_scope("--scope", scope).map_err(anyhow::Error::msg)?;
            }
            let app = NewOAuthApp {
                platform: integration,
                client_id,
                client_secret,
                redirect_url: url("redirect-url", redirect_url)?,
                scopes,
                authorize_url: provider_url("authorize-url", authorize_url)?,
                token_url: provider_url("token-url", token_url)?,
            };
            let stored = vault.put_oauth_app(&app)?;
            eprintln!(
                "registered the {} OAuth app (client id {})",
                stored.platform, stored.client_id
            );
            Ok(())
        }
        OAuthAppsCommand::List { store } => {
            let mut out = String::new();
            for app in open_existing_vault(&store)?.list_oauth_apps()? {
                // Where the client secret and the users' tokens go is the operator's to see.
                let or_default =
                    |url: Option<url::Url>| url.map_or_else(|| "(default)".to_owned(), |u| u.to_string());
                out += &format!(
                    "{}\tclient_id={}\tscopes={}\tredirect_url={}\tauthorize_url={}\ttoken_url={}\n",
                    app.platform,
                    cell(&app.client_id),
                    cell(&app.scopes.join(" ")),
                    or_default(app.redirect_url),
                    or_default(app.authorize_url),
                    or_default(app.token_url)
                );
            }
            print_out(&out)
        }
        OAuthAppsCommand::Remove { integration, store } => {
            if !open_existing_vault(&store)?.delete_oauth_app(&integration)? {
                anyhow::bail!("no OAuth app is registered for `{integration}`");
            }
            eprintln!("removed the {integration} OAuth app");
            Ok(())
        }
    }
}

/// Approve the outbound hosts the component for connector `id` in `plugins` declares (the one
/// named `only_file`, which must be given when several declare it), and that it serves `id`.
async fn approve(
    id: &str,
    plugins: &std::path::Path,
    only_file: Option<&str>,
    dry_run: bool,
    store: &StoreArgs,
) -> anyhow::Result<()> {
    let vault = open_existing_vault(store)?;
    let runtime = describing_runtime(&vault, store, AddressPolicy::PublicOnly)?;
    let mut candidates = Vec::new();
    // Why files did not load: said when no file serves `id`, the one the operator meant
    // among them maybe.
    let mut failures = Vec::new();
    for path in registry::component_files(plugins).await? {
        if only_file.is_some_and(|only| only != registry::file_name(&path)) {
            continue;
        }
        let loaded = match registry::read_component(&path).await {
            Ok(bytes) => runtime
                .load(bytes, &Policy::default())
                .await
                .map_err(|e| e.to_string()),
            Err(error) => Err(error),
        };
        match loaded {
            Ok(connector) if connector.manifest.id == id => candidates.push((path, connector)),
            Ok(_) => {}
            Err(error) => failures.push(format!("{}: {error}", registry::file_name(&path))),
        }
    }
    // Approving one file of several could hand the connector to another publisher's file
    // that claims its id: the operator names the one meant.
    if candidates.len() > 1 {
        let names: Vec<String> = candidates
            .iter()
            .map(|(path, _)| registry::file_name(path))
            .collect();
        anyhow::bail!(
            "{} files in {} declare connector `{id}`: {}; name the one to approve with --file",
            names.len(),
            plugins.display(),
            names.join(", ")
        );
    }
    if let Some((path, connector)) = candidates.pop() {
        let declared = registry::hosts_for_approval(&connector);
        let previous: Vec<String> = vault
            .approved_hosts(id)?
            .unwrap_or_default()
            .into_iter()
            .filter(|entry| !crate::vault::approvals::is_file_entry(entry))
            .collect();
        let file = registry::file_name(&path);
        for host in &declared {
            if !previous.contains(host) {
                println!("+ {host}");
            }
        }
        for host in &previous {
            if !declared.contains(host) {
                println!("- {host}");
            }
        }
        let placement = |entries: &[String]| {
            entries
                .iter()
                .find_map(|entry| entry.strip_prefix(crate::vault::approvals::PLACEMENT_ENTRY))
                .map(str::to_owned)
        };
        if let (Some(before), Some(after)) = (placement(&previous), placement(&declared))
            && before != after
        {
            eprintln!(
                "note: {id} would send the credential in {after} instead of {before}; connections keep \
                 their secrets as stored, so one stored for the old place (`Token …` for an Authorization \
                 header, say) may need storing again (`sluice connections add {id} --replace …`)"
            );
        }
        if dry_run {
            eprintln!(
                "{id} {} ({}) asks for the hosts above; nothing was approved (--dry-run)",
                connector.manifest.version,
                path.display()
            );
            return Ok(());
        }
        let hosts_change = declared.iter().any(|host| !previous.contains(host))
            || previous.iter().any(|host| !declared.contains(host));
        let file_changes = !vault.files_of(id)?.contains(&file);
        vault.approve_hosts(id, &declared)?;
        // This file serves `id` from now on, should it have been approved as another.
        vault.approve_file(id, &file)?;
        // A touch is a change to a watching gateway, which then loads the file (its content is
        // unchanged, so nothing else happens).
        let touched = std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_modified(std::time::SystemTime::now()));
        let when = match touched {
            Ok(()) => "a gateway watching the directory loads it within a second; otherwise send it SIGHUP",
            Err(_) => "send the gateway SIGHUP (or restart it) to load it",
        };
        let what = match (hosts_change, file_changes) {
            (true, true) => format!("approved the outbound hosts of {id}, and {file} to serve it"),
            (true, false) => format!("approved the outbound hosts of {id}"),
            (false, true) => format!("approved {file} to serve {id} (its hosts were approved already)"),
            (false, false) => format!("nothing new to approve: {id}'s hosts and file were approved already"),
        };
        eprintln!(
            "{what}: {} ({}); {when}",
            connector.manifest.version,
            path.display()
        );
        return Ok(());
    }
    let why = match failures.is_empty() {
        true => String::new(),
        false => format!("; files that did not load: {}", failures.join("; ")),
    };
    match only_file {
        Some(only) => anyhow::bail!(
            "no loadable component named {only} for connector `{id}` in {}{why}",
            plugins.display()
        ),
        None => anyhow::bail!(
            "no loadable component for connector `{id}` in {}{why}",
            plugins.display()
        ),
    }
}

/// A runtime that only reads manifests (`describe()`, one at a time), through the gateway's
/// artifact cache (so usually compiling nothing), under `address_policy`. The gateway's memory
/// limit is not known here: one it may have raised for a large connector must not hide it.
fn describing_runtime(
    vault: &Vault,
    store: &StoreArgs,
    address_policy: AddressPolicy,
) -> anyhow::Result<Runtime> {
    let limits = RuntimeLimits {
        max_instances: 1,
        memory_bytes: 1 << 30,
        address_policy,
        ..RuntimeLimits::default()
    };
    Ok(
        Runtime::new(limits, Arc::new(HttpUpstream::new(address_policy)?))?.with_cache(ArtifactCache::open(
            &store.data_dir.join("cache"),
            vault.derive_key("artifact-cache"),
        )?),
    )
}

/// `connections add --base-url`, checked as the vault API checks `baseUrl`.
fn connection_base_url(raw: &str, allow_private_upstreams: bool) -> anyhow::Result<url::Url> {
    checks::parse_base_url("--base-url", raw, allow_private_upstreams).map_err(|error| {
        let hint = if raw.starts_with("http:") && !allow_private_upstreams {
            " (plain http is allowed with --allow-private-upstreams, for a gateway run with it)"
        } else {
            ""
        };
        anyhow::anyhow!("{error}{hint}")
    })
}

/// Connector `id` from its component in `plugins`, loaded as `serve` loads it (compiled through
/// the gateway's artifact cache, so usually not compiled at all), under `address_policy` and no
/// operator policy: for what its manifest says. The file named after the connector is tried
/// first: that is the usual layout, and a directory of large connectors is not read whole to
/// add one credential.
async fn installed_connector(
    id: &str,
    plugins: &std::path::Path,
    vault: &Vault,
    store: &StoreArgs,
    address_policy: AddressPolicy,
) -> anyhow::Result<crate::runtime::LoadedConnector> {
    let not_found = || {
        format!(
            "no integration named `{id}` in the plugins directory {}: check the name, or pass the \
             --plugins directory of your gateway (`sluice dev` serves from {})",
            plugins.display(),
            crate::config::DEV_COMPONENTS
        )
    };
    let mut files = registry::component_files(plugins).await.with_context(not_found)?;
    if let Some(named) = files
        .iter()
        .position(|path| path.file_stem().is_some_and(|stem| stem == id))
    {
        let named = files.remove(named);
        files.insert(0, named);
    }
    let runtime = describing_runtime(vault, store, address_policy)?;
    for path in files {
        let Ok(bytes) = registry::read_component(&path).await else {
            continue;
        };
        // A component that does not load is not served either: skip it, as `serve` does.
        if let Ok(connector) = runtime.load(bytes, &Policy::default()).await
            && connector.manifest.id == id
        {
            return Ok(connector);
        }
    }
    anyhow::bail!(not_found())
}

/// Shortest admin key accepted without a warning.
const MIN_ADMIN_KEY_CHARS: usize = 16;

/// The database file in a data directory.
const DATABASE_FILE: &str = "sluice.db";

/// The master key file in a data directory, used unless `SLUICE_MASTER_KEY` is set.
const MASTER_KEY_FILE: &str = "master.key";

/// Open (creating it on first start) the vault in the data directory: for `serve` and `dev`.
fn open_vault(store: &StoreArgs) -> anyhow::Result<Vault> {
    create_private_data_dir(&store.data_dir)?;
    let key_file = store.data_dir.join(MASTER_KEY_FILE);
    let database = store.data_dir.join(DATABASE_FILE);
    // A key without its database is what a restore that missed the database (or copied an
    // empty file) leaves: the gateway starts anew, and every key and connection seems gone.
    if store.master_key.is_none() && key_file.exists() && !holds_data(&database) {
        tracing::warn!(
            "{} exists but {} is missing or empty: starting a new, empty vault. Restoring a \
             backup? Stop the gateway and put the backup at {}",
            key_file.display(),
            database.display(),
            database.display()
        );
    }
    let key_source = match &store.master_key {
        Some(key) => KeySource::Explicit(key.clone()),
        None => KeySource::File(key_file),
    };
    Vault::open(&database, &key_source)
}

/// Whether `database` is a file with something in it.
fn holds_data(database: &std::path::Path) -> bool {
    std::fs::metadata(database).is_ok_and(|metadata| metadata.is_file() && metadata.len() > 0)
}

/// Create the data directory if it does not exist, readable by this user only: it holds the
/// database (sealed secrets, key hashes, the request log) and, by default, the master key. An
/// existing directory keeps the permissions its operator gave it.
fn create_private_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))
}

/// Open the vault of a gateway that has started at least once. Commands that manage keys and
/// connections never create one: a key created in a new, empty database (a mistyped or
/// forgotten `--data-dir`) would never work on the running gateway.
fn open_existing_vault(store: &StoreArgs) -> anyhow::Result<Vault> {
    let database = store.data_dir.join(DATABASE_FILE);
    if !holds_data(&database) {
        anyhow::bail!(
            "no Sluice database at {} (or an empty file): start `sluice serve` once with this \
             --data-dir, or pass the --data-dir (SLUICE_DATA_DIR) of your gateway",
            database.display()
        );
    }
    open_vault(store)
}

/// How long an exiting gateway waits for the request log writer's last batch.
const LOG_WRITER_FINISH: Duration = Duration::from_secs(10);

/// Run the gateway; under `sluice dev`, `dev_builds` are the connectors whose build failed.
async fn serve(mut args: ServeArgs, dev_builds: Option<crate::dev::BuildFailures>) -> anyhow::Result<()> {
    // Settings first: a mistake in them stops the start before anything is created.
    let policy = LivePolicy::load(args.policy.clone())?;
    if let Err(error) = std::fs::read_dir(&args.plugins) {
        anyhow::bail!(
            "cannot read the plugins directory {}: {error}; create it, or pass --plugins with the \
             directory of your connector components (`*.wasm`)",
            args.plugins.display()
        );
    }
    // The watcher reports absolute paths: files loaded at start must carry the same ones, or a
    // changed file would be taken for another (`--plugins connectors` is relative). Absolute,
    // not resolved: a symlink to a release directory is followed again when it is swapped.
    args.plugins = std::path::absolute(&args.plugins)
        .with_context(|| format!("the plugins directory {}", args.plugins.display()))?;
    if let Some(key) = &args.admin_key
        && key.trim().chars().count() < MIN_ADMIN_KEY_CHARS
    {
        tracing::warn!(
            "the admin key is shorter than {MIN_ADMIN_KEY_CHARS} characters: whoever guesses it controls \
             the gateway; use a long random one (e.g. `openssl rand -hex 32`)"
        );
    }
    if let Some(address) = args.ops_listen
        && address == args.listen
        && address.port() != 0
    {
        anyhow::bail!(
            "--ops-listen {address} is the --listen address: give the probes and metrics an address of their own"
        );
    }
    // Bound before connectors compile (seconds on a first start): a port in use is reported
    // at once, and clients that connect meanwhile wait in the backlog until serving starts.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    let ops_listener = match args.ops_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("binding --ops-listen {address}"))?,
        ),
        None => None,
    };
    let vault = open_vault(&args.store)?;
    // What this gateway runs with, in one line, for whoever reads the log after an incident.
    tracing::info!(
        version = %env!("CARGO_PKG_VERSION"),
        data_dir = %args.store.data_dir.display(),
        plugins = %args.plugins.display(),
        admin_api = args.admin_key.is_some(),
        policy = %args.policy.as_deref().map_or_else(|| "none".to_owned(), |path| path.display().to_string()),
        private_upstreams = args.allow_private_upstreams,
        "starting sluice"
    );
    if vault.count_api_keys()? == 0 {
        let created = vault.create_api_key(&KeyOptions::new(Environment::Test, Scope::All))?;
        println!(
            "No API keys yet; created a test key (shown once):\n\n    {}\n",
            created.key
        );
    }
    let address_policy = if args.allow_private_upstreams {
        tracing::warn!("--allow-private-upstreams: connectors may reach loopback and private networks");
        AddressPolicy::AllowPrivate
    } else {
        AddressPolicy::PublicOnly
    };
    let limits = RuntimeLimits {
        memory_bytes: args.memory_limit_mib << 20,
        invocation_timeout: Duration::from_millis(args.timeout_ms),
        max_instances: args.max_instances,
        max_in_flight_per_connector: args.max_in_flight_per_connector,
        max_upstream_requests: args.max_upstream_requests,
        upstream_timeout: Duration::from_millis(args.upstream_timeout_ms),
        max_response_body: args.max_response_mib << 20,
        max_request_body: args.max_request_body_mib << 20,
        max_log_lines: args.max_log_lines,
        address_policy,
        ..RuntimeLimits::default()
    };
    let upstream = Arc::new(HttpUpstream::new(address_policy)?);
    let mut runtime = Runtime::new(limits, upstream).with_context(|| {
        format!(
            "setting up {} connector instances of {} MiB (--max-instances, --memory-limit-mib): \
             their memory is reserved up front; lower them",
            args.max_instances, args.memory_limit_mib
        )
    })?;
    let mut cache = None;
    if !args.no_cache {
        let opened = ArtifactCache::open(
            &args.store.data_dir.join("cache"),
            vault.derive_key("artifact-cache"),
        )?;
        runtime = runtime.with_cache(opened.clone());
        cache = Some(opened);
    }
    let runtime = Arc::new(runtime);
    let registry = Arc::new(Registry::default());
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let loader = Loader {
        runtime: runtime.clone(),
        policy: Arc::new(policy),
        vault: vault.clone(),
        metrics: metrics.clone(),
        approve_command: format!(
            "sluice connectors approve --plugins {} --data-dir {}",
            args.plugins.display(),
            args.store.data_dir.display()
        ),
        dev_builds: dev_builds.clone(),
    };
    // Loaded while the gateway already answers (see `start_loading`).
    registry.set_starting(true);

    if args.public_url.is_none() && local.ip().is_unspecified() {
        tracing::warn!(
            listen = %local,
            "listening on every interface without --public-url: connect links, action_url and the \
             OAuth redirect will name http://{local}, which no browser can open; pass --public-url \
             with the address users reach this gateway at"
        );
    }
    let public_url = args
        .public_url
        .unwrap_or_else(|| format!("http://{local}"))
        .trim_end_matches('/')
        .to_owned();
    let (logs, log_writer) = crate::vault::logs::start_writer(vault.store())?;
    spawn_log_pruning(vault.clone(), args.log_retention_days);
    spawn_spare_expiry(registry.clone());
    let tasks = tokio_util::task::TaskTracker::new();
    let refresher = Arc::new(crate::oauth::refresh::TokenRefresher::for_runtime(
        vault.clone(),
        &runtime,
        args.oauth_refresh_margin_secs,
        metrics.clone(),
        tasks.clone(),
    ));
    let (stop_streams, stopping) = tokio::sync::watch::channel(false);
    let app = AppState::new(App {
        runtime,
        registry,
        vault,
        public_url,
        usage: Arc::default(),
        logs,
        admin_key_hash: args
            .admin_key
            .as_deref()
            .map(|key| crate::vault::crypto::api_key_hash(key.trim())),
        max_connections_per_environment: args.max_connections_per_env,
        metrics,
        max_passthrough_body: args.max_passthrough_body_mib << 20,
        max_call_body: args.max_call_body_mib << 20,
        max_tool_result: args.max_tool_result_kib << 10,
        refresher,
        connect_session_ttl: args.connect_session_ttl_secs,
        max_in_flight_per_key: args.max_in_flight_per_key,
        dev_builds,
        access_log: args.access_log,
        busy_poll: args
            .busy_poll_us
            .map(|micros| crate::busy_poll::BusyPoll::start(Duration::from_micros(micros))),
        cors_origins: args.cors_origins,
        metrics_on_api: args.ops_listen.is_none(),
        stopping,
        event_streams: Arc::new(tokio::sync::Semaphore::new(crate::http::max_event_streams(
            args.max_connections,
        ))),
        tasks,
        openapi: Default::default(),
    });
    if args.busy_poll_us.is_none()
        && let Some(hint) = crate::vcpu_idle::halting_hint()
    {
        tracing::info!("{hint}");
    }
    let stop_signals = StopSignals::listen();
    let loading = FirstLoad {
        loader,
        registry: app.registry.clone(),
        plugins: args.plugins.clone(),
        watch: !args.no_watch,
        cache,
        local,
        hangups: listen_for_hangups(),
    };
    let first_load = tokio::spawn(loading.run());
    // A gateway whose first load broke off would answer `not_ready` for ever while its
    // liveness probe passes: better to stop, and be started again.
    tokio::spawn(async move {
        if let Err(failure) = first_load.await
            && failure.is_panic()
        {
            tracing::error!("loading the connectors failed unexpectedly (a bug); stopping");
            std::process::exit(1);
        }
    });
    let ops = ops_listener
        .map(|listener| serve_ops(listener, app.clone()))
        .transpose()?;
    tracing::info!(address = %local, "accepting connections while the connectors load");
    let options = crate::server::ServeOptions {
        threads: args.serve_threads,
        max_connections: args.max_connections,
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        ..crate::server::ServeOptions::default()
    };
    let shutdown = async move {
        stop_signals.shutdown_requested().await;
        let _ = stop_streams.send(true);
    };
    crate::serve(listener, app, options, shutdown).await?;
    // Probes answer until the API has drained; then the process is going.
    if let Some(ops) = ops {
        ops.abort();
    }
    // Served and drained: the last request-log rows are queued; write them before exiting.
    if !log_writer.finish(LOG_WRITER_FINISH).await {
        tracing::warn!("the request log writer did not finish in time; its last rows may be lost");
    }
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Serve `--ops-listen`: probes and metrics on a listener of their own, on this runtime, apart
/// from the API's connection limit and serving threads.
fn serve_ops(
    listener: tokio::net::TcpListener,
    app: crate::http::AppState,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let address = listener.local_addr()?;
    tracing::info!(%address, "serving /healthz, /readyz and /metrics on the ops address");
    let router = crate::http::ops_router(app);
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "the ops address stopped serving");
        }
    }))
}

/// The first load of the plugins directory, and what follows it: hot reload, `SIGHUP`, and the
/// readiness line. It runs while the gateway already answers: compiling connectors takes
/// seconds on a first start (a Python one ~8 s), and a gateway that did not answer its
/// liveness probe (`/healthz`) or `SIGTERM` meanwhile would be killed and started again, and
/// compile again. Until it is done the API answers `503 not_ready` (`/readyz` too).
struct FirstLoad {
    loader: Loader,
    registry: Arc<Registry>,
    plugins: std::path::PathBuf,
    watch: bool,
    cache: Option<ArtifactCache>,
    local: std::net::SocketAddr,
    hangups: Hangups,
}

impl FirstLoad {
    async fn run(self) {
        let Self {
            loader,
            registry,
            plugins,
            watch,
            cache,
            local,
            hangups,
        } = self;
        let started = std::time::Instant::now();
        if let Err(error) = registry::load_directory(&loader, &registry, &plugins).await {
            tracing::error!(error = %format!("{error:#}"), "reading the plugins directory failed");
        }
        let load_millis = started.elapsed().as_millis() as u64;
        // After the loads, which mark the entries they used: those of connectors still here stay.
        if let Some(cache) = cache {
            tokio::task::spawn_blocking(move || cache.delete_unused());
        }
        warn_of_policy_mistakes(&loader.policy, &registry, loader.runtime.limits());
        match crate::reload::start(&plugins, loader.clone(), registry.clone(), watch) {
            // Held until shutdown: dropping it stops hot reload.
            Ok(reloader) => {
                // Files added, changed or removed while the first load ran were read before
                // the watch began: look once more (unchanged files cost a hash each). Under
                // `--no-watch` the directory is read again only on SIGHUP, as documented.
                if watch {
                    reloader.rescan(crate::reload::Reload::Changed);
                }
                spawn_rescan_on_hangup(reloader, loader, registry.clone(), hangups)
            }
            Err(error) => tracing::error!(
                error = %format!("{error:#}"),
                "cannot watch the plugins directory: hot reload and SIGHUP are off; restart to pick up changes"
            ),
        }
        let loaded = registry.snapshot();
        if loaded.is_empty() && registry.failures().is_empty() {
            tracing::warn!(
                plugins = %plugins.display(),
                "no connector components (*.wasm) in the plugins directory: there is nothing to call until one is added"
            );
        }
        tracing::info!(
            loaded = loaded.len(),
            failed = registry.failures().len(),
            millis = load_millis,
            plugins = %plugins.display(),
            "connectors loaded"
        );
        registry.set_starting(false);
        // Machine-readable readiness line: tests and scripts wait for it.
        println!("sluice listening on http://{local}");
        tracing::info!(address = %local, connectors = ?loaded.keys().collect::<Vec<_>>(), "listening");
    }
}

/// Every few seconds: drop spare instances nobody has taken for [`SPARE_MAX_IDLE`], so a
/// connector that is no longer called gives back their memory and pool slots.
fn spawn_spare_expiry(registry: Arc<Registry>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SPARE_MAX_IDLE / 4);
        loop {
            tick.tick().await;
            let dropped = registry.drop_idle_spares(SPARE_MAX_IDLE);
            if dropped > 0 {
                tracing::debug!(dropped, "idle spare instances dropped");
            }
        }
    });
}

/// At start and then hourly: delete request-log rows past the retention period, connect
/// sessions that expired over a day ago and replies kept for idempotency keys over a day old.
fn spawn_log_pruning(vault: Vault, retention_days: u32) {
    tokio::spawn(async move {
        let mut every_hour = tokio::time::interval(Duration::from_secs(3600));
        loop {
            every_hour.tick().await;
            let cutoff_ms = (crate::vault::now() - i64::from(retention_days) * 86_400) * 1000;
            match vault.run(move |vault| vault.prune_logs(cutoff_ms)).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "old request log rows deleted"),
                Err(error) => {
                    tracing::error!(error = %format!("{error:#}"), "pruning the request log failed")
                }
            }
            // Finished and expired connect sessions are kept a day for polling, then dropped.
            let session_cutoff = crate::vault::now() - 86_400;
            if let Err(error) = vault
                .run(move |vault| vault.prune_connect_sessions(session_cutoff))
                .await
            {
                tracing::error!(error = %format!("{error:#}"), "pruning connect sessions failed")
            }
            let replies_cutoff = crate::vault::now() - crate::vault::idempotency::RETENTION_SECONDS;
            if let Err(error) = vault
                .run(move |vault| vault.prune_idempotent_calls(replies_cutoff))
                .await
            {
                tracing::error!(error = %format!("{error:#}"), "pruning kept idempotent replies failed")
            }
        }
    });
}

/// `SIGHUP`, listened for from the start: its default action ends the process, and one that
/// comes while the connectors load is acted on once they have.
#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

fn listen_for_hangups() -> Hangups {
    #[cfg(unix)]
    return match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGHUP");
            None
        }
    };
    #[cfg(not(unix))]
    return ();
}

/// On `SIGHUP` (the conventional "reload" signal), read the policy file again and look at every
/// component file again: a connector whose hosts were just approved loads, also under
/// `--no-watch`, and a changed policy applies without a restart. A policy file that became
/// invalid is reported and the one in force stays.
fn spawn_rescan_on_hangup(
    reloader: crate::reload::Reloader,
    loader: Loader,
    registry: Arc<Registry>,
    hangups: Hangups,
) {
    let policy = loader.policy.clone();
    #[cfg(unix)]
    tokio::spawn(async move {
        let Some(mut hangups) = hangups else {
            return;
        };
        while hangups.recv().await.is_some() {
            // A policy applies when a connector loads: a changed one reloads them all.
            let reload = match policy.reread() {
                Ok(true) => {
                    tracing::info!("SIGHUP: the policy changed; reloading every connector under it");
                    warn_of_policy_mistakes(&policy, &registry, loader.runtime.limits());
                    Reload::Everything
                }
                Ok(false) => {
                    tracing::info!("SIGHUP: looking at every connector file again");
                    Reload::Changed
                }
                Err(error) => {
                    tracing::error!(
                        error = %format!("{error:#}"),
                        "SIGHUP: the policy file is not valid; the policy in force stays"
                    );
                    Reload::Changed
                }
            };
            reloader.rescan(reload);
        }
    });
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _kept_for_the_life_of_the_gateway = (reloader, policy, registry);
        std::future::pending::<()>().await
    });
}

/// Warn of what in the policy is probably not what the operator meant. Not errors: a connector
/// may be added later by hot reload, and a limit above the gateway's is harmless. But a typo in
/// an id would leave a connector without the limits meant for it, and a limit meant to raise the
/// gateway's for one connector does nothing.
fn warn_of_policy_mistakes(policy: &LivePolicy, registry: &Registry, global: &RuntimeLimits) {
    let policy = policy.current();
    let unknown = policy.unknown_connectors(registry.snapshot().keys());
    if !unknown.is_empty() {
        tracing::warn!(
            ?unknown,
            "the policy has entries for connectors that are not loaded; they apply only if such a \
             connector is added later (check the ids for typos)"
        );
    }
    let above = policy.above_global_limits(global);
    if !above.is_empty() {
        tracing::warn!(
            ?above,
            "the policy sets limits above the gateway's own; a policy only tightens, so the \
             gateway's apply (raise them with serve's flags)"
        );
    }
}

/// Ctrl-C and SIGTERM, listened for from the moment the gateway says it is listening. The
/// listeners are made once and kept: a signal is only seen by a listener that existed when it
/// arrived, so one made after the first signal could miss a quick second one.
struct StopSignals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen_for = |kind: SignalKind, name: &str| {
                signal(kind)
                    .inspect_err(|error| tracing::error!(%error, "cannot listen for {name}"))
                    .ok()
            };
            Self {
                terminate: listen_for(SignalKind::terminate(), "SIGTERM"),
                interrupt: listen_for(SignalKind::interrupt(), "Ctrl-C"),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Resolves on Ctrl-C or SIGTERM. A second one while the gateway drains ends the process
    /// at once, as an operator who asks twice means.
    async fn shutdown_requested(mut self) {
        self.next().await;
        tracing::info!("shutdown requested; draining in-flight requests (a second signal exits at once)");
        tokio::spawn(async move {
            self.next().await;
            tracing::warn!("second shutdown request: exiting without waiting for in-flight requests");
            std::process::exit(1);
        });
    }

    /// The next Ctrl-C or SIGTERM.
    #[cfg(unix)]
    async fn next(&mut self) {
        async fn received(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = received(&mut self.terminate) => {},
            () = received(&mut self.interrupt) => {},
        }
    }

    #[cfg(not(unix))]
    async fn next(&mut self) {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_paths_paste_into_a_shell_as_one_word() {
        assert_eq!(shell_word("../conns/x_y-1"), "../conns/x_y-1");
        assert_eq!(shell_word("sp ace/conns"), "'sp ace/conns'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("$HOME"), "'$HOME'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn a_new_data_directory_is_private_and_an_existing_one_is_left_alone() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let created = root.path().join("deep/sluice-data");
        create_private_data_dir(&created)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&created)?.permissions().mode() & 0o777, 0o700);
            let existing = root.path().join("shared");
            std::fs::create_dir(&existing)?;
            std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o750))?;
            create_private_data_dir(&existing)?;
            assert_eq!(std::fs::metadata(&existing)?.permissions().mode() & 0o777, 0o750);
        }
        Ok(())
    }
}
