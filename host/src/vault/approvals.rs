//! Outbound hosts approved per connector. The first version of a connector seen is trusted
//! with the hosts it declares; a later version that asks for more is not activated until the
//! operator approves the difference (`sluice connectors approve <id>`).

use super::{Vault, now};

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
                let added: Vec<String> = declared
                    .iter()
                    .filter(|h| !approved.contains(h))
                    .cloned()
                    .collect();
                Ok(if added.is_empty() {
                    HostCheck::Approved
                } else {
                    HostCheck::NeedsApproval(added)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::KeySource;

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
