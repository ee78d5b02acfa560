//! The AsyncAPI document (`asyncapi.json`, served at `/asyncapi.json`) must agree with
//! the Rust types: every example of the `/ws` channel is parsed by them and, for server
//! frames, re-encoded to the very same JSON; every example also matches its message's
//! payload schema; every op and server frame type has at least one example; and the
//! page limits the document states are the Rust constants.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use bavard_protocol::{
    close_code, plain, ChangeReply, ClientFrame, CreateReply, DmReply, Empty, ErrorCode, HistoryReply, JoinReply,
    MembersReply, ModerationReply, ReadReply, RefreshReply, Request, SearchReply, SendReply, ServerFrame,
    ASYNCAPI_JSON, JOIN_REPLY_MEMBERS, MAX_EMOJI_CHARS, MAX_HISTORY_LIMIT, MAX_MEMBERS_LIMIT, MAX_QUERY_CHARS,
    MAX_REACTIONS_PER_MESSAGE, MAX_SEARCH_LIMIT, MAX_SEARCH_RESULTS, MAX_UNREAD,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};

fn document() -> Value {
    serde_json::from_str(ASYNCAPI_JSON).expect("asyncapi.json is not valid JSON")
}

/// Resolves a local `$ref` (`#/a/b`) against the document.
fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("only local refs are used: {reference}"));
    doc.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {reference}"))
}

/// Follows `$ref`s until an inline object is reached.
fn deref<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    for _ in 0..16 {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => value = resolve(doc, reference),
            None => return value,
        }
    }
    panic!("$ref cycle at {value}");
}

/// Every string `$ref` anywhere in `value`.
fn all_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, item) in object {
                match (key.as_str(), item) {
                    ("$ref", Value::String(reference)) => out.push(reference.clone()),
                    _ => all_refs(item, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| all_refs(item, out)),
        _ => {}
    }
}

/// The variant names serde knows for an enum, read from its "unknown variant" error.
fn serde_variants<T: DeserializeOwned + std::fmt::Debug>(probe: Value) -> BTreeSet<String> {
    let error = serde_json::from_value::<T>(probe).expect_err("the probe must not parse").to_string();
    let list = error.split_once("expected one of ").unwrap_or_else(|| panic!("unexpected serde error: {error}")).1;
    list.split(", ").map(|name| name.trim_matches(|c| c == '`' || c == ' ').to_owned()).collect()
}

/// A small JSON Schema checker for the keywords this document uses. It is strict about
/// objects: a property of the example that the schema does not declare is an error, so
/// the schemas cannot forget a field the Rust types write. `pattern` and `format` are
/// not checked here; the Rust round trip checks room names and timestamps instead.
fn check_schema(doc: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let schema = deref(doc, schema);
    let Some(schema) = schema.as_object() else {
        errors.push(format!("{path}: schema is not an object"));
        return;
    };
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let matches = |name: &str| match name {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            "null" => value.is_null(),
            _ => false,
        };
        if !types.iter().any(|name| matches(name)) {
            errors.push(format!("{path}: {value} is not of type {types:?}"));
            return;
        }
    }
    if let Some(expected) = schema.get("const") {
        if expected != value {
            errors.push(format!("{path}: {value} is not the const {expected}"));
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(value) {
            errors.push(format!("{path}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(number) = value.as_f64() {
        if schema.get("minimum").and_then(Value::as_f64).is_some_and(|min| number < min) {
            errors.push(format!("{path}: {value} is below the minimum"));
        }
        if schema.get("maximum").and_then(Value::as_f64).is_some_and(|max| number > max) {
            errors.push(format!("{path}: {value} is above the maximum"));
        }
    }
    if let Some(text) = value.as_str() {
        let chars = text.chars().count() as u64;
        if schema.get("minLength").and_then(Value::as_u64).is_some_and(|min| chars < min) {
            errors.push(format!("{path}: {value} is shorter than minLength"));
        }
        if schema.get("maxLength").and_then(Value::as_u64).is_some_and(|max| chars > max) {
            errors.push(format!("{path}: {value} is longer than maxLength"));
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let name = required.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                errors.push(format!("{path}: required property {name:?} is missing"));
            }
        }
        for (name, item) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(property) => check_schema(doc, property, item, &format!("{path}.{name}"), errors),
                None => errors.push(format!("{path}: property {name:?} is not declared in the schema")),
            }
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                check_schema(doc, item_schema, item, &format!("{path}[{i}]"), errors);
            }
        }
        if schema.get("minItems").and_then(Value::as_u64).is_some_and(|min| (items.len() as u64) < min) {
            errors.push(format!("{path}: fewer items than minItems"));
        }
        if schema.get("maxItems").and_then(Value::as_u64).is_some_and(|max| (items.len() as u64) > max) {
            errors.push(format!("{path}: more items than maxItems"));
        }
    }
    if let Some(Value::Array(choices)) = schema.get("oneOf") {
        let passing = choices
            .iter()
            .filter(|choice| {
                let mut sub = Vec::new();
                check_schema(doc, choice, value, path, &mut sub);
                sub.is_empty()
            })
            .count();
        if passing != 1 {
            errors.push(format!("{path}: {value} matches {passing} of the oneOf schemas, not exactly 1"));
        }
    }
}

