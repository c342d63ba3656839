//! gRPC messages: any bytes decoded as Tracee's `StreamEventsResponse` / `Event` turn into JSON
//! (`intake::tracee_event`) without panicking, as JSON that reads back (an event text the
//! outbox stores must parse again); any bytes decoded as `hooker.v1` messages give payloads that
//! are events or an error.
//!
//! The corpus (agent/tests/corpus/grpc/*.pb) is encoded Tracee events and Hooker requests;
//! `HOOKER_WRITE_CORPUS=1 cargo test -p hooker --test prop_grpc` writes it again from
//! [`seeds`].

mod prop_support;

use std::sync::Arc;

use hooker::event::parse_body;
use hooker::intake::tracee_event;
use hooker::router::fields::Fields;
use hooker_grpc::hooker::v1 as hooker_pb;
use hooker_grpc::tracee::v1beta1 as pb;
use pb::event_value::Value as Kind;
use proptest::prelude::*;
use prost::Message;

/// The checks any bytes go through.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(response) = pb::StreamEventsResponse::decode(bytes)
        && let Some(event) = &response.event
    {
        check_event(event)?;
    }
    if let Ok(event) = pb::Event::decode(bytes) {
        check_event(&event)?;
    }
    let fields = Arc::new(Fields::from_paths([&["a".to_string()][..]]));
    if let Ok(request) = hooker_pb::PublishRequest::decode(bytes)
        && let Some(event) = &request.event
    {
        let _ = parse_body(&event.payload, Some(fields.clone()));
        let _ = parse_body(&event.payload, None);
    }
    if let Ok(batch) = hooker_pb::PublishBatch::decode(bytes) {
        for event in &batch.events {
            let _ = parse_body(&event.payload, Some(fields.clone()));
        }
    }
    Ok(())
}

/// Tracee's event as JSON: an object whose text parses back to it.
fn check_event(event: &pb::Event) -> Result<(), TestCaseError> {
    let json = tracee_event::to_json(event);
    prop_assert!(json.is_object());
    let text = serde_json::to_string(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back = serde_json::from_str::<serde_json::Value>(&text);
    prop_assert!(
        back.is_ok(),
        "the event's text does not parse: {:?}",
        back.err()
    );
    Ok(())
}

// === Seeds ===

fn value(name: &str, kind: Kind) -> pb::EventValue {
    pb::EventValue {
        name: name.into(),
        value: Some(kind),
    }
}

fn process(pid: u32, ancestors: Vec<pb::Process>) -> pb::Process {
    pb::Process {
        executable: Some(pb::Executable {
            path: "/usr/bin/bash".into(),
        }),
        unique_id: Some(pid * 7),
        host_pid: Some(pid + 1000),
        pid: Some(pid),
        real_user: Some(pb::User { id: Some(0) }),
        thread: Some(pb::Thread {
            start_time: Some(prost_types::Timestamp {
                seconds: 1_733_400_000,
                nanos: 5,
            }),
            name: "bash".into(),
            unique_id: Some(1),
            host_tid: Some(pid + 1000),
            tid: Some(pid),
            syscall: "execve".into(),
            compat: false,
            user_stack_trace: Some(pb::UserStackTrace {
                addresses: vec![pb::StackAddress {
                    address: 0x7fff_0000,
                    symbol: "main".into(),
                }],
            }),
        }),
        ancestors,
    }
}

fn structure(depth: usize) -> prost_types::Struct {
    use prost_types::value::Kind as K;
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "n".to_string(),
        prost_types::Value {
            kind: Some(K::NumberValue(1.5)),
        },
    );
    fields.insert(
        "list".to_string(),
        prost_types::Value {
            kind: Some(K::ListValue(prost_types::ListValue {
                values: vec![prost_types::Value {
                    kind: Some(K::StringValue("x".into())),
                }],
            })),
        },
    );
    if depth > 0 {
        fields.insert(
            "inner".to_string(),
            prost_types::Value {
                kind: Some(K::StructValue(structure(depth - 1))),
            },
        );
    }
    prost_types::Struct {
        fields: fields.into_iter().collect(),
    }
}

fn detection() -> pb::Event {
    pb::Event {
        timestamp: Some(prost_types::Timestamp {
            seconds: 1_733_400_000,
            nanos: 123_456_789,
        }),
        id: 0,
        name: "anti_debugging".into(),
        policies: Some(pb::Policies {
            matched: vec!["default".into()],
        }),
        workload: Some(pb::Workload {
            process: Some(process(7, vec![process(1, vec![])])),
            container: Some(pb::Container {
                id: "ae95a9".into(),
                name: "app".into(),
                image: Some(pb::ContainerImage {
                    id: "sha256:1".into(),
                    repo_digests: vec!["docker.io/library/ubuntu@sha256:2".into()],
                    name: "docker.io/library/ubuntu:latest".into(),
                }),
                started: true,
            }),
            k8s: Some(pb::K8s {
                pod: Some(pb::Pod {
                    name: "app-0".into(),
                    uid: "u1".into(),
                    labels: [("app".to_string(), "web".to_string())]
                        .into_iter()
                        .collect(),
                }),
                namespace: Some(pb::K8sNamespace {
                    name: "prod".into(),
                }),
            }),
        }),
        data: vec![
            value("request", Kind::Int64(-9_876_543_210)),
            value(
                "argv",
                Kind::StrArray(pb::StringArray {
                    value: vec!["strace".into(), "ls".into()],
                }),
            ),
            value("bytes", Kind::Bytes(vec![0, 1, 255])),
            value(
                "addr",
                Kind::Sockaddr(pb::SockAddr {
                    sa_family: 10,
                    sin6_addr: "::1".into(),
                    sin6_port: 443,
                    ..Default::default()
                }),
            ),
            value(
                "creds",
                Kind::Credentials(pb::Credentials {
                    uid: Some(0),
                    cap_effective: vec![0, 21, 9999],
                    ..Default::default()
                }),
            ),
            value("meta", Kind::Struct(structure(3))),
            value("ptr", Kind::Pointer(u64::MAX)),
        ],
        threat: Some(pb::Threat {
            description: "A process used anti-debugging techniques".into(),
            mitre: Some(pb::Mitre {
                tactic: Some(pb::MitreTactic {
                    name: "defense-evasion".into(),
                }),
                technique: Some(pb::MitreTechnique {
                    id: "T1622".into(),
                    name: "Debugger Evasion".into(),
                }),
            }),
            severity: 3,
            name: "Anti-Debugging detected".into(),
            properties: [("signatureID".to_string(), "TRC-102".to_string())]
                .into_iter()
                .collect(),
        }),
        detected_from: Some(pb::DetectedFrom {
            id: 101,
            name: "ptrace".into(),
            data: vec![value("request", Kind::Int32(0))],
            parent: Some(Box::new(pb::DetectedFrom {
                id: 2,
                name: "sched_process_exec".into(),
                data: vec![],
                parent: None,
            })),
        }),
    }
}

