//! OpenAPI schemas (feature `openapi`) for the types whose JSON form is not their Rust
//! shape: a room name is a constrained string, a timestamp an RFC 3339 string.

use std::borrow::Cow;

use utoipa::{
    openapi::{schema::SchemaFormat, KnownFormat, ObjectBuilder, RefOr, Schema, Type},
    PartialSchema, ToSchema,
};

use crate::{room::MAX_ROOM_NAME_CHARS, RoomName, Timestamp};

impl PartialSchema for RoomName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_ROOM_NAME_CHARS))
            .pattern(Some("^[A-Za-z0-9._-]+$"))
            .description(Some("A room name: 1 to 64 characters from A-Z a-z 0-9 . _ -"))
            .examples(["general"])
            .into()
    }
}

impl ToSchema for RoomName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("RoomName")
    }
}

impl PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some("UTC time with milliseconds, RFC 3339"))
            .examples(["2026-11-24T14:03:05.123Z"])
            .into()
    }
}

impl ToSchema for Timestamp {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Timestamp")
    }
}