/// Which side of the connection sends a message on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// One message of a channel, as reached from the channel.
struct ChannelMessage<'a> {
    key: String,
    message: &'a Value,
    side: Option<Side>,
    /// For replies: the ops whose operation lists this message as a possible reply.
    reply_to_ops: BTreeSet<String>,
}

/// The channel with `address`, and its messages classified by the operations using them.
fn channel_messages<'a>(doc: &'a Value, address: &str) -> (String, Vec<ChannelMessage<'a>>) {
    let channels = doc["channels"].as_object().expect("channels");
    let (channel_key, channel) = channels
        .iter()
        .find(|(_, channel)| channel["address"] == address)
        .unwrap_or_else(|| panic!("no channel with address {address}"));
    let channel_ref = format!("#/channels/{channel_key}");
    let mut found: Vec<ChannelMessage<'a>> = channel["messages"]
        .as_object()
        .expect("channel messages")
        .iter()
        .map(|(key, message)| ChannelMessage {
            key: key.clone(),
            message: deref(doc, message),
            side: None,
            reply_to_ops: BTreeSet::new(),
        })
        .collect();
    let key_of = |reference: &Value| -> String {
        let reference = reference["$ref"].as_str().expect("operation messages are $refs");
        let prefix = format!("{channel_ref}/messages/");
        reference
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{reference} is not a message of {channel_ref}"))
            .to_owned()
    };
    for (name, operation) in doc["operations"].as_object().expect("operations") {
        if operation["channel"]["$ref"] != channel_ref.as_str() {
            continue;
        }
        let side = match operation["action"].as_str() {
            Some("receive") => Side::Client,
            Some("send") => Side::Server,
            other => panic!("operation {name}: action {other:?}"),
        };
        let mut request_ops = BTreeSet::new();
        for reference in operation["messages"].as_array().expect("operation messages") {
            let key = key_of(reference);
            let entry = found.iter_mut().find(|m| m.key == key).expect("listed message");
            assert!(entry.side.is_none() || entry.side == Some(side), "{key} is sent by both sides");
            entry.side = Some(side);
            for example in entry.message["examples"].as_array().into_iter().flatten() {
                if let Some(op) = example["payload"]["op"].as_str() {
                    request_ops.insert(op.to_owned());
                }
            }
        }
        if let Some(reply) = operation.get("reply") {
            assert_eq!(side, Side::Client, "operation {name}: only client requests have replies");
            assert_eq!(reply["channel"]["$ref"], channel_ref.as_str(), "operation {name}: reply channel");
            for reference in reply["messages"].as_array().expect("reply messages") {
                let key = key_of(reference);
                let entry = found.iter_mut().find(|m| m.key == key).expect("listed reply");
                assert!(entry.side.is_none() || entry.side == Some(Side::Server), "{key} is sent by both sides");
                entry.side = Some(Side::Server);
                entry.reply_to_ops.extend(request_ops.iter().cloned());
            }
        }
    }
    for entry in &found {
        assert!(entry.side.is_some(), "message {} of {address} is used by no operation", entry.key);
    }
    (channel_ref, found)
}