/// A detection derived from `depth` others, each with data (how deep can Tracee's nesting go
/// before the JSON is deeper than serde_json reads back?).
fn derived(depth: usize) -> pb::Event {
    let mut from = None;
    for id in 0..depth {
        from = Some(Box::new(pb::DetectedFrom {
            id: id as u32,
            name: format!("d{id}"),
            data: vec![value("meta", Kind::Struct(structure(1)))],
            parent: from,
        }));
    }
    pb::Event {
        name: "derived".into(),
        detected_from: from.map(|b| *b),
        ..Default::default()
    }
}

/// The corpus, as it is written to agent/tests/corpus/grpc/.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let publish = |payload: &[u8]| hooker_pb::Event {
        payload: payload.to_vec(),
        source: "prop".into(),
        metadata: [("k".to_string(), "v".to_string())].into_iter().collect(),
        route: String::new(),
    };
    vec![
        ("tracee_detection.pb".into(), detection().encode_to_vec()),
        (
            "tracee_stream_response.pb".into(),
            pb::StreamEventsResponse {
                event: Some(detection()),
            }
            .encode_to_vec(),
        ),
        ("tracee_derived_30.pb".into(), derived(30).encode_to_vec()),
        (
            "hooker_publish.pb".into(),
            hooker_pb::PublishRequest {
                event: Some(publish(br#"{"a":1,"eventName":"x"}"#)),
            }
            .encode_to_vec(),
        ),
        (
            "hooker_batch.pb".into(),
            hooker_pb::PublishBatch {
                seq: 7,
                events: vec![publish(br#"{"a":[1,2]}"#), publish(b"{bad")],
            }
            .encode_to_vec(),
        ),
    ]
}

#[test]
fn the_corpus_is_the_seeds_and_converts() {
    let dir = prop_support::corpus_dir("grpc");
    if std::env::var_os("HOOKER_WRITE_CORPUS").is_some() {
        std::fs::create_dir_all(&dir).expect("corpus directory");
        for (name, bytes) in seeds() {
            std::fs::write(dir.join(name), bytes).expect("corpus file");
        }
    }
    for (name, bytes) in prop_support::corpus("grpc") {
        if let Err(error) = check(&bytes) {
            panic!("corpus file {name}: {error}");
        }
    }
    for (name, bytes) in seeds() {
        check(&bytes).unwrap_or_else(|error| panic!("seed {name}: {error}"));
    }
}

#[test]
fn the_deepest_detection_prost_accepts_converts_to_readable_json() {
    // prost refuses messages nested past 100; find the deepest chain it takes, then check it.
    let mut deepest = None;
    for depth in (1..=120).rev() {
        let bytes = derived(depth).encode_to_vec();
        if let Ok(event) = pb::Event::decode(bytes.as_slice()) {
            deepest = Some((depth, event));
            break;
        }
    }
    let (depth, event) = deepest.expect("prost decodes a shallow chain");
    assert!(depth > 10, "{depth}");
    if let Err(error) = check_event(&event) {
        panic!("a chain of {depth}: {error}");
    }
}

proptest! {
    #![proptest_config(prop_support::config(4000))]

    #[test]
    fn any_bytes_decode_and_convert_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check(&bytes)?;
    }

    #[test]
    fn mutated_corpus_messages_decode_and_convert_or_fail_cleanly(
        (_name, bytes) in prop_support::mutated_seed(prop_support::corpus("grpc"), 8),
    ) {
        check(&bytes)?;
    }

    #[test]
    fn any_timestamp_converts(seconds in any::<i64>(), nanos in any::<i32>()) {
        let event = pb::Event {
            timestamp: Some(prost_types::Timestamp { seconds, nanos }),
            workload: Some(pb::Workload {
                process: Some(pb::Process {
                    thread: Some(pb::Thread {
                        start_time: Some(prost_types::Timestamp { seconds: seconds.wrapping_neg(), nanos }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        check_event(&event)?;
    }

    #[test]
    fn any_number_in_a_struct_converts(number in any::<f64>()) {
        use prost_types::value::Kind as K;
        let meta = prost_types::Struct {
            fields: [("n".to_string(), prost_types::Value { kind: Some(K::NumberValue(number)) })]
                .into_iter()
                .collect(),
        };
        let event = pb::Event {
            data: vec![value("meta", Kind::Struct(meta))],
            ..Default::default()
        };
        check_event(&event)?;
    }
}
