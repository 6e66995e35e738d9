//! The JavaScript and Python templates of `sluice new`: files in `host/templates/`, embedded in
//! the binary, with `{{id}}` and `{{title}}` filled in.
//!
//! The pinned build tools are not copies: `requirements.txt` is `plugins/slack`'s and
//! `package-lock.json` is `plugins/stripe`'s (renamed), so a new connector installs exactly the
//! tools the repository's own connectors are built and tested with, and shares their
//! installation.
//!
//! A script connector sources `../lib/toolchain.sh`, which also says where the contract (WIT)
//! and the tools are. Under this repository's `plugins/` that file exists; anywhere else `sluice
//! new` writes it there once, with the contract the binary speaks in `lib/wit/`, so that a user
//! with only the `sluice` binary (and node or python3) can build.

use super::{Language, Scaffolded, enclosing_workspace};
use anyhow::{Context, bail};
use std::io::Write;
use std::path::Path;

const JS_CONNECTOR: &str = include_str!("../../templates/javascript/connector.js");
const JS_PACKAGE: &str = include_str!("../../templates/javascript/package.json");
const JS_BUILD: &str = include_str!("../../templates/javascript/build.sh");
const JS_TEST: &str = include_str!("../../templates/javascript/connector.test.mjs");
const JS_TESTING_HOST: &str = include_str!("../../templates/javascript/testing/host.mjs");
const JS_TESTING_HOOKS: &str = include_str!("../../templates/javascript/testing/hooks.mjs");
const JS_TESTING_REGISTER: &str = include_str!("../../templates/javascript/testing/register.mjs");
/// The tools `plugins/stripe` pins; only the root package's name changes.
const STRIPE_LOCK: &str = include_str!("../../../plugins/stripe/package-lock.json");
const PY_APP: &str = include_str!("../../templates/python/app.py");
const PY_BUILD: &str = include_str!("../../templates/python/build.sh");
/// The tools `plugins/slack` pins, unchanged.
const PY_REQUIREMENTS: &str = include_str!("../../../plugins/slack/requirements.txt");
/// The shared build helpers, written beside connectors outside the repository.
const TOOLCHAIN: &str = include_str!("../../../plugins/lib/toolchain.sh");
/// The contract the templates import (`sluice:connector/...@0.2.0`).
const WIT: &str = include_str!("../../../wit/since_v0.2.0/connector.wit");

/// The name of the directory beside the connectors that holds the shared build helpers.
const LIB: &str = "lib";

/// `{{id}}` and `{{title}}` filled in.
fn fill(template: &str, id: &str) -> String {
    template.replace("{{id}}", id).replace("{{title}}", &title(id))
}

