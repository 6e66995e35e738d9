//! Outbound hosts approved per connector. The first version of a connector seen is trusted
//! with the hosts it declares; a later version that asks for more is not activated until the
//! operator approves the difference (`sluice connectors approve <id>`).

use super::{Vault, now};

/// How an approved set names where a connector sends its credential: `credential <origin>`.
pub const CREDENTIAL_ENTRY: &str = "credential ";

/// The result of checking a connector's declared hosts against the approved ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCheck {
    /// Nothing was approved before: the declared hosts are now recorded as approved.
    FirstSeen,
    /// Every declared host is approved.
    Approved,
    /// These declared hosts were never approved.
    NeedsApproval(Vec<String>),
}

impl Vault {
    /// The hosts approved for `connector`, if any were recorded.
    pub fn approved_hosts(&self, connector: &str) -> anyhow::Result<Option<Vec<String>>> {
        self.store.approved_hosts(connector)
    }

    /// Record `hosts` as the approved set for `connector`.
    pub fn approve_hosts(&self, connector: &str, hosts: &[String]) -> anyhow::Result<()> {
        self.write(|store| store.approve_hosts(connector, hosts, now()))
    }

    /// Compare `declared` with the approved hosts of `connector`, trusting a first sighting.
    pub fn check_hosts(&self, connector: &str, declared: &[String]) -> anyhow::Result<HostCheck> {
        match self.approved_hosts(connector)? {
            None => {
                self.approve_hosts(connector, declared)?;
                Ok(HostCheck::FirstSeen)
            }
            Some(approved) => {
                // Sets approved before the credential's destination was part of them: the one
                // declared now is taken as approved (the version serving sends it there) and
                // recorded, so that a later version moving it needs approval.
                let recorded_before_credentials = !approved.iter().any(|h| h.starts_with(CREDENTIAL_ENTRY));
                let added: Vec<String> = declared
                    .iter()
                    .filter(|h| !approved.contains(h))
                    .filter(|h| !(recorded_before_credentials && h.starts_with(CREDENTIAL_ENTRY)))
                    .cloned()
                    .collect();
                if !added.is_empty() {
                    return Ok(HostCheck::NeedsApproval(added));
                }
                if recorded_before_credentials && declared.iter().any(|h| h.starts_with(CREDENTIAL_ENTRY)) {
                    let mut upgraded = approved;
                    upgraded.extend(
                        declared
                            .iter()
                            .filter(|h| h.starts_with(CREDENTIAL_ENTRY))
                            .cloned(),
                    );
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
