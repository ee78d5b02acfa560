//! Property tests of the wire contract: every request a client can send and every frame
//! the server can send encodes and decodes to itself, and the decoder never panics,
//! whatever text it is given.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bavard_protocol::{
    ClientFrame, CreateReply, CreateRequest, ErrorBody, ErrorCode, HistoryReply, HistoryRequest, JoinReply,
    JoinRequest, Limits, MembersReply, MembersRequest, Message, MessageRef, ModerationReply, ModerationRequest,
    OccupancyEvent, PresenceEvent, ReactRequest, RefreshReply, RemovedBecause, RemovedEvent, ReplyFrame, Request,
    RequestId, Role, RoleRequest, RoomKind, RoomName, SearchRequest, SendReply, SendRequest, ServerFrame, TextChange,
    Timestamp, TypingEvent, User, UserInRoom, Welcome,
};
use proptest::{collection::vec, option, prelude::*};
use serde_json::{Map, Value};

fn room() -> impl Strategy<Value = RoomName> {
    "[A-Za-z0-9._-]{1,64}".prop_map(|name| RoomName::new(&name).unwrap())
}

/// Any text, control characters and astral planes included.
fn text() -> impl Strategy<Value = String> {
    any::<String>()
}

fn request_id() -> impl Strategy<Value = RequestId> {
    prop_oneof![any::<i64>().prop_map(RequestId::Int), text().prop_map(RequestId::Str)]
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Member), Just(Role::Moderator), Just(Role::Owner)]
}

fn kind() -> impl Strategy<Value = RoomKind> {
    prop_oneof![Just(RoomKind::Public), Just(RoomKind::Private), Just(RoomKind::Broadcast)]
}

fn moderation() -> impl Strategy<Value = ModerationRequest> {
    (room(), text(), option::of(any::<u64>()), option::of(text()))
        .prop_map(|(room, user, duration_secs, reason)| ModerationRequest { room, user, duration_secs, reason })
}

fn role_request() -> impl Strategy<Value = RoleRequest> {
    (room(), text(), option::of(role())).prop_map(|(room, user, role)| RoleRequest { room, user, role })
}

/// Every op of protocol v1, with any values its types allow.
fn request() -> impl Strategy<Value = Request> {
    let (opt_u64, opt_u32) = (|| option::of(any::<u64>()), || option::of(any::<u32>()));
    prop_oneof![
        (room(), opt_u64(), opt_u32(), opt_u64()).prop_map(|(room, since, limit, since_rev)| {
            Request::Join(JoinRequest { room, since, limit, since_rev })
        }),
        room().prop_map(|room| Request::Leave { room }),
        (room(), text(), option::of(text()), opt_u64(), any::<bool>()).prop_map(
            |(room, text, key, reply_to, stream)| { Request::Send(SendRequest { room, text, key, reply_to, stream }) }
        ),
        (room(), opt_u64(), opt_u64(), opt_u32(), opt_u64()).prop_map(|(room, before, after, limit, thread)| {
            Request::History(HistoryRequest { room, before, after, limit, thread })
        }),
        (room(), any::<u64>(), text()).prop_map(|(room, seq, text)| Request::Edit(TextChange { room, seq, text })),
        (room(), any::<u64>()).prop_map(|(room, seq)| Request::Delete(MessageRef { room, seq })),
        (room(), any::<u64>(), text()).prop_map(|(room, seq, emoji)| Request::React(ReactRequest { room, seq, emoji })),
        (room(), text(), opt_u32(), opt_u32()).prop_map(|(room, q, limit, offset)| Request::Search(SearchRequest {
            room,
            q,
            limit,
            offset
        })),
        room().prop_map(|room| Request::Typing { room }),
        Just(Request::Ping),
        (room(), option::of(text()), opt_u32()).prop_map(|(room, cursor, limit)| Request::Members(MembersRequest {
            room,
            cursor,
            limit
        })),
        (room(), kind(), option::of(text())).prop_map(|(room, kind, topic)| Request::Create(CreateRequest {
            room,
            kind,
            topic
        })),
        role_request().prop_map(Request::AddMember),
        (room(), text()).prop_map(|(room, user)| Request::RemoveMember(UserInRoom { room, user })),
        role_request().prop_map(Request::SetRole),
        moderation().prop_map(Request::Kick),
        moderation().prop_map(Request::Ban),
        moderation().prop_map(Request::Unban),
        moderation().prop_map(Request::Mute),
        moderation().prop_map(Request::Unmute),
        text().prop_map(|token| Request::Refresh { token }),
    ]
}