/// A display name for connector `id`: `acme-crm` is `Acme Crm`.
fn title(id: &str) -> String {
    id.split(['-', '_'])
        .filter(|word| !word.is_empty())
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `plugins/stripe`'s lock with the root package renamed to the connector's and without
/// Stripe's license: the same locked tools, which is what `toolchain.sh` compares.
fn javascript_lock(id: &str) -> String {
    STRIPE_LOCK
        .replace(
            "\"name\": \"sluice-connector-stripe\"",
            &format!("\"name\": \"sluice-connector-{id}\""),
        )
        .replacen(
            "      \"license\": \"Apache-2.0\",\n      \"devDependencies\"",
            "      \"devDependencies\"",
            1,
        )
}

/// The files of a connector in `language`: (name, contents, executable).
fn files(id: &str, language: Language) -> Vec<(&'static str, String, bool)> {
    match language {
        Language::Javascript => vec![
            ("connector.js", fill(JS_CONNECTOR, id), false),
            ("package.json", fill(JS_PACKAGE, id), false),
            ("package-lock.json", javascript_lock(id), false),
            ("build.sh", fill(JS_BUILD, id), true),
            ("connector.test.mjs", JS_TEST.to_owned(), false),
            ("testing/host.mjs", JS_TESTING_HOST.to_owned(), false),
            ("testing/hooks.mjs", JS_TESTING_HOOKS.to_owned(), false),
            ("testing/register.mjs", JS_TESTING_REGISTER.to_owned(), false),
        ],
        Language::Python => vec![
            ("app.py", fill(PY_APP, id), false),
            ("requirements.txt", PY_REQUIREMENTS.to_owned(), false),
            ("build.sh", fill(PY_BUILD, id), true),
        ],
        Language::Rust => Vec::new(),
    }
}

/// Write `contents` to a new file at `path`; an existing file is an error, never overwritten.
fn write_new(path: &Path, contents: &str, executable: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if executable { 0o755 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = executable;
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// Write `<sources>/<id>/` for a JavaScript or Python connector, and `<sources>/lib/` (the build
/// helpers and the contract) unless `<sources>/lib/toolchain.sh` is there already. The id is
/// checked and the connector's directory known not to exist.
pub(super) fn write_script_connector(
    sources: &Path,
    id: &str,
    language: Language,
) -> anyhow::Result<Scaffolded> {
    let lib = sources.join(LIB);
    if id == LIB {
        bail!(
            "`{LIB}` cannot be the id of a {} connector: `{}` holds the build helpers its \
             build.sh uses",
            language.name(),
            lib.display()
        );
    }
    let write_lib = !lib.join("toolchain.sh").is_file();
    if write_lib && lib.exists() {
        bail!(
            "{} exists but has no toolchain.sh: the new connector's build.sh sources \
             ../{LIB}/toolchain.sh; rename that directory or choose another --dir",
            lib.display()
        );
    }
    let mut notes = Vec::new();
    let mut new_directories = vec![id];
    if write_lib {
        new_directories.push(LIB);
        std::fs::create_dir_all(lib.join("wit"))?;
        write_new(&lib.join("toolchain.sh"), TOOLCHAIN, false)?;
        write_new(&lib.join("wit").join("connector.wit"), WIT, false)?;
        notes.push(format!(
            "wrote {}: the build helpers every build.sh there sources, with the contract \
             (lib/wit/); the pinned tools are installed under ~/.cache/sluice/lang-tools \
             (SLUICE_TOOLS_DIR moves them)",
            lib.display()
        ));
    } else {
        notes.extend(older_contract_note(&lib));
    }
    let dir = sources.join(id);
    std::fs::create_dir_all(&dir)?;
    for (name, contents, executable) in files(id, language) {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        write_new(&path, &contents, executable)?;
    }
    notes.extend(exclude_from_workspace(sources, &new_directories)?);
    Ok(Scaffolded { dir, notes })
}

/// A note when the helpers already in `lib` carry another contract than this binary's (written
/// by an older `sluice new`): they are left as they are, and the new connector builds against
/// theirs. (This repository's `plugins/lib` has no `wit/`: its helpers use the repository's.)
fn older_contract_note(lib: &Path) -> Option<String> {
    let wit = lib.join("wit").join("connector.wit");
    let found = std::fs::read_to_string(&wit).ok()?;
    (found != WIT).then(|| {
        format!(
            "{} is not the contract this sluice speaks; the new connector builds against it. \
             To build against this binary's, move {} aside: the next `sluice new` writes it \
             afresh",
            wit.display(),
            lib.display()
        )
    })
}

/// Cargo refuses a workspace whose `members` glob matches a directory without a Cargo.toml
/// (as `plugins/*` in this repository matches a new `plugins/<id>`): add the new directories
/// to the workspace's `exclude` (keeping the file's layout and comments), and say so. If the
/// file cannot be changed, say what to add by hand.
fn exclude_from_workspace(sources: &Path, directories: &[&str]) -> anyhow::Result<Option<String>> {
    let Some((root, text)) = enclosing_workspace(sources)? else {
        return Ok(None);
    };
    let Ok(relative) = std::path::absolute(sources)?
        .strip_prefix(&root)
        .map(Path::to_owned)
    else {
        return Ok(None);
    };
    let relative = relative.to_string_lossy().replace('\\', "/");
    let glob = format!("{relative}/*");
    let manifest = root.join("Cargo.toml");
    let mut document: toml_edit::DocumentMut = match text.parse() {
        Ok(document) => document,
        Err(_) => return Ok(None),
    };
    let Some(workspace) = document.get_mut("workspace").and_then(|w| w.as_table_like_mut()) else {
        return Ok(None);
    };
    let strings = |key: &str, workspace: &dyn toml_edit::TableLike| -> Vec<String> {
        workspace
            .get(key)
            .and_then(|item| item.as_array())
            .map(|array| {
                array
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    if !strings("members", workspace).contains(&glob) {
        return Ok(None);
    }
    let excluded = strings("exclude", workspace);
    let missing: Vec<String> = directories
        .iter()
        .map(|directory| format!("{relative}/{directory}"))
        .filter(|member| !excluded.contains(member))
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    let exclude = workspace
        .entry("exclude")
        .or_insert_with(|| toml_edit::value(toml_edit::Array::new()));
    let Some(exclude) = exclude.as_array_mut() else {
        return Ok(None);
    };
    for member in &missing {
        exclude.push(member.as_str());
    }
    let listed = missing.join("\", \"");
    if let Err(error) = std::fs::write(&manifest, document.to_string()) {
        return Ok(Some(format!(
            "could not add \"{listed}\" to the workspace's `exclude` in {} ({error}): add it by \
             hand, or cargo refuses to build the workspace (its members, \"{glob}\", take every \
             directory there for a crate)",
            manifest.display()
        )));
    }
    Ok(Some(format!(
        "added \"{listed}\" to the workspace's `exclude` in {}: its members (\"{glob}\") take \
         every directory there for a crate",
        manifest.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::scaffold;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    }

    #[test]
    fn templates_fill_in_the_id_everywhere() -> anyhow::Result<()> {
        for language in [Language::Javascript, Language::Python] {
            for (name, contents, _) in files("acme-crm", language) {
                assert!(
                    !contents.contains("{{"),
                    "{language:?} {name} has a placeholder left"
                );
                assert!(
                    !contents.to_lowercase().contains("stripe"),
                    "{language:?} {name} names Stripe"
                );
            }
        }
        let js = fill(JS_CONNECTOR, "acme-crm");
        assert!(js.contains(r#"id: "acme-crm","#) && js.contains(r#"name: "Acme Crm","#));
        let py = fill(PY_APP, "acme-crm");
        assert!(py.contains(r#"id="acme-crm","#) && py.contains(r#"name="Acme Crm","#));
        assert!(py.contains(r#"print(f"acme-crm echoes"#), "{py}");
        // The component is named after the directory, not the id: a copy builds as itself.
        for build in [fill(JS_BUILD, "acme-crm"), fill(PY_BUILD, "acme-crm")] {
            assert!(
                build.contains("\nCONNECTOR=\"$(basename \"$HERE\")\"\n"),
                "{build}"
            );
        }
        assert_eq!(title("9lives"), "9lives");
        assert_eq!(title("_"), "");
        Ok(())
    }

    /// The new connector pins exactly the tools `plugins/stripe` does (npm ci would install
    /// anything else from the network, in CI too), and its package.json agrees with its lock.
    #[test]
    fn the_javascript_lock_pins_what_stripe_pins() -> anyhow::Result<()> {
        let stripe: serde_json::Value = serde_json::from_str(STRIPE_LOCK)?;
        let ours: serde_json::Value = serde_json::from_str(&javascript_lock("hello"))?;
        let tools = |lock: &serde_json::Value| {
            let mut packages = lock["packages"].as_object().cloned().unwrap_or_default();
            packages.remove("");
            packages
        };
        assert!(!tools(&stripe).is_empty());
        assert_eq!(tools(&ours), tools(&stripe));
        let root = &ours["packages"][""];
        assert_eq!(ours["name"], "sluice-connector-hello");
        assert_eq!(root["name"], "sluice-connector-hello");
        assert!(root.get("license").is_none(), "{root}");
        let package: serde_json::Value = serde_json::from_str(&fill(JS_PACKAGE, "hello"))?;
        assert_eq!(package["name"], root["name"]);
        assert_eq!(package["version"], root["version"]);
        assert_eq!(package["devDependencies"], root["devDependencies"]);
        assert_eq!(
            package["devDependencies"],
            stripe["packages"][""]["devDependencies"]
        );
        Ok(())
    }

    #[test]
    fn outside_the_repository_the_helpers_and_contract_are_written_once() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let js = scaffold(dir.path(), "hello", Language::Javascript, None)?;
        assert_eq!(js.dir, dir.path().join("hello"));
        for file in ["connector.js", "package.json", "package-lock.json", "build.sh"] {
            assert!(js.dir.join(file).is_file(), "{file}");
        }
        assert_eq!(read(&dir.path().join("lib/toolchain.sh")), TOOLCHAIN);
        assert_eq!(read(&dir.path().join("lib/wit/connector.wit")), WIT);
        assert!(
            js.notes.iter().any(|note| note.contains("lang-tools")),
            "{:?}",
            js.notes
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(js.dir.join("build.sh"))?.permissions().mode();
            assert_eq!(mode & 0o111, 0o111, "build.sh is executable");
        }

        // A second connector shares the helpers, which are left as they are.
        std::fs::write(dir.path().join("lib/toolchain.sh"), "# edited\n")?;
        let py = scaffold(dir.path(), "hello_py", Language::Python, None)?;
        assert!(py.notes.is_empty(), "{:?}", py.notes);
        assert_eq!(read(&dir.path().join("lib/toolchain.sh")), "# edited\n");
        assert_eq!(read(&py.dir.join("requirements.txt")), PY_REQUIREMENTS);
        assert!(read(&py.dir.join("app.py")).contains(r#"id="hello_py","#));

        // Helpers from an older `sluice new` keep their contract, and the user is told.
        std::fs::write(
            dir.path().join("lib/wit/connector.wit"),
            "package sluice:connector@0.1.0;\n",
        )?;
        let older = scaffold(dir.path(), "hello_old", Language::Javascript, None)?;
        assert!(
            older
                .notes
                .iter()
                .any(|note| note.contains("is not the contract this sluice speaks")),
            "{:?}",
            older.notes
        );
        assert_eq!(
            read(&dir.path().join("lib/wit/connector.wit")),
            "package sluice:connector@0.1.0;\n"
        );
        Ok(())
    }

    #[test]
    fn nothing_is_overwritten_and_bad_names_are_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        for language in [Language::Javascript, Language::Python] {
            let long = "a".repeat(65);
            for bad in ["", "Acme", "a b", "../x", "a__b", "vault", long.as_str()] {
                let error = scaffold(dir.path(), bad, language, None)
                    .expect_err(bad)
                    .to_string();
                assert!(error.contains("cannot be a connector id"), "{bad}: {error}");
            }
            let error = scaffold(dir.path(), "lib", language, None).expect_err("lib");
            assert!(error.to_string().contains("holds the build helpers"), "{error}");
        }
        assert!(
            std::fs::read_dir(dir.path())?.next().is_none(),
            "a refused name creates nothing"
        );

        let first = scaffold(dir.path(), "hello", Language::Python, None)?;
        std::fs::write(first.dir.join("app.py"), "# mine\n")?;
        for language in [Language::Javascript, Language::Python, Language::Rust] {
            let error = scaffold(dir.path(), "hello", language, None).expect_err("exists");
            assert!(error.to_string().contains("already exists"), "{error}");
        }
        assert_eq!(read(&first.dir.join("app.py")), "# mine\n");

        let error = scaffold(dir.path(), "other", Language::Javascript, Some(dir.path()));
        assert!(
            error
                .expect_err("--sdk")
                .to_string()
                .contains("--sdk is for Rust")
        );

        // A `lib` that is not the helpers' (a connector of that name) is not written into.
        let other = tempfile::tempdir()?;
        std::fs::create_dir(other.path().join("lib"))?;
        let error = scaffold(other.path(), "hello", Language::Javascript, None).expect_err("lib");
        assert!(error.to_string().contains("has no toolchain.sh"), "{error}");
        assert!(!other.path().join("hello").exists());
        Ok(())
    }

    /// Under this repository's `plugins/`, a new connector uses `plugins/lib` as the others do,
    /// and is excluded from the `plugins/*` workspace members (cargo would refuse the workspace).
    #[test]
    fn inside_the_repository_the_shared_helpers_are_used() -> anyhow::Result<()> {
        let workspace = tempfile::tempdir()?;
        std::fs::write(
            workspace.path().join("Cargo.toml"),
            "[workspace]\nmembers = [\"plugins/*\"]\nexclude = [\"plugins/lib\"]\n",
        )?;
        let plugins = workspace.path().join("plugins");
        std::fs::create_dir_all(plugins.join("lib"))?;
        std::fs::write(plugins.join("lib/toolchain.sh"), "# the repository's\n")?;
        let created = scaffold(&plugins, "hello", Language::Javascript, None)?;
        assert!(
            !plugins.join("lib/wit").exists(),
            "the repository's contract is used"
        );
        assert_eq!(read(&plugins.join("lib/toolchain.sh")), "# the repository's\n");
        assert_eq!(created.notes.len(), 1, "{:?}", created.notes);
        assert!(
            created.notes[0].contains("added \"plugins/hello\" to the workspace's `exclude`"),
            "{:?}",
            created.notes
        );
        assert_eq!(
            read(&workspace.path().join("Cargo.toml")),
            "[workspace]\nmembers = [\"plugins/*\"]\nexclude = [\"plugins/lib\", \"plugins/hello\"]\n"
        );
        // A workspace without an `exclude` gets one, for the connector and the new helpers.
        let bare = tempfile::tempdir()?;
        std::fs::write(
            bare.path().join("Cargo.toml"),
            "# kept\n[workspace]\nmembers = [\"connectors/*\"]\n",
        )?;
        let connectors = bare.path().join("connectors");
        std::fs::create_dir_all(&connectors)?;
        scaffold(&connectors, "hello", Language::Python, None)?;
        let manifest = read(&bare.path().join("Cargo.toml"));
        assert!(manifest.starts_with("# kept\n[workspace]\n"), "{manifest}");
        assert!(
            manifest.contains("exclude = [\"connectors/hello\", \"connectors/lib\"]"),
            "{manifest}"
        );
        Ok(())
    }
}
