//! The smallest useful `wasi:http/proxy` component: every request gets `200` and a short JSON
//! greeting. The load harness serves it with `wasmtime serve` as target S, the general-purpose
//! WebAssembly HTTP host that the gateway is compared with (no upstream call, no database).

use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

/// What every request receives.
const GREETING: &[u8] = br#"{"hello":"world"}"#;

struct HelloWorld;

impl wasip2::exports::http::incoming_handler::Guest for HelloWorld {
    fn handle(_request: IncomingRequest, reply: ResponseOutparam) {
        let headers = Fields::from_list(&[("content-type".to_owned(), b"application/json".to_vec())])
            .expect("a valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("the body is taken once");
        ResponseOutparam::set(reply, Ok(response));
        let stream = body.write().expect("the stream is taken once");
        stream
            .blocking_write_and_flush(GREETING)
            .expect("the host accepts the body");
        drop(stream);
        OutgoingBody::finish(body, None).expect("the body is complete");
    }
}

wasip2::http::proxy::export!(HelloWorld);
