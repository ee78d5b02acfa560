//! The JSON ops beyond joining, sending and reading: those that manage rooms and
//! identity (`create`, `add_member`, `remove_member`, `set_role`, `kick`, `ban`,
//! `unban`, `mute`, `unmute`, each checked and applied by the hub's moderation, and
//! `refresh`, a fresh token that pushes the connection's expiry back), and the chat
//! features (`dm`, `edit`, `delete`, `react`, `unreact`, `read`, `search`, `append`,
//! `finish`, served by the hub's messaging).

use bavard_protocol::{
    CreateReply, CreateRequest, DmReply, DmRequest, Empty, ErrorBody, ErrorCode, MessageRef, ModerationReply,
    ModerationRequest, ReactRequest, ReadRequest, RefreshReply, Request, RequestId, Role, RoleRequest, RoomName,
    SearchRequest, TextChange, Timestamp, UserInRoom, DEFAULT_SEARCH_LIMIT,
};

use super::{expiry_instant, json::hub_error, End, Session, Socket};
use crate::{
    auth::{unix_now, Actor},
    hub::{Change, Hub, HubError, Sanctioning},
};

impl<S> Session<S>
where
    S: Socket,
{
    fn actor(&self) -> Actor {
        Actor { user: self.me.user.clone(), standing: self.me.standing }
    }

    /// Serves one of the managing ops (see the module docs).
    pub(super) async fn manage(&mut self, id: Option<RequestId>, request: Request) -> Result<(), End> {
        let actor = self.actor();
        let hub = &self.hub;
        let done: Result<Option<serde_json::Value>, HubError> = match request {
            Request::Create(CreateRequest { room, kind, topic }) => {
                let created = hub.create_room(&actor, &room, kind, topic.unwrap_or_default()).await;
                created.map(|listing| Some(fields(&CreateReply { room, kind: listing.kind, topic: listing.topic })))
            }
            Request::AddMember(RoleRequest { room, user, role }) => {
                let role = role.unwrap_or(Role::Member);
                hub.set_role(&actor, &room, &user, Some(role), "add_member").await.map(|()| None)
            }
            Request::SetRole(RoleRequest { room, user, role }) => {
                hub.set_role(&actor, &room, &user, role, "set_role").await.map(|()| None)
            }
            Request::RemoveMember(UserInRoom { room, user }) => {
                hub.set_role(&actor, &room, &user, None, "remove_member").await.map(|()| None)
            }
            Request::Kick(action) => sanction(hub, &actor, Sanctioning::Kick, action).await,
            Request::Ban(action) => sanction(hub, &actor, Sanctioning::Ban, action).await,
            Request::Mute(action) => sanction(hub, &actor, Sanctioning::Mute, action).await,
            Request::Unban(ModerationRequest { room, user, reason, .. }) => {
                hub.lift(&actor, &room, &user, Sanctioning::Ban, reason).await.map(|()| None)
            }
            Request::Unmute(ModerationRequest { room, user, reason, .. }) => {
                hub.lift(&actor, &room, &user, Sanctioning::Mute, reason).await.map(|()| None)
            }
            Request::Refresh { token } => return self.refresh(id, &token).await,
            Request::Dm(DmRequest { user }) => {
                hub.direct_room(&actor, &user).await.map(|room| Some(fields(&DmReply { room })))
            }
            Request::Edit(TextChange { room, seq, text }) => change(hub, &actor, room, seq, Change::Edit(text)).await,
            Request::Delete(MessageRef { room, seq }) => change(hub, &actor, room, seq, Change::Delete).await,
            Request::Append(TextChange { room, seq, text }) => {
                change(hub, &actor, room, seq, Change::Append(text)).await
            }
            Request::Finish(MessageRef { room, seq }) => change(hub, &actor, room, seq, Change::Finish).await,
            Request::React(ReactRequest { room, seq, emoji }) => {
                change(hub, &actor, room, seq, Change::React(emoji, true)).await
            }
            Request::Unreact(ReactRequest { room, seq, emoji }) => {
                change(hub, &actor, room, seq, Change::React(emoji, false)).await
            }
            Request::Read(ReadRequest { room, seq }) => {
                hub.mark_read(actor.who(), &actor.user, &room, seq).await.map(|read| Some(fields(&read)))
            }
            Request::Search(SearchRequest { room, q, limit, offset }) => {
                let limit = limit.unwrap_or(DEFAULT_SEARCH_LIMIT);
                hub.search(actor.who(), &room, &q, limit, offset.unwrap_or(0)).await.map(|found| Some(fields(&found)))
            }
            // The message ops are served by `json_text`.
            _ => Ok(None),
        };
        match (done, id) {
            (Ok(Some(fields)), id) => self.reply(id, &fields).await,
            (Ok(None), id) => self.reply(id, &Empty {}).await,
            (Err(e), id) => self.feed_error(id.as_ref(), &hub_error(e)).await,
        }
    }

    /// `refresh`: a valid token for the same user pushes the connection's expiry back.
    async fn refresh(&mut self, id: Option<RequestId>, token: &str) -> Result<(), End> {
        let refused = |message: String| ErrorBody::new(ErrorCode::Unauthorized, message);
        let (Some(jwt), Some(_)) = (&self.settings.jwt, &self.expiry) else {
            let message = "this connection has no token to refresh (it was opened without one)";
            return self.feed_error(id.as_ref(), &ErrorBody::new(ErrorCode::BadRequest, message)).await;
        };
        let error = match jwt.verify(token, unix_now()) {
            Ok(claims) if claims.sub == self.me.user.id => {
                self.expiry = Some(Box::pin(tokio::time::sleep_until(expiry_instant(claims.exp))));
                let expires = Timestamp((claims.exp.min(i64::MAX as u64 / 1000) * 1000) as i64);
                return self.reply(id, &RefreshReply { expires }).await;
            }
            Ok(claims) => {
                refused(format!("the token is for {}, not {}: open a new connection", claims.sub, self.me.user.id))
            }
            Err(e) => {
                self.settings.metrics.auth_failed(e.reason());
                refused(e.to_string())
            }
        };
        self.feed_error(id.as_ref(), &error).await
    }
}

async fn change(
    hub: &Hub,
    actor: &Actor,
    room: RoomName,
    seq: u64,
    what: Change,
) -> Result<Option<serde_json::Value>, HubError> {
    let changed = hub.change_message(actor, &room, seq, what).await?;
    Ok(Some(fields(&changed)))
}

async fn sanction(
    hub: &Hub,
    actor: &Actor,
    what: Sanctioning,
    action: ModerationRequest,
) -> Result<Option<serde_json::Value>, HubError> {
    let ModerationRequest { room, user, duration_secs, reason } = action;
    let until = hub.sanction(actor, &room, &user, what, duration_secs, reason).await?;
    Ok(Some(fields(&ModerationReply { until })))
}

/// A result's fields, for a reply.
fn fields<T: serde::Serialize>(result: &T) -> serde_json::Value {
    serde_json::to_value(result).unwrap_or_default()
}
