//! A connector written directly against `sluice:connector@0.1.0`, as a binary built before
//! 0.2 existed would be: it must keep loading, calling the host's 0.1 `http` and `log`.

// Raw wit-bindgen exports expand here (not behind the SDK's macro), and they are `unsafe`.
#[allow(unsafe_code)]
#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        path: "../../../wit/since_v0.1.0",
        world: "connector-world",
    });

    use exports::sluice::connector::connector::{
        AuthScheme, ConnectorError, Endpoint, Guest, Manifest, Output,
    };
    use sluice::connector::types::{Level, Request};

    struct Legacy;

    impl Guest for Legacy {
        fn describe() -> Manifest {
            Manifest {
                id: "legacy".into(),
                name: "Legacy".into(),
                version: "0.1.0".into(),
                description: "Built against contract 0.1.0".into(),
                category: "test".into(),
                base_url: "https://api.legacy.test".into(),
                allowed_hosts: vec!["https://api.legacy.test".into()],
                auth: AuthScheme::Bearer,
                endpoints: vec![Endpoint {
                    name: "ping".into(),
                    title: "Ping".into(),
                    method: "GET".into(),
                    path: "/text".into(),
                    description: String::new(),
                    params_schema: r#"{"type":"object"}"#.into(),
                    examples: Vec::new(),
                }],
            }
        }

        fn invoke(endpoint: String, _params: String) -> Result<Output, ConnectorError> {
            if endpoint != "ping" {
                return Err(ConnectorError::UnknownEndpoint(endpoint));
            }
            sluice::connector::log::write(Level::Info, "legacy ping");
            let request = Request {
                method: "GET".into(),
                url: "/text".into(),
                headers: Vec::new(),
                body: None,
            };
            let response = sluice::connector::http::send(&request).map_err(ConnectorError::Http)?;
            Ok(Output {
                status: response.status,
                content_type: Some("text/plain".into()),
                body: response.body,
            })
        }
    }

    export!(Legacy);
}
