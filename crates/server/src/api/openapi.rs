//! The REST API's OpenAPI 3.1 document, generated from the handlers and types (served
//! at `/openapi.json`), and the interactive Swagger UI at `/docs`, whose assets are in
//! the binary: the page loads nothing from outside the server.

use utoipa::{
    openapi::{
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
        RefOr, Schema,
    },
    Modify, OpenApi,
};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::{error::ErrorReply, messaging, moderation, rooms};

/// See the module docs.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Bavard REST API",
        description = "Rooms, history, server-side publish and presence over HTTP. Errors are \
            `{\"error\": {\"code\", \"message\"}}` with the WebSocket protocol's error codes. Writes need \
            `Authorization: Bearer KEY` (the server's --api-key: a server admin), a user's JWT as \
            `Authorization: Bearer TOKEN` (that user's rights), or, on a server without a key, a client on \
            the same machine. Reads of private rooms need the same. The WebSocket protocol is described at \
            /asyncapi.json."
    ),
    paths(
        rooms::list,
        rooms::create,
        rooms::show,
        rooms::update,
        rooms::messages,
        rooms::publish,
        rooms::members,
        messaging::edit,
        messaging::delete,
        messaging::append,
        messaging::finish,
        messaging::react,
        messaging::unreact,
        messaging::read,
        messaging::search,
        messaging::dm,
        moderation::put_member,
        moderation::delete_member,
        moderation::ban,
        moderation::unban,
        moderation::mute,
        moderation::unmute,
        moderation::kick,
        moderation::audit
    ),
    components(schemas(ErrorReply)),
    modifiers(&ApiKey),
    tags(
        (name = "rooms", description = "Rooms and who is online in them"),
        (name = "messages", description = "History, and publishing as a backend"),
        (name = "moderation", description = "Members and roles, bans, mutes, kicks, and the audit log")
    )
)]
struct ApiDoc;

/// Declares the `api_key` bearer scheme the write endpoints name.
struct ApiKey;

impl Modify for ApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("the server's --api-key (BAVARD_API_KEY), or a user's JWT"))
            .build();
        components.add_security_scheme("api_key", SecurityScheme::Http(bearer));
    }
}

/// `/docs` (Swagger UI) and `/openapi.json`, describing a server whose messages have
/// at most `max_text_chars` characters.
pub fn router<S: Clone + Send + Sync + 'static>(max_text_chars: usize) -> axum::Router<S> {
    // The online validator badge would call validator.swagger.io: off.
    let config = Config::from("/openapi.json").validator_url("none");
    axum::Router::from(SwaggerUi::new("/docs").url("/openapi.json", document(max_text_chars)).config(config))
}

/// The document, with this server's limit on a message's text as `maxLength`.
fn document(max_text_chars: usize) -> utoipa::openapi::OpenApi {
    let mut document = ApiDoc::openapi();
    let text = document.components.as_mut().and_then(|components| components.schemas.get_mut("NewMessage")).and_then(
        |message| match message {
            RefOr::T(Schema::Object(message)) => message.properties.get_mut("text"),
            _ => None,
        },
    );
    if let Some(RefOr::T(Schema::Object(text))) = text {
        text.max_length = Some(max_text_chars);
    }
    document
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_lists_every_route() {
        let document = ApiDoc::openapi();
        let json = serde_json::to_value(&document).unwrap();
        assert!(json["openapi"].as_str().unwrap().starts_with("3.1"), "{}", json["openapi"]);
        let paths = json["paths"].as_object().unwrap();
        for path in ["/api/rooms", "/api/rooms/{room}", "/api/rooms/{room}/messages", "/api/rooms/{room}/members"] {
            assert!(paths.contains_key(path), "{path} missing");
        }
    }

    #[test]
    fn the_served_document_gives_the_servers_text_limit() {
        let json = serde_json::to_value(document(1234)).unwrap();
        let text = &json["components"]["schemas"]["NewMessage"]["properties"]["text"];
        assert_eq!(text["maxLength"], 1234, "{text}");
        assert_eq!(text["minLength"], 1, "{text}");
    }
}
