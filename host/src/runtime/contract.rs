//! Which version of the WIT contract a component was built against, read from the name of
//! the connector interface it exports (`sluice:connector/connector@0.1.0`).

/// The exported interface every connector must have, without its version.
const CONNECTOR_INTERFACE: &str = "sluice:connector/connector";

/// Contract versions this host can bind: `major.minor` pairs (for `0.x` a new minor is a
/// breaking change under semver, so minors are listed separately).
pub const SUPPORTED: &[(u64, u64)] = &[(0, 1), (0, 2)];

/// Why a component's contract version is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// No `sluice:connector/connector` export at all.
    #[error("the component does not export `{CONNECTOR_INTERFACE}`; it is not a Sluice connector")]
    NotAConnector,
    /// The export carries a version this host cannot bind.
    #[error(
        "the component was built against contract sluice:connector@{found}; this host supports {}. \
         Rebuild it with a supported SDK or upgrade the gateway",
        supported_text()
    )]
    Unsupported {
        /// The version found.
        found: String,
    },
}

fn supported_text() -> String {
    SUPPORTED
        .iter()
        .map(|(major, minor)| format!("{major}.{minor}.x"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The contract version `(major, minor, patch)` named by a component's export names.
pub fn detect<'a>(export_names: impl IntoIterator<Item = &'a str>) -> Result<(u64, u64, u64), ContractError> {
    let prefix = format!("{CONNECTOR_INTERFACE}@");
    let version = export_names
        .into_iter()
        .find_map(|name| name.strip_prefix(&prefix))
        .ok_or(ContractError::NotAConnector)?;
    let unsupported = || ContractError::Unsupported {
        found: version.to_owned(),
    };
    let mut parts = version.split(['.', '-', '+']).map(str::parse::<u64>);
    let (Some(Ok(major)), Some(Ok(minor)), Some(Ok(patch))) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(unsupported());
    };
    if !SUPPORTED.contains(&(major, minor)) {
        return Err(unsupported());
    }
    Ok((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_export_names() {
        assert_eq!(detect(["sluice:connector/connector@0.1.0"]), Ok((0, 1, 0)));
        assert_eq!(
            detect(["other@1.0.0", "sluice:connector/connector@0.1.7"]),
            Ok((0, 1, 7))
        );
        assert_eq!(detect(["wasi:cli/run@0.2.0"]), Err(ContractError::NotAConnector));
        assert_eq!(detect(["sluice:connector/connector@0.2.0"]), Ok((0, 2, 0)));
        for unsupported in ["0.3.0", "1.0.0", "9.9.9", "x.y.z", "0.1"] {
            let name = format!("sluice:connector/connector@{unsupported}");
            assert!(
                matches!(detect([name.as_str()]), Err(ContractError::Unsupported { .. })),
                "{unsupported}"
            );
        }
        let message = detect(["sluice:connector/connector@2.0.0"])
            .expect_err("unsupported")
            .to_string();
        assert!(
            message.contains("2.0.0") && message.contains("0.1.x"),
            "{message}"
        );
    }
}