/// The example payloads of a message; each message needs at least one.
fn examples<'a>(key: &str, message: &'a Value) -> Vec<(String, &'a Value)> {
    let list = message["examples"].as_array().unwrap_or_else(|| panic!("message {key} has no examples"));
    assert!(!list.is_empty(), "message {key} has no examples");
    list.iter()
        .enumerate()
        .map(|(i, example)| {
            let name = example["name"].as_str().map_or_else(|| i.to_string(), str::to_owned);
            let payload = example.get("payload").unwrap_or_else(|| panic!("example {key}/{name} has no payload"));
            (format!("{key}/{name}"), payload)
        })
        .collect()
}

fn check_payload_schema(doc: &Value, key: &str, message: &Value, name: &str, payload: &Value) {
    let schema = message.get("payload").unwrap_or_else(|| panic!("message {key} has no payload schema"));
    let mut errors = Vec::new();
    check_schema(doc, schema, payload, "payload", &mut errors);
    assert!(errors.is_empty(), "example {name} does not match its schema:\n{}", errors.join("\n"));
}

/// The result fields of an `ok` reply read as `T` and written back give the same fields.
fn check_result<T: DeserializeOwned + Serialize>(name: &str, result: &Map<String, Value>) {
    let typed: T = serde_json::from_value(Value::Object(result.clone()))
        .unwrap_or_else(|e| panic!("example {name}: result fields do not parse: {e}"));
    let written = serde_json::to_value(&typed).expect("serialize");
    assert_eq!(written, Value::Object(result.clone()), "example {name}: result fields do not round-trip");
}

#[test]
fn is_asyncapi_3_with_resolvable_refs() {
    let doc = document();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let mut refs = Vec::new();
    all_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for reference in refs {
        resolve(&doc, &reference);
    }
}

#[test]
fn every_message_has_examples_matching_its_schema() {
    let doc = document();
    let mut seen = 0;
    let components = doc["components"]["messages"].as_object().expect("components.messages");
    for (key, message) in components {
        for (name, payload) in examples(key, message) {
            check_payload_schema(&doc, key, message, &name, payload);
            seen += 1;
        }
    }
    // Messages written inline in channels, not as references to components.
    for (channel_key, channel) in doc["channels"].as_object().expect("channels") {
        for (key, message) in channel["messages"].as_object().into_iter().flatten() {
            if message.get("$ref").is_none() {
                let key = format!("{channel_key}.{key}");
                for (name, payload) in examples(&key, message) {
                    check_payload_schema(&doc, &key, message, &name, payload);
                    seen += 1;
                }
            }
        }
    }
    assert!(seen > 0);
}

