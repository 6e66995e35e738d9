//! Outbound hosts approved per connector. The first version of a connector seen is trusted
//! with the hosts it declares; a later version that asks for more is not activated until the
//! operator approves the difference (`sluice connectors approve <id>`).
//!
//! The set also names the files the connector was loaded from (`file <name>`), so that a file
//! once approved as one connector that comes to declare another, already known, connector's id
//! — a third party's update taking over another connector and its users' credentials — waits
//! for approval too.

use super::{Vault, now};

/// How an approved set names where a connector sends its credential: `credential <origin>`.
pub const CREDENTIAL_ENTRY: &str = "credential ";

/// How an approved set names how the credential travels: `credential-in header x-api-key`.
pub const PLACEMENT_ENTRY: &str = "credential-in ";

/// Kinds of entry approved sets gained after gateways had recorded sets: a set with no entry
/// of a kind was recorded before it, and takes the one declared now as approved (the version
/// serving does that already), so that a later version changing it needs approval.
const LATER_KINDS: [&str; 2] = [CREDENTIAL_ENTRY, PLACEMENT_ENTRY];

/// How an approved set names a file the connector was loaded from: `file <name>`.
const FILE_ENTRY: &str = "file ";

/// Whether `entry` of an approved set names a file, not where the connector may connect.
pub fn is_file_entry(entry: &str) -> bool {
    entry.starts_with(FILE_ENTRY)
}

/// The result of checking a connector's declared hosts against the approved ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCheck {
    /// Nothing was approved before: the declared hosts are now recorded as approved.
    FirstSeen,
    /// Every declared host is approved.
    Approved,
    /// These declared hosts were never approved.
    NeedsApproval(Vec<String>),
    /// The file was approved as this other connector; its new id is a known connector's.
    FileOfAnother(String),
    /// The file is not recorded as serving the connector, and this file, which is, is still
    /// there: a second file claiming a connector another file serves.
    SecondFile(String),
}

impl Vault {
    /// The hosts approved for `connector`, if any were recorded.
    pub fn approved_hosts(&self, connector: &str) -> anyhow::Result<Option<Vec<String>>> {
        self.store.approved_hosts(connector)
    }

    /// Record `hosts` as the approved set for `connector`, keeping the files it was loaded from.
    pub fn approve_hosts(&self, connector: &str, hosts: &[String]) -> anyhow::Result<()> {
        let files: Vec<String> = self
            .approved_hosts(connector)?
            .unwrap_or_default()
            .into_iter()
            .filter(|entry| is_file_entry(entry))
            .collect();
        let recorded: Vec<String> = hosts.iter().cloned().chain(files).collect();
        self.write(|store| store.approve_hosts(connector, &recorded, now()))
    }

    /// The connector whose approved set names `file`, if any.
    fn approved_as(&self, file: &str) -> anyhow::Result<Option<String>> {
        let entry = format!("{FILE_ENTRY}{file}");
        Ok(self
            .store
            .all_approved_hosts()?
            .into_iter()
            .find(|(_, hosts)| hosts.contains(&entry))
            .map(|(connector, _)| connector))
    }

