//! The HTTP/1 codec's properties on recorded and generated inputs, without building the fuzzers:
//! every seed (`fuzz/seeds/TARGET/`: hand-written inputs, and every crash fuzzing found) and
//! every input of the fuzz corpora (`fuzz/corpus/TARGET/`: what the fuzzer kept for reaching new
//! code) goes through the same checks the fuzz targets run (`fuzz/checks.rs`), and generated
//! request heads go through the parser and httparse side by side.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

use proptest::prelude::*;

#[test]
fn every_corpus_file_keeps_its_properties() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut failures = Vec::new();
    for (target, check) in checks::TARGETS {
        let mut files = Vec::new();
        for kind in ["seeds", "corpus"] {
            let dir = fuzz.join(kind).join(target);
            match std::fs::read_dir(&dir) {
                Ok(found) => files.extend(found.map(|e| e.unwrap().path())),
                // a corpus is what a fuzzing run grew; a checkout may hold none for a target
                Err(e) if kind == "corpus" && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("{}: {e}", dir.display()),
            }
        }
        files.sort();
        assert!(files.len() > 1, "{target}: no seeds or corpus");
        for file in files {
            let data = std::fs::read(&file).unwrap();
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "properties broken by: {failures:#?}");
}

/// Pieces a request head is made of, valid and not, weighted towards the ones parsers disagree
/// on.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(b"\r\n".to_vec()),
        2 => Just(b"\n".to_vec()),
        1 => Just(b"\r".to_vec()),
        3 => Just(b" ".to_vec()),
        1 => Just(b"\t".to_vec()),
        3 => Just(b":".to_vec()),
        1 => Just(b",".to_vec()),
        1 => Just(b"_".to_vec()),
        1 => Just(b"\0".to_vec()),
        1 => Just(vec![0x80, 0xff]),
        2 => Just(b"Host".to_vec()),
        2 => Just(b"Content-Length".to_vec()),
        2 => Just(b"Transfer-Encoding".to_vec()),
        1 => Just(b"Connection".to_vec()),
        1 => Just(b"Upgrade".to_vec()),
        1 => Just(b"Expect".to_vec()),
        2 => Just(b"chunked".to_vec()),
        1 => Just(b"close".to_vec()),
        1 => Just(b"100-continue".to_vec()),
        2 => "[0-9]{1,3}".prop_map(String::into_bytes),
        3 => "[A-Za-z0-9!#$%&'*+.^`|~-]{1,8}".prop_map(String::into_bytes),
        1 => Just(b"http://shop.test".to_vec()),
        1 => Just(b"*".to_vec()),
    ]
}

/// A request line (usually well formed), then fields assembled from [`piece`]s, usually ended
/// by an empty line.
fn head() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("OPTIONS"),
        Just("CONNECT"),
        Just("G(T"),
        Just("PATCH")
    ];
    let target = prop_oneof![
        Just("/"),
        Just("/a?b=c"),
        Just("*"),
        Just("http://shop.test/x"),
        Just("shop.test:443"),
        Just("/a b"),
        Just("x")
    ];
    let version =
        prop_oneof![8 => Just("HTTP/1.1"), 2 => Just("HTTP/1.0"), 1 => Just("HTTP/1.2"), 1 => Just("http/1.1")];
    let fields = proptest::collection::vec(proptest::collection::vec(piece(), 1..6), 0..8);
    (method, target, version, fields, any::<bool>()).prop_map(|(m, t, v, fields, end)| {
        let mut out = format!("{m} {t} {v}\r\n").into_bytes();
        for f in fields {
            for p in f {
                out.extend_from_slice(&p);
            }
            out.extend_from_slice(b"\r\n");
        }
        if end {
            out.extend_from_slice(b"\r\n");
        }
        out
    })
}

/// Well-formed fields, so that the generated heads reach the framing rules often.
fn field_head() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        Just("Host"),
        Just("Content-Length"),
        Just("Transfer-Encoding"),
        Just("Connection"),
        Just("X_Forwarded_For"),
        Just("X-A")
    ];
    let value = prop_oneof![
        Just("shop.test"),
        Just("5"),
        Just("5, 5"),
        Just("005"),
        Just("chunked"),
        Just("chunked, identity"),
        Just("close, Host"),
        Just(" x ")
    ];
    proptest::collection::vec((name, value), 0..6).prop_map(|fields| {
        let mut out = b"POST /p HTTP/1.1\r\n".to_vec();
        for (n, v) in fields {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\nhello");
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Where the gateway and httparse both accept a head they read the same request; where
    /// they differ, the gateway refuses, for a reason `proto::h1::request` lists.
    #[test]
    fn the_head_parser_is_httparse_or_stricter(raw in head()) {
        checks::request_differential(&raw);
        checks::request_head(&raw);
    }

    #[test]
    fn framing_fields_are_read_one_way_only(raw in field_head()) {
        checks::request_differential(&raw);
        checks::request_head(&raw);
    }

    /// Chunked bodies built from sizes, extensions and data: boundaries change nothing, and the
    /// strict reading never disagrees with the lenient one.
    #[test]
    fn chunked_bodies(pieces in proptest::collection::vec(
        prop_oneof![
            "[0-9a-fA-F]{1,3}".prop_map(String::into_bytes),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b";a=\"b\"".to_vec()),
            Just(b";a".to_vec()),
            Just(b" ".to_vec()),
            Just(b"\"".to_vec()),
            "[a-z]{0,20}".prop_map(String::into_bytes),
            Just(b"0\r\n\r\n".to_vec()),
        ], 0..12), split in 1u8..40) {
        let mut data = vec![split];
        for p in pieces {
            data.extend_from_slice(&p);
        }
        checks::request_body(&data);
        checks::response_body(&data);
    }
}