#[test]
fn json_channel_examples_round_trip_through_the_rust_types() {
    let doc = document();
    let (_, messages) = channel_messages(&doc, "/ws");
    let mut ops_seen = BTreeSet::new();
    let mut types_seen = BTreeSet::new();
    let (mut ok_replies, mut failed_replies) = (0, 0);
    for entry in &messages {
        for (name, payload) in examples(&entry.key, entry.message) {
            match entry.side {
                Some(Side::Client) => {
                    let frame = ClientFrame::parse(&payload.to_string())
                        .unwrap_or_else(|e| panic!("example {name} does not parse: {}", e.error));
                    assert_eq!(frame.request.op(), payload["op"], "example {name}");
                    ops_seen.insert(frame.request.op().to_owned());
                }
                Some(Side::Server) => {
                    let frame: ServerFrame = serde_json::from_value(payload.clone())
                        .unwrap_or_else(|e| panic!("example {name} is not a ServerFrame: {e}"));
                    let written: Value = serde_json::from_str(&frame.to_json()).expect("to_json writes JSON");
                    assert_eq!(&written, payload, "example {name} does not round-trip through ServerFrame");
                    assert_eq!(frame.type_name(), payload["type"], "example {name}");
                    types_seen.insert(frame.type_name().to_owned());
                    if let ServerFrame::Reply(reply) = &frame {
                        assert!(!entry.reply_to_ops.is_empty(), "reply example {name} is not a reply of any op");
                        if reply.ok {
                            ok_replies += 1;
                            assert!(reply.error.is_none(), "example {name}: ok reply with an error");
                            for op in &entry.reply_to_ops {
                                match op.as_str() {
                                    "join" => check_result::<JoinReply>(&name, &reply.result),
                                    "send" => check_result::<SendReply>(&name, &reply.result),
                                    "history" => check_result::<HistoryReply>(&name, &reply.result),
                                    "members" => check_result::<MembersReply>(&name, &reply.result),
                                    "create" => check_result::<CreateReply>(&name, &reply.result),
                                    "kick" | "ban" | "mute" => check_result::<ModerationReply>(&name, &reply.result),
                                    "refresh" => check_result::<RefreshReply>(&name, &reply.result),
                                    "dm" => check_result::<DmReply>(&name, &reply.result),
                                    "edit" | "delete" | "react" | "unreact" | "append" | "finish" => {
                                        check_result::<ChangeReply>(&name, &reply.result)
                                    }
                                    "read" => check_result::<ReadReply>(&name, &reply.result),
                                    "search" => check_result::<SearchReply>(&name, &reply.result),
                                    "leave" | "typing" | "ping" | "add_member" | "remove_member" | "set_role"
                                    | "unban" | "unmute" => {
                                        assert!(reply.result.is_empty(), "example {name}: {op} has no result");
                                        assert_eq!(
                                            serde_json::to_value(Empty {}).expect("empty"),
                                            Value::Object(Map::new())
                                        );
                                    }
                                    other => panic!("no result type known for op {other}"),
                                }
                            }
                        } else {
                            failed_replies += 1;
                            assert!(reply.error.is_some(), "example {name}: failed reply without error");
                            assert!(reply.result.is_empty(), "example {name}: failed reply with result fields");
                        }
                    } else {
                        assert!(entry.reply_to_ops.is_empty(), "example {name} is listed as a reply");
                    }
                }
                None => unreachable!("classified by channel_messages"),
            }
        }
    }

    let ops: BTreeSet<String> = Request::OPS.iter().map(|op| (*op).to_owned()).collect();
    let serde_ops = serde_variants::<Request>(serde_json::json!({"op": "no-such-op"}));
    assert_eq!(ops, serde_ops, "Request::OPS and the Request enum disagree");
    assert_eq!(ops_seen, ops, "every op (and only those) must have an example");
    let frame_types: BTreeSet<String> = ServerFrame::TYPES.iter().map(|t| (*t).to_owned()).collect();
    let future_frame: ServerFrame =
        serde_json::from_value(serde_json::json!({"type": "no-such-type", "x": 1})).unwrap();
    assert_eq!(future_frame, ServerFrame::Unknown, "frames from a newer server are skippable");
    assert_eq!(types_seen, frame_types, "every ServerFrame type (and only those) must have an example");
    assert!(ok_replies > 0 && failed_replies > 0, "replies need both ok and error examples");
}

#[test]
fn every_reply_result_type_is_exemplified() {
    let doc = document();
    let (_, messages) = channel_messages(&doc, "/ws");
    for op in Request::OPS {
        let ok_example = messages
            .iter()
            .filter(|m| m.reply_to_ops.contains(op))
            .any(|m| examples(&m.key, m.message).iter().any(|(_, payload)| payload["ok"] == true));
        assert!(ok_example, "op {op} has no example of an ok reply");
        let error_example = messages
            .iter()
            .filter(|m| m.reply_to_ops.contains(op))
            .any(|m| examples(&m.key, m.message).iter().any(|(_, payload)| payload["ok"] == false));
        assert!(error_example, "op {op} has no example of a failed reply");
    }
}