    /// The files recorded as serving `connector`.
    pub fn files_of(&self, connector: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .approved_hosts(connector)?
            .unwrap_or_default()
            .iter()
            .filter_map(|entry| entry.strip_prefix(FILE_ENTRY).map(str::to_owned))
            .collect())
    }

    /// Whether any file is recorded as serving `connector` now.
    pub fn served_by_a_file(&self, connector: &str) -> anyhow::Result<bool> {
        Ok(!self.files_of(connector)?.is_empty())
    }

    /// Record that `connector` is loaded from `file` (a name in the plugins directory), and
    /// that no other connector is any more.
    pub fn approve_file(&self, connector: &str, file: &str) -> anyhow::Result<()> {
        let entry = format!("{FILE_ENTRY}{file}");
        for (other, hosts) in self.store.all_approved_hosts()? {
            let names_it = hosts.contains(&entry);
            if other != connector && names_it {
                let rest: Vec<String> = hosts.into_iter().filter(|h| *h != entry).collect();
                self.write(|store| store.approve_hosts(&other, &rest, now()))?;
            } else if other == connector && !names_it {
                let mut more = hosts;
                more.push(entry.clone());
                self.write(|store| store.approve_hosts(connector, &more, now()))?;
            }
        }
        Ok(())
    }

    /// [`Vault::check_hosts`] for a connector loaded from `file`: also refused when the file
    /// was approved as another connector and `connector` is one this gateway knows (it has
    /// an approved set, and so may have connections), or when a file recorded as serving
    /// `connector` is still there (`present` says which files are) and this one is not
    /// recorded: either would hand the connector's connections to code nobody approved for it.
    /// Once accepted, the file is recorded.
    pub fn check_connector_file(
        &self,
        connector: &str,
        declared: &[String],
        file: &str,
        present: impl Fn(&str) -> bool,
    ) -> anyhow::Result<HostCheck> {
        let approved_as = self.approved_as(file)?;
        if let Some(other) = &approved_as
            && other != connector
            && self.approved_hosts(connector)?.is_some()
        {
            return Ok(HostCheck::FileOfAnother(other.clone()));
        }
        if approved_as.as_deref() != Some(connector)
            && let Some(serving) = self
                .files_of(connector)?
                .into_iter()
                .find(|recorded| recorded != file && present(recorded))
        {
            return Ok(HostCheck::SecondFile(serving));
        }
        let check = self.check_hosts(connector, declared)?;
        if matches!(check, HostCheck::FirstSeen | HostCheck::Approved) {
            self.approve_file(connector, file)?;
        }
        Ok(check)
    }

    /// Compare `declared` with the approved hosts of `connector`, trusting a first sighting.
    pub fn check_hosts(&self, connector: &str, declared: &[String]) -> anyhow::Result<HostCheck> {
        match self.approved_hosts(connector)? {
            None => {
                self.approve_hosts(connector, declared)?;
                Ok(HostCheck::FirstSeen)
            }
            Some(approved) => {
                let recorded_before: Vec<&str> = LATER_KINDS
                    .into_iter()
                    .filter(|kind| !approved.iter().any(|h| h.starts_with(kind)))
                    .collect();
                let taken_now = |h: &&String| recorded_before.iter().any(|kind| h.starts_with(kind));
                let added: Vec<String> = declared
                    .iter()
                    .filter(|h| !approved.contains(h))
                    .filter(|h| !taken_now(h))
                    .cloned()
                    .collect();
                if !added.is_empty() {
                    return Ok(HostCheck::NeedsApproval(added));
                }
                let recorded_now: Vec<&String> = declared.iter().filter(taken_now).collect();
                if !recorded_now.is_empty() {
                    // `approve_hosts` keeps the file entries.
                    let mut upgraded: Vec<String> =
                        approved.into_iter().filter(|h| !is_file_entry(h)).collect();
                    upgraded.extend(recorded_now.into_iter().cloned());
                    self.approve_hosts(connector, &upgraded)?;
                }
                Ok(HostCheck::Approved)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::KeySource;

    #[test]
    fn a_file_approved_as_one_connector_does_not_become_another_known_one_unapproved() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let vault = Vault::open(&dir.path().join("db"), &KeySource::Explicit("ab".repeat(32)))?;
        let hosts = |host: &str| vec![format!("https://{host}:443")];
        let present = std::cell::RefCell::new(vec!["weather.wasm", "svc.wasm"]);
        let check = |id: &str, file: &str| {
            vault.check_connector_file(id, &hosts(id), file, |name| present.borrow().contains(&name))
        };
        assert_eq!(check("weather", "weather.wasm")?, HostCheck::FirstSeen);
        assert_eq!(check("svc", "svc.wasm")?, HostCheck::FirstSeen);
        // weather.wasm, updated, declares svc: svc's connections are not its to use.
        assert_eq!(
            check("svc", "weather.wasm")?,
            HostCheck::FileOfAnother("weather".into())
        );
        // Approving the hosts again keeps the files each was loaded from.
        vault.approve_hosts("svc", &hosts("svc"))?;
        assert_eq!(
            check("svc", "weather.wasm")?,
            HostCheck::FileOfAnother("weather".into())
        );
        // A second file declaring a connector whose file is still there waits for the
        // operator; once that file is gone, a new file of it is a version under a new name.
        assert_eq!(
            check("svc", "svc-2.wasm")?,
            HostCheck::SecondFile("svc.wasm".into())
        );
        present.borrow_mut().retain(|name| *name != "svc.wasm");
        // A file that turns into a connector never seen here is no takeover either.
        assert_eq!(check("svc", "svc-2.wasm")?, HostCheck::Approved);
        assert_eq!(check("brand-new", "weather.wasm")?, HostCheck::FirstSeen);
        assert_eq!(
            check("weather", "weather.wasm")?,
            HostCheck::FileOfAnother("brand-new".into())
        );
        // Once the operator approves the file for the connector, it serves it.
        vault.approve_file("weather", "weather.wasm")?;
        assert_eq!(check("weather", "weather.wasm")?, HostCheck::Approved);
        Ok(())
    }

    #[test]
    fn moving_the_credential_needs_approval_once_its_destination_is_recorded() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let vault = Vault::open(&dir.path().join("db"), &KeySource::Explicit("ab".repeat(32)))?;
        let hosts = |credential: &str| {
            vec![
                "https://a.example.com:443".to_owned(),
                "https://b.example.com:443".to_owned(),
                format!("{CREDENTIAL_ENTRY}{credential}"),
            ]
        };
        // A set approved by an older gateway, without the credential's destination: the one
        // declared now is taken and recorded.
        vault.approve_hosts("x", &hosts("")[..2])?;
        assert_eq!(
            vault.check_hosts("x", &hosts("https://a.example.com"))?,
            HostCheck::Approved
        );
        assert_eq!(vault.approved_hosts("x")?, Some(hosts("https://a.example.com")));
        // A version sending it to the other allowed host waits for approval.
        assert_eq!(
            vault.check_hosts("x", &hosts("https://b.example.com"))?,
            HostCheck::NeedsApproval(vec![format!("{CREDENTIAL_ENTRY}https://b.example.com")])
        );
        Ok(())
    }

    /// How the credential travels is approved like where it goes: a set recorded before it was
    /// part of approvals takes the one declared now; a version moving it from a header into
    /// the URL's query then waits for the operator.
    #[test]
    fn moving_the_credential_into_the_query_needs_approval() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let vault = Vault::open(&dir.path().join("db"), &KeySource::Explicit("ab".repeat(32)))?;
        let declared = |placement: &str| {
            vec![
                "https://api.example.com:443".to_owned(),
                format!("{CREDENTIAL_ENTRY}https://api.example.com"),
                format!("{PLACEMENT_ENTRY}{placement}"),
            ]
        };
        vault.approve_hosts("x", &declared("header x-api-key")[..2])?;
        assert_eq!(
            vault.check_hosts("x", &declared("header x-api-key"))?,
            HostCheck::Approved
        );
        assert_eq!(vault.approved_hosts("x")?, Some(declared("header x-api-key")));
        assert_eq!(
            vault.check_hosts("x", &declared("query api_key"))?,
            HostCheck::NeedsApproval(vec![format!("{PLACEMENT_ENTRY}query api_key")])
        );
        Ok(())
    }

    #[test]
    fn first_sighting_is_trusted_and_widening_needs_approval() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let vault = Vault::open(&dir.path().join("db"), &KeySource::Explicit("ab".repeat(32)))?;
        let v1 = vec!["https://api.example.com:443".to_owned()];
        let v2 = vec![
            "https://api.example.com:443".to_owned(),
            "https://extra.example.com:443".to_owned(),
        ];
        assert_eq!(vault.check_hosts("x", &v1)?, HostCheck::FirstSeen);
        assert_eq!(vault.check_hosts("x", &v1)?, HostCheck::Approved);
        assert_eq!(
            vault.check_hosts("x", &v2)?,
            HostCheck::NeedsApproval(vec!["https://extra.example.com:443".into()])
        );
        assert_eq!(
            vault.check_hosts("x", &[])?,
            HostCheck::Approved,
            "narrowing needs no approval"
        );
        vault.approve_hosts("x", &v2)?;
        assert_eq!(vault.check_hosts("x", &v2)?, HostCheck::Approved);
        Ok(())
    }
}
