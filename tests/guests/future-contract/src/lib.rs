//! Exports `sluice:connector/connector@9.0.0`: a contract from the future.

// Raw wit-bindgen exports expand here (not behind the SDK's macro), and they are `unsafe`.
#[allow(unsafe_code)]
#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        inline: "
            package sluice:connector@9.0.0;
            interface connector {
                describe: func() -> string;
            }
            world later {
                export connector;
            }
        ",
        world: "later",
    });

    struct Future;

    impl exports::sluice::connector::connector::Guest for Future {
        fn describe() -> String {
            "from the future".into()
        }
    }

    export!(Future);
}