#[test]
fn error_codes_match_the_rust_enum() {
    let doc = document();
    let documented: BTreeSet<String> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode enum")
        .iter()
        .map(|code| code.as_str().expect("code").to_owned())
        .collect();
    let rust: BTreeSet<String> = ErrorCode::ALL.iter().map(|code| code.as_str().to_owned()).collect();
    assert_eq!(documented, rust);
    let future_code: ErrorCode = serde_json::from_value(Value::String("no_such_code".into())).unwrap();
    assert_eq!(future_code, ErrorCode::Unknown, "codes from a newer server are readable");
    for code in &rust {
        let parsed: ErrorCode = serde_json::from_value(Value::String(code.clone())).expect("code");
        assert_eq!(parsed.as_str(), code);
    }
}

#[test]
fn plain_text_channels_use_the_exact_texts() {
    let doc = document();
    for address in ["/ws/chat", "/ws/chat/{room}"] {
        let (_, messages) = channel_messages(&doc, address);
        assert!(messages.iter().any(|m| m.side == Some(Side::Client)), "{address}: no client message");
        let mut received = false;
        let mut disconnected = false;
        for entry in &messages {
            assert_eq!(entry.message["payload"]["type"], "string", "{address}: {} payload", entry.key);
            for (name, payload) in examples(&entry.key, entry.message) {
                let text = payload.as_str().unwrap_or_else(|| panic!("example {name} is not a string"));
                match entry.side {
                    Some(Side::Client) => assert!(!text.is_empty(), "example {name} is empty"),
                    _ if text == plain::DISCONNECTED => disconnected = true,
                    _ => {
                        let rest = text.strip_prefix(plain::RECEIVED_PREFIX);
                        assert!(rest.is_some_and(|t| !t.is_empty()), "example {name}: {text:?} is no server text");
                        received = true;
                    }
                }
            }
        }
        assert!(received && disconnected, "{address}: both server texts need examples");
    }
    let schemas = &doc["components"]["messages"];
    assert_eq!(schemas["plainDisconnected"]["payload"]["const"], plain::DISCONNECTED);
    let pattern = format!("^{}", plain::RECEIVED_PREFIX);
    assert_eq!(schemas["plainReceived"]["payload"]["pattern"], pattern.as_str());
}

#[test]
fn close_codes_match_the_rust_constants() {
    let doc = document();
    let documented: BTreeMap<u64, String> = doc["info"]["x-close-codes"]
        .as_array()
        .expect("x-close-codes")
        .iter()
        .map(|entry| (entry["code"].as_u64().expect("code"), entry["when"].as_str().expect("when").to_owned()))
        .collect();
    let rust = [
        close_code::NORMAL,
        close_code::GOING_AWAY,
        close_code::PROTOCOL_ERROR,
        close_code::UNSUPPORTED_DATA,
        close_code::INVALID_DATA,
        close_code::POLICY,
        close_code::TOO_BIG,
        close_code::INTERNAL,
        close_code::SLOW_CONSUMER,
        close_code::RATE_LIMITED,
    ];
    let rust: BTreeSet<u64> = rust.iter().map(|code| u64::from(*code)).collect();
    assert_eq!(documented.keys().copied().collect::<BTreeSet<_>>(), rust);
    let description = doc["info"]["description"].as_str().expect("info.description");
    for code in rust {
        assert!(description.contains(&format!("| {code} |")), "close code {code} missing from info.description");
    }
}

