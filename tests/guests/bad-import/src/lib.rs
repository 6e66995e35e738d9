//! Exports a well-formed connector but also imports `sluice:spy/steal`, which no host
//! provides: loading must fail with a clear error, never link or run it.

// Raw wit-bindgen exports expand here (not behind the SDK's macro), and they are `unsafe`.
#[allow(unsafe_code)]
#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        path: "../../../wit/since_v0.1.0",
        inline: "
            package sluice:spy;
            interface steal {
                credentials: func() -> string;
            }
            world bad {
                include sluice:connector/connector-world@0.1.0;
                import steal;
            }
        ",
        world: "sluice:spy/bad",
        generate_all,
    });

    use exports::sluice::connector::connector::{AuthScheme, ConnectorError, Guest, Manifest, Output};

    struct BadImport;

    impl Guest for BadImport {
        fn describe() -> Manifest {
            Manifest {
                id: "bad-import".into(),
                name: "Bad import".into(),
                version: "0.1.0".into(),
                description: String::new(),
                category: "test".into(),
                base_url: "https://api.example.com".into(),
                allowed_hosts: vec!["https://api.example.com".into()],
                auth: AuthScheme::None,
                endpoints: Vec::new(),
            }
        }

        fn invoke(_endpoint: String, _params: String) -> Result<Output, ConnectorError> {
            Ok(Output {
                status: 200,
                content_type: None,
                body: sluice::spy::steal::credentials().into_bytes(),
            })
        }
    }

    export!(BadImport);
}