/// Timestamps from year 1 to year 9999 (what RFC 3339 can write).
fn timestamp() -> impl Strategy<Value = Timestamp> {
    (-62_135_596_800_000_i64..=253_402_300_799_999).prop_map(Timestamp)
}

fn user() -> impl Strategy<Value = User> {
    (text(), text()).prop_map(|(id, name)| User { id, name })
}

fn message() -> impl Strategy<Value = Message> {
    (room(), any::<u64>(), timestamp(), user(), text(), option::of(text()), option::of(any::<u64>())).prop_map(
        |(room, seq, ts, from, text, key, reply_to)| Message {
            key,
            reply_to,
            ..Message::new(room, seq, ts, from, text)
        },
    )
}

fn error_body() -> impl Strategy<Value = ErrorBody> {
    let codes: Vec<ErrorCode> = ErrorCode::ALL.into_iter().chain([ErrorCode::Unknown]).collect();
    (proptest::sample::select(codes), text()).prop_map(|(code, message)| ErrorBody::new(code, message))
}

fn join_reply() -> impl Strategy<Value = JoinReply> {
    (room(), any::<u64>(), any::<usize>(), vec(user(), 0..3), option::of(text()), vec(message(), 0..3))
        .prop_flat_map(|fields| (Just(fields), option::of(any::<bool>())))
        .prop_map(|((room, seq, member_count, members, members_cursor, messages), recovered)| JoinReply {
            room,
            seq,
            member_count,
            members,
            members_cursor,
            messages,
            recovered,
            rev: 0,
            changed: Vec::new(),
            unread: None,
        })
}

/// The result fields of each successful reply, as the server writes them.
fn reply_result() -> impl Strategy<Value = Map<String, Value>> {
    fn object<T: serde::Serialize>(result: T) -> Map<String, Value> {
        match serde_json::to_value(result).unwrap() {
            Value::Object(map) => map,
            other => panic!("a reply result is an object: {other}"),
        }
    }
    let send = (room(), any::<u64>(), timestamp(), any::<bool>())
        .prop_map(|(room, seq, ts, duplicate)| object(SendReply { room, seq, ts, duplicate }));
    let history = (vec(message(), 0..3), any::<bool>())
        .prop_map(|(messages, has_more)| object(HistoryReply { messages, has_more }));
    prop_oneof![Just(Map::new()), join_reply().prop_map(object), send, history]
}

fn reply() -> impl Strategy<Value = ReplyFrame> {
    prop_oneof![
        (request_id(), reply_result()).prop_map(|(id, result)| ReplyFrame { id, ok: true, error: None, result }),
        (request_id(), error_body()).prop_map(|(id, error)| ReplyFrame {
            id,
            ok: false,
            error: Some(error),
            result: Map::new()
        }),
    ]
}