#[test]
fn page_limits_match_the_rust_constants() {
    let doc = document();
    let messages = &doc["components"]["messages"];
    let history_limit = &doc["components"]["schemas"]["PageLimit"];
    assert_eq!(history_limit["maximum"], MAX_HISTORY_LIMIT);
    let members_limit = &messages["members"]["payload"]["properties"]["limit"];
    assert_eq!(
        (&members_limit["minimum"], &members_limit["maximum"]),
        (&Value::from(1), &Value::from(MAX_MEMBERS_LIMIT))
    );
    let join_members = &messages["joinReply"]["payload"]["properties"]["members"];
    assert_eq!(join_members["maxItems"], JOIN_REPLY_MEMBERS);
    let page_members = &messages["membersReply"]["payload"]["properties"]["members"];
    assert_eq!(page_members["maxItems"], MAX_MEMBERS_LIMIT);
    // A join reply that carries a cursor lists exactly the first JOIN_REPLY_MEMBERS users.
    let with_cursor: Vec<&Value> = messages["joinReply"]["examples"]
        .as_array()
        .expect("joinReply examples")
        .iter()
        .map(|example| &example["payload"])
        .filter(|payload| payload.get("members_cursor").is_some())
        .collect();
    assert!(!with_cursor.is_empty(), "no join reply example shows members_cursor");
    for payload in with_cursor {
        let listed = payload["members"].as_array().expect("members").len();
        assert_eq!(listed, JOIN_REPLY_MEMBERS, "a join reply with a cursor lists the first {JOIN_REPLY_MEMBERS}");
        assert!(payload["member_count"].as_u64().expect("member_count") > listed as u64);
    }
}

#[test]
fn chat_limits_match_the_rust_constants() {
    let doc = document();
    let messages = &doc["components"]["messages"];
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Emoji"]["maxLength"], MAX_EMOJI_CHARS);
    assert_eq!(schemas["Reaction"]["properties"]["emoji"]["maxLength"], MAX_EMOJI_CHARS);
    assert_eq!(schemas["Message"]["properties"]["reactions"]["maxItems"], MAX_REACTIONS_PER_MESSAGE);
    let search = &messages["search"]["payload"]["properties"];
    assert_eq!(search["q"]["maxLength"], MAX_QUERY_CHARS);
    assert_eq!(search["limit"]["maximum"], MAX_SEARCH_LIMIT);
    assert_eq!(search["offset"]["maximum"], MAX_SEARCH_RESULTS - 1);
    assert_eq!(messages["searchReply"]["payload"]["properties"]["messages"]["maxItems"], MAX_SEARCH_LIMIT);
    assert_eq!(messages["readReply"]["payload"]["properties"]["unread"]["maximum"], MAX_UNREAD);
    assert_eq!(messages["joinReply"]["payload"]["properties"]["unread"]["maximum"], MAX_UNREAD);
}

#[test]
fn the_checker_rejects_wrong_examples() {
    // Guards the guards: a broken example must fail each layer of the checks above.
    let doc = document();
    let message = &doc["components"]["messages"]["message"];
    let good = &message["examples"][0]["payload"];
    let mut errors = Vec::new();
    check_schema(&doc, &message["payload"], good, "payload", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");

    let mut undeclared = good.clone();
    undeclared["colour"] = Value::String("red".into());
    check_schema(&doc, &message["payload"], &undeclared, "payload", &mut errors);
    assert!(!errors.is_empty(), "an undeclared field must be reported");

    let mut null_key = good.clone();
    null_key["key"] = Value::Null;
    let frame: ServerFrame = serde_json::from_value(null_key.clone()).expect("null key parses");
    let written: Value = serde_json::from_str(&frame.to_json()).expect("json");
    assert_ne!(written, null_key, "an explicit null must not round-trip: it is omitted");

    let mut bad_ts = good.clone();
    bad_ts["ts"] = Value::String("2026-11-24T14:03:05Z".into());
    let frame: ServerFrame = serde_json::from_value(bad_ts.clone()).expect("accepted on input");
    let written: Value = serde_json::from_str(&frame.to_json()).expect("json");
    assert_ne!(written, bad_ts, "a timestamp without milliseconds must not round-trip");

    let join_reply = &doc["components"]["messages"]["joinReply"];
    let mut too_many = join_reply["examples"][0]["payload"].clone();
    too_many["members"] = Value::Array(vec![too_many["members"][0].clone(); JOIN_REPLY_MEMBERS + 1]);
    let mut errors = Vec::new();
    check_schema(&doc, &join_reply["payload"], &too_many, "payload", &mut errors);
    assert!(
        errors.iter().any(|e| e.contains("maxItems")),
        "a join reply over 100 members must be reported: {errors:?}"
    );

    assert!(ClientFrame::parse(r#"{"op":"send","room":"general"}"#).is_err());
}