/// Every frame type the server sends on `/ws`.
fn server_frame() -> impl Strategy<Value = ServerFrame> {
    let reasons = prop_oneof![
        Just(RemovedBecause::Kick),
        Just(RemovedBecause::Ban),
        Just(RemovedBecause::RemoveMember),
        Just(RemovedBecause::Kind),
        Just(RemovedBecause::Unknown),
    ];
    prop_oneof![
        (any::<u32>(), text(), user(), text(), any::<usize>(), any::<usize>()).prop_map(
            |(protocol, server, user, session, max_frame_bytes, max_text_chars)| {
                ServerFrame::Welcome(Welcome {
                    protocol,
                    server,
                    user,
                    session,
                    limits: Limits { max_frame_bytes, max_text_chars },
                })
            }
        ),
        reply().prop_map(ServerFrame::Reply),
        error_body().prop_map(|error| ServerFrame::Error { error }),
        message().prop_map(ServerFrame::Message),
        (room(), vec(user(), 0..3), vec(user(), 0..3), option::of(any::<usize>())).prop_map(
            |(room, joined, left, member_count)| ServerFrame::Presence(PresenceEvent {
                room,
                joined,
                left,
                member_count
            })
        ),
        (room(), user()).prop_map(|(room, user)| ServerFrame::Typing(TypingEvent { room, user })),
        (room(), any::<usize>())
            .prop_map(|(room, member_count)| ServerFrame::Occupancy(OccupancyEvent { room, member_count })),
        (room(), reasons, option::of(text()), option::of(timestamp())).prop_map(|(room, action, reason, until)| {
            ServerFrame::Removed(RemovedEvent { room, action, reason, until })
        }),
        text().prop_map(|reason| ServerFrame::Closing { reason }),
        Just(ServerFrame::Unknown),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn every_request_encodes_and_decodes_to_itself(id in option::of(request_id()), request in request()) {
        let frame = ClientFrame { id, request };
        let json = frame.to_json();
        prop_assert_eq!(ClientFrame::parse(&json), Ok(frame), "{}", json);
    }

    #[test]
    fn every_server_frame_encodes_and_decodes_to_itself(frame in server_frame()) {
        let json = frame.to_json();
        let decoded: ServerFrame = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(decoded, frame, "{}", json);
    }

    #[test]
    fn typed_replies_read_back_as_written(id in request_id(), reply in join_reply(), members in vec(user(), 0..3)) {
        let text = bavard_protocol::encode_ok_reply(&id, &reply);
        let ServerFrame::Reply(frame) = serde_json::from_str(&text).unwrap() else { panic!("{text}") };
        prop_assert_eq!(&frame.id, &id);
        prop_assert_eq!(frame.result_as::<JoinReply>().unwrap(), reply.clone());
        let listed = MembersReply { room: reply.room.clone(), member_count: members.len(), members, cursor: None };
        let text = bavard_protocol::encode_ok_reply(&id, &listed);
        let ServerFrame::Reply(frame) = serde_json::from_str(&text).unwrap() else { panic!("{text}") };
        prop_assert_eq!(frame.result_as::<MembersReply>().unwrap(), listed);
        let created = CreateReply { room: reply.room, kind: RoomKind::Private, topic: "t".into() };
        let text = bavard_protocol::encode_ok_reply(&id, &created);
        let ServerFrame::Reply(frame) = serde_json::from_str(&text).unwrap() else { panic!("{text}") };
        prop_assert_eq!(frame.result_as::<CreateReply>().unwrap(), created);
    }

    #[test]
    fn moderation_and_refresh_replies_read_back(id in request_id(), until in option::of(timestamp()), expires in timestamp()) {
        let text = bavard_protocol::encode_ok_reply(&id, &ModerationReply { until });
        let ServerFrame::Reply(frame) = serde_json::from_str(&text).unwrap() else { panic!("{text}") };
        prop_assert_eq!(frame.result_as::<ModerationReply>().unwrap(), ModerationReply { until });
        let text = bavard_protocol::encode_ok_reply(&id, &RefreshReply { expires });
        let ServerFrame::Reply(frame) = serde_json::from_str(&text).unwrap() else { panic!("{text}") };
        prop_assert_eq!(frame.result_as::<RefreshReply>().unwrap(), RefreshReply { expires });
    }

    #[test]
    fn errors_are_encoded_with_the_id_or_as_an_event(id in option::of(request_id()), error in error_body()) {
        let text = bavard_protocol::encode_error(id.as_ref(), &error);
        match serde_json::from_str::<ServerFrame>(&text).unwrap() {
            ServerFrame::Reply(reply) => {
                prop_assert_eq!(Some(reply.id), id);
                prop_assert!(!reply.ok);
                prop_assert_eq!(reply.error, Some(error));
            }
            ServerFrame::Error { error: sent } => {
                prop_assert!(id.is_none());
                prop_assert_eq!(sent, error);
            }
            other => panic!("{text} decoded as {other:?}"),
        }
    }

    #[test]
    fn timestamps_are_written_as_rfc3339_and_read_back(ts in timestamp()) {
        let text = ts.to_string();
        prop_assert_eq!(text.len(), 24, "{}", text);
        prop_assert_eq!(Timestamp::parse(&text), Some(ts), "{}", text);
    }

    /// Arbitrary text, and arbitrary JSON objects with a known op: the decoder answers
    /// (a frame or an error that says why), it never panics.
    #[test]
    fn parsing_any_string_never_panics(text in text()) {
        if let Err(error) = ClientFrame::parse(&text) {
            prop_assert!(!error.error.message.is_empty());
        }
        let _ = serde_json::from_str::<ServerFrame>(&text);
    }

    #[test]
    fn parsing_any_object_with_a_known_op_never_panics(
        op in proptest::sample::select(Request::OPS.to_vec()),
        fields in vec(("[a-z_]{1,10}", json_value()), 0..6),
    ) {
        let mut object: Map<String, Value> = fields.into_iter().collect();
        object.insert("op".into(), op.into());
        let text = Value::Object(object).to_string();
        match ClientFrame::parse(&text) {
            Ok(frame) => {
                let _ = frame.request.validate(4000);
                prop_assert_eq!(frame.request.op(), op);
            }
            Err(error) => prop_assert!(!error.error.message.is_empty()),
        }
    }
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::from),
        "[A-Za-z0-9._-]{1,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::from),
            vec(("[a-z_]{1,8}", inner), 0..4).prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}
